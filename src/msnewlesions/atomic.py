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


def write_text_atomically(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_file`."""
    with atomic_file(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_json_atomically(path: str | Path, data: Any, indent: int = 2) -> None:
    """Write ``data`` as indented JSON (non-JSON values as their string) to ``path``."""
    write_text_atomically(path, json.dumps(data, indent=indent, default=str) + "\n")


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
    if destination.exists() and not overwrite:
        raise MSNewLesionsError(
            f"{destination} already exists; choose another output or pass --overwrite."
        )
    if destination.exists() and not destination.is_dir():
        raise MSNewLesionsError(f"{destination} exists and is not a folder.")
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
    if destination.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{destination.name}.old-", dir=destination.parent))
        os.replace(destination, retired / "previous")
        os.replace(staging, destination)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, destination)
