"""Subnormal floats on the CPU, and why every network pass flushes them to zero.

x86 CPUs compute with subnormal ("denormal") float32 values, those below about 1.2e-38, in
microcode, one to two orders of magnitude slower than with normal ones. A network's activations
can fall into that range for some inputs: measured on this project's 2-core Xeon (PyTorch
2.14.1), a 16-channel 3x3x3 convolution of a 128^3 volume takes 0.33 s, and 27 s when its input
is subnormal; HD-BET's one pass over patient03's head of open_ms_data took more than 30 minutes,
and 25 s with subnormals flushed to zero, for the same mask (1452.3 ml). Flushing changes values
below 1.2e-38 only, which no probability or mask here can tell apart from zero.

PyTorch's switch (:func:`torch.set_flush_denormal`) is process state, and PyTorch offers no way to
read it; :func:`flushed_denormals` turns it on for one block and back to PyTorch's default (off)
afterwards, so library code leaves the process as it found it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def flushed_denormals() -> Iterator[None]:
    """Within the block, PyTorch's CPU kernels treat subnormal floats as zero (where the CPU
    supports it: x86 with SSE3); afterwards they do not."""
    import torch

    supported = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if supported:
            torch.set_flush_denormal(False)
