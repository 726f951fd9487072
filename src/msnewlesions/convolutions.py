"""3-D convolutions through oneDNN on the CPU, whatever their size.

PyTorch picks a float32 CPU convolution's kernel by a heuristic: with a batch of one and 3x3x3
filters it takes oneDNN only where channels x depth x height exceed 20,480, and its own im2col
kernel (``slow_conv3d``) elsewhere, which in a U-Net is every deeper stage (64 features on
16^3, 128 on 8^3, 256 on 4^3). Measured on this project's 2-core AMD EPYC without AVX-512
(PyTorch 2.14.1, float32): that kernel took a quarter of a 64^3 window's pass of the shipped
network, and with oneDNN for every convolution the pass took 0.586 s against 0.685 s, for
outputs that differ by at most 9e-6 (the order of the sums changes, nothing else).

:func:`onednn_convolutions` routes a network's :class:`torch.nn.Conv3d` layers through oneDNN
while a block runs, for float32 passes on the CPU without gradients; everything else (CUDA,
autocast's bfloat16, training) takes PyTorch's own choice. The network is left as it was.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@functools.lru_cache(maxsize=1)
def onednn_available() -> bool:
    """Whether this PyTorch build has oneDNN and its convolution operator."""
    import torch

    return bool(torch.backends.mkldnn.is_available()) and hasattr(
        torch.ops.aten, "mkldnn_convolution"
    )


@functools.lru_cache(maxsize=1)
def _onednn_conv3d_class() -> type:
    import torch

    class OneDnnConv3d(torch.nn.Conv3d):
        """A :class:`torch.nn.Conv3d` whose float32 CPU inference passes go through oneDNN."""

        def forward(self, input: torch.Tensor) -> torch.Tensor:
            if (
                input.device.type == "cpu"
                and input.dtype == torch.float32
                and self.weight.dtype == torch.float32
                and not torch.is_grad_enabled()
                and not torch.is_autocast_enabled("cpu")
            ):
                return torch.ops.aten.mkldnn_convolution(
                    input.contiguous(),
                    self.weight,
                    self.bias,
                    self.padding,
                    self.stride,
                    self.dilation,
                    self.groups,
                )
            return super().forward(input)

    return OneDnnConv3d


@contextlib.contextmanager
def onednn_convolutions(network: torch.nn.Module) -> Iterator[None]:
    """Within the block, ``network``'s 3-D convolutions (zero padding, numeric padding) run
    through oneDNN in float32 CPU inference; they are given back their own class at exit."""
    import torch

    if not onednn_available():
        yield
        return
    swapped = [
        module
        for module in network.modules()
        if type(module) is torch.nn.Conv3d
        and module.padding_mode == "zeros"
        and not isinstance(module.padding, str)
    ]
    onednn_class = _onednn_conv3d_class()
    for module in swapped:
        module.__class__ = onednn_class
    try:
        yield
    finally:
        for module in swapped:
            module.__class__ = torch.nn.Conv3d
