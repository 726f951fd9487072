"""The ``msnewlesions`` command line: parse, call one library function, print.

Every command is reachable in-process through :func:`main`, which returns the exit status: 0 on
success, 1 for an error the user can fix (one line on stderr), 2 for a usage error, 130 when
interrupted.
"""

from __future__ import annotations

import sys
import warnings

import typer

from msnewlesions.cli import cohort_commands, learning_commands, model_commands, pair_commands
from msnewlesions.cli.app import app
from msnewlesions.errors import MSNewLesionsError, describe_os_error

__all__ = [
    "app",
    "cohort_commands",
    "learning_commands",
    "main",
    "model_commands",
    "pair_commands",
]


#: After SIGTERM, the seconds a run has to remove what it was writing before it is ended without
#: that. The interrupt is an exception, and a library can block on its way out: nnU-Net's final
#: validation, interrupted as it starts its worker pool, waited forever in
#: ``multiprocessing.Pool.terminate`` (a lock its workers hold), at 0 % CPU. What a run ended so
#: leaves (``.NAME.partial-*``) is cleared by the next run on that output, as after ``kill -9``.
TERMINATE_GRACE_SECONDS = 60.0


def _interrupt_on_sigterm() -> None:
    """SIGTERM ends a run like Ctrl-C: outputs in progress are removed, nothing partial stays.

    If the run is still there :data:`TERMINATE_GRACE_SECONDS` later, it exits with 143 anyway.
    """
    import os
    import signal
    import threading

    def interrupt(signum: int, frame: object) -> None:
        deadline = threading.Timer(TERMINATE_GRACE_SECONDS, os._exit, args=(128 + signum,))
        deadline.daemon = True
        deadline.start()
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)


INTERRUPTED = "error: interrupted; no output was written (an existing output is left as it was)."


def command_paths() -> list[list[str]]:
    """Every command of the command line, as its words: ``[["segment"], ["model", "export"], ...]``
    (what the documentation gives a page each and the help tests walk)."""
    import typer.main

    def walk(command: object, path: list[str]) -> list[list[str]]:
        subcommands = getattr(command, "commands", None)  # a group
        if subcommands is None:
            return [path]
        return [found for name, sub in subcommands.items() for found in walk(sub, [*path, name])]

    return walk(typer.main.get_command(app), [])


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    _interrupt_on_sigterm()
    # A deprecation inside torch, raised by a dependency's import: not the user's business.
    warnings.filterwarnings(
        "ignore", message=r"`torch\.jit\.interface` is deprecated", category=FutureWarning
    )
    arguments = cohort_commands.expand_label_lists(list(sys.argv[1:] if argv is None else argv))
    try:
        app(args=arguments, prog_name="msnewlesions", standalone_mode=True)
    except MSNewLesionsError as error:
        typer.echo(f"error: {error}", err=True)
        return 1
    except OSError as error:  # a full disk, a read-only or vanished folder: one line, no traceback
        typer.echo(f"error: {describe_os_error(error)}", err=True)
        return 1
    except KeyboardInterrupt:
        typer.echo(INTERRUPTED, err=True)
        return 130
    except SystemExit as exit_:
        code = exit_.code
        if code == 130:  # typer turns Ctrl-C (and our SIGTERM) into a silent exit 130
            typer.echo(INTERRUPTED, err=True)
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0
