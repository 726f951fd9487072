"""Time and peak memory of refusing impossible inputs: a NIfTI whose header claims 1024^3 float32
voxels (4 GiB of zeros, a few MB on disk) and a .nii.gz of a 64^3 header whose stream expands to
300 MB. Each through ``msnewlesions segment`` in a child process; printed: exit status, seconds,
the child's peak resident memory, and its one line.

    python benchmarks/impossible_inputs.py [--work DIR]
"""

from __future__ import annotations

import argparse
import gzip
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np


def write(path: Path, shape: tuple[int, int, int], stream_bytes: int) -> Path:
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    header.set_sform(np.eye(4), code=1)
    header["vox_offset"] = 352
    block = bytes(1 << 24)
    with gzip.open(path, "wb", compresslevel=1) as stream:
        stream.write(header.binaryblock + b"\0" * 4)
        while stream_bytes > 0:
            stream.write(block[: min(stream_bytes, len(block))])
            stream_bytes -= len(block)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp())
    work.mkdir(parents=True, exist_ok=True)
    cases = {
        "header claims 1024^3 voxels": write(work / "huge.nii.gz", (1024, 1024, 1024), 1024**3 * 4),
        "gzip expands past its header": write(work / "bomb.nii.gz", (64, 64, 64), 300 << 20),
    }
    for name, path in cases.items():
        size = path.stat().st_size / 1e6
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "msnewlesions.cli", "segment", "--baseline", str(path),
             "--followup", str(path), "--out", str(work / "out")],
            capture_output=True, text=True,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        line = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
        print(f"{name} ({size:.1f} MB on disk): exit {done.returncode}, {seconds:.1f} s, "
              f"peak memory of the children so far {peak:.0f} MB\n  {line}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
