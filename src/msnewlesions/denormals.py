"""Subnormal floats on the CPU, and why network passes and training run where they count as zero.

x86 CPUs compute with subnormal ("denormal") float32 values, those below about 1.2e-38, in
microcode, one to two orders of magnitude slower than with normal ones. A network's activations
can fall into that range for some inputs: measured on this project's 2-core Xeon (PyTorch
2.14.1), a 16-channel 3x3x3 convolution of a 64^3 volume takes 0.08 s, and 5.7 s when its input
is subnormal; HD-BET's one pass over patient03's head of open_ms_data took more than 30 minutes,
and 25 s with subnormals flushed to zero, for the same mask (1452.3 ml); three training steps of
the shipped network took 20-57 s instead of 9 s. Flushing changes values below 1.2e-38 only,
which no probability or mask here can tell apart from zero.

The switch (:func:`torch.set_flush_denormal`: the CPU's flush-to-zero and denormals-are-zero
bits) belongs to one thread, and PyTorch's OpenMP workers keep the bits they were started with:
set in the calling thread once its workers exist, it reaches only part of the work (the same
convolution: 4 s of the 5.7). :func:`run_flushed` therefore runs the pass in a new thread that
sets the switch first; the workers that thread's parallel work starts inherit it (measured:
0.08 s), and the caller's thread and workers are left as they were.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

_Result = TypeVar("_Result")


def run_flushed(function: Callable[[], _Result]) -> _Result:
    """``function()``, run in a new thread in which PyTorch's CPU arithmetic (and its OpenMP
    workers') treats subnormal floats as zero, with the caller's number of PyTorch threads; its
    result, or its exception raised here. The caller's thread is not changed."""
    import torch

    threads = torch.get_num_threads()
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            torch.set_flush_denormal(True)  # False, and no effect, where the CPU cannot
            torch.set_num_threads(threads)
            outcome["result"] = function()
        except BaseException as error:  # handed to the caller, whatever it is
            outcome["error"] = error

    # A daemon, so that a caller interrupted while it waits (Ctrl-C, SIGTERM) can still exit.
    worker = threading.Thread(target=target, name="msnewlesions-network-pass", daemon=True)
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["result"]  # type: ignore[return-value]
