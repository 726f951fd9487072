"""The one exception users can cause, and that the command line turns into one line."""

from __future__ import annotations


class MSNewLesionsError(Exception):
    """An error the user can act on: the message says what went wrong and what to do.

    Library code raises it for bad input (missing or unreadable files, 4-D or empty images, images
    that cannot be registered, ...). The command line prints the message as one line and exits
    with a non-zero status; anything else is a bug and keeps its traceback.
    """
