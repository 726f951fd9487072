"""Memory as a resource: how much a run may use, how much one pair needs, and a clear refusal.

The memory a process may use is the least of the system's available memory (Linux
``MemAvailable``), its control group's limit less what the group already uses (a container, a
SLURM job, a Dask worker started with a limit: cgroup v2 ``memory.max``, v1
``memory.limit_in_bytes``) and its address-space limit (``ulimit -v``). One pair's ``segment``
peaked at 3.5 GB here (float32 passes; 2.6 GB in bfloat16) on scans of a few million voxels;
larger scans add a few copies of themselves (:func:`segment_memory_gb`).
"""

from __future__ import annotations

import os
import resource
from collections.abc import Sequence
from pathlib import Path

from msnewlesions.errors import MSNewLesionsError

#: The peak of one pair's ``segment`` on ordinary scans (GB).
SEGMENT_MEMORY_GB = 3.5
#: Copies of a native scan (float32) held at once while it is registered and resampled.
NATIVE_COPIES = 6


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def cgroup_roots() -> list[Path]:
    """This process's control group folders (v2, then v1's memory controller), then the root."""
    roots = [Path("/sys/fs/cgroup")]
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            parts = line.split(":", 2)
            if len(parts) == 3 and parts[1] in ("", "memory"):
                roots.insert(0, Path("/sys/fs/cgroup") / parts[2].lstrip("/"))
                roots.insert(1, Path("/sys/fs/cgroup/memory") / parts[2].lstrip("/"))
    except OSError:
        pass
    return roots


def cgroup_room_gb(roots: Sequence[Path] | None = None) -> float | None:
    """What this process's control group may still use (GB), or None without a limit."""
    for root in cgroup_roots() if roots is None else roots:
        for limit_name, usage_name in (
            ("memory.max", "memory.current"),
            ("memory.limit_in_bytes", "memory.usage_in_bytes"),
        ):
            limit = _read_int(root / limit_name)
            if limit is None or limit >= 1 << 60:  # "max", or v1's "no limit"
                continue
            usage = _read_int(root / usage_name) or 0
            return max(limit - usage, 0) / 1024**3
    return None


def available_memory_gb() -> float:
    """The memory this process may still use (GB), as the module says."""
    room = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                room.append(int(line.split()[1]) / 1024**2)
    except OSError:
        pass
    if not room:
        try:
            room.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3)
        except (ValueError, OSError, AttributeError):
            room.append(SEGMENT_MEMORY_GB)
    group = cgroup_room_gb()
    if group is not None:
        room.append(group)
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        room.append(soft / 1024**3)
    return min(room)


def segment_memory_gb(*voxel_counts: int) -> float:
    """What one pair's ``segment`` needs (GB), given its scans' voxel counts."""
    native = sum(NATIVE_COPIES * 4 * count for count in voxel_counts) / 1024**3
    return SEGMENT_MEMORY_GB + native


def check_memory(needed_gb: float, what: str) -> None:
    """Refuse, in one sentence, work that needs more memory than this process may use."""
    available = available_memory_gb()
    if needed_gb > available:
        raise MSNewLesionsError(
            f"{what} needs about {needed_gb:.1f} GB of memory and {available:.1f} GB are free "
            "here; free some memory, give this run more (a container's or job's limit), or run "
            "fewer pairs at once (--jobs)."
        )
