"""The one exception users can cause, and that the command line turns into one line."""

from __future__ import annotations


class MSNewLesionsError(Exception):
    """An error the user can act on: the message says what went wrong and what to do.

    Library code raises it for bad input (missing or unreadable files, 4-D or empty images, images
    that cannot be registered, ...). The command line prints the message as one line and exits
    with a non-zero status; anything else is a bug and keeps its traceback.
    """


def describe_os_error(error: OSError) -> str:
    """One sentence for a failure of the file system (full, read-only, no permission)."""
    import errno

    where = error.filename if error.filename is not None else "a file"
    advice = {
        errno.ENOSPC: f"no space left on the device holding {where}; free some space or write "
        "the outputs elsewhere. Nothing partial was kept.",
        errno.EDQUOT: f"the disk quota is exceeded writing {where}; free some space or write the "
        "outputs elsewhere. Nothing partial was kept.",
        errno.EROFS: f"{where} is on a read-only file system; write the outputs elsewhere.",
        errno.EACCES: f"permission denied for {where}; check its permissions or use another "
        "location.",
        errno.EPERM: f"operation not permitted on {where}; check its permissions or use another "
        "location.",
    }
    if error.errno in advice:
        return advice[error.errno]
    return f"{error.strerror or error} ({where})."


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
