"""Atomic writes: a file or a folder appears under its final name complete, or not at all.

One mechanism for every output of the package: :func:`atomic_file` (a temporary file beside the
target, renamed into place when the block ends without error) and :func:`atomic_output_folder`
(the same for a folder, replacing an existing one only once the new one is complete). A run that
fails or is interrupted leaves nothing under the final name, and removes its temporary files.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from msnewlesions.errors import MSNewLesionsError


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffixes); on success it becomes ``path``.

    The temporary file is created empty and private by the system; it is given the ordinary
    permissions of a new file (0o666 less the umask) before it is renamed into place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.partial-", suffix=suffix, dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        temporary.chmod(0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def remove_partial_files(folder: str | Path) -> int:
    """Remove the temporary files :func:`atomic_file` leaves in ``folder`` (and below) when its
    run is killed (kill -9 runs no clean-up): a resumed run must not count or read them, and
    nnU-Net would take a leftover ``.x.nii.gz.partial-abc.nii.gz`` for a case. Returns how many.
    Only for a folder no other run is writing."""
    removed = 0
    for leftover in Path(folder).rglob(".*.partial-*"):
        if leftover.is_file():
            leftover.unlink(missing_ok=True)
            removed += 1
    return removed


def write_text_atomically(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_file`."""
    with atomic_file(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_json_atomically(path: str | Path, data: Any, indent: int = 2) -> None:
    """Write ``data`` as indented JSON (non-JSON values as their string) to ``path``."""
    write_text_atomically(path, json.dumps(data, indent=indent, default=str) + "\n")


def check_writable(destination: Path) -> None:
    """Refuse a destination whose nearest existing folder cannot be written (a read-only file
    system, no permission): before any work, not after it."""
    folder = destination.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise MSNewLesionsError(
            f"cannot write in {folder} (a read-only file system, or no permission); "
            "write the outputs elsewhere."
        )


def check_output_folder(
    destination: str | Path, overwrite: bool, inputs: Sequence[str | Path] = ()
) -> Path:
    """Refuse an output folder that exists (unless ``overwrite``) or that holds one of the inputs.

    Called before any work starts, so that a run that cannot write its result fails at once.
    """
    destination = Path(destination).absolute()
    for source in inputs:
        source = Path(source).absolute()
        if source == destination or destination in source.parents:
            raise MSNewLesionsError(
                f"the output folder {destination} contains the input {source}; choose another one."
            )
    if destination.exists() and not destination.is_dir():
        raise MSNewLesionsError(
            f"{destination} is a file, not a folder; give a folder for the outputs."
        )
    if destination.exists() and not overwrite:
        raise MSNewLesionsError(
            f"{destination} already exists; choose another output or pass --overwrite."
        )
    check_writable(destination)
    return destination


def check_output_file(
    destination: str | Path, overwrite: bool, inputs: Sequence[str | Path] = ()
) -> Path:
    """Refuse an output file that exists (unless ``overwrite``), is a folder, or is an input."""
    destination = Path(destination)
    if any(destination.resolve() == Path(source).resolve() for source in inputs):
        raise MSNewLesionsError(f"the output {destination} is one of the inputs; choose another.")
    if destination.is_dir():
        raise MSNewLesionsError(f"{destination} is a folder; give a file name for the output.")
    if destination.exists() and not overwrite:
        raise MSNewLesionsError(
            f"{destination} already exists; choose another file or pass --overwrite."
        )
    check_writable(destination.absolute())
    return destination


@contextmanager
def atomic_output_folder(destination: str | Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary folder next to ``destination``; move it into place only on success.

    A run that fails or is interrupted leaves no partial ``destination`` and removes its temporary
    folder; an existing ``destination`` is replaced only when ``overwrite`` is set, and only once
    the new result is complete.
    """
    destination = check_output_folder(destination, overwrite)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-", dir=destination.parent))
    staging.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the result is an ordinary folder
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        if destination.exists():
            if not overwrite:  # another run wrote it meanwhile (one that did not lock it)
                raise MSNewLesionsError(
                    f"{destination} appeared while this run worked; its result was not written."
                )
            retired = Path(
                tempfile.mkdtemp(prefix=f".{destination.name}.old-", dir=destination.parent)
            )
            os.replace(destination, retired / "previous")
            os.replace(staging, destination)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already unless the move failed


@contextmanager
def output_lock(destination: str | Path) -> Iterator[None]:
    """Hold the right to write ``destination`` for the block: a second run given the same output
    while this one works fails at once, in one sentence, instead of racing it to the end.

    The lock is ``.<name>.lock`` beside ``destination`` (an flock: the system releases it when
    its holder dies, kill -9 included), removed when the block ends. Once it is held, the
    staging files and folders of killed runs for this destination (``.<name>.partial-*``,
    ``.<name>.old-*``) are removed.
    """
    import fcntl

    destination = Path(destination).absolute()
    destination.parent.mkdir(parents=True, exist_ok=True)
    path = destination.parent / f".{destination.name}.lock"
    while True:
        handle = path.open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise MSNewLesionsError(
                f"another run is writing {destination} now; wait for it to end or choose "
                "another output."
            ) from None
        try:
            if path.exists() and os.path.samestat(os.fstat(handle.fileno()), path.stat()):
                break  # the lock file that is still in place: held
        except OSError:
            pass
        handle.close()  # its holder removed it as this run opened it: take the new one
    # Held: whatever a killed run (kill -9, a lost node) left beside the destination is debris.
    for leftover in destination.parent.glob(f".{destination.name}.partial-*"):
        shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink()
    for leftover in destination.parent.glob(f".{destination.name}.old-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        handle.close()


def link_or_copy(source: Path, target: Path) -> None:
    """``target`` as a hard link to ``source`` (a copy across file systems); an existing target
    is kept (a resumed run)."""
    if target.exists():
        return
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
