"""The number format of network passes on the CPU: float32, or bfloat16 where the CPU has it.

CPUs with bfloat16 instructions (x86 AVX-512 BF16 or AMX) run a convolution network's passes
under :func:`torch.autocast` in bfloat16 in about half the time of float32; elsewhere bfloat16 is
emulated and slower than float32. ``"auto"`` therefore takes bfloat16 only where the CPU has the
instructions, and float32 otherwise and on CUDA (where nnU-Net already runs its passes in
float16). Measured on a 2-core AMD EPYC with AVX-512 BF16 (PyTorch 2.14.1), before float32
passes took oneDNN's convolutions: a 64^3 window of the shipped network 0.29 s in float32, 0.11 s
in bfloat16; HD-BET on patient01's baseline 23.6 s and 12.6 s, for masks that differ in 141 of
624,331 voxels (Dice 0.9999). Each network's outputs are returned in float32 (softmax, sums and
thresholds in full precision); only the passes themselves run in bfloat16. Float32 passes run
every 3-D convolution through oneDNN (:mod:`msnewlesions.convolutions`), which PyTorch leaves out
for small feature maps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

from msnewlesions.convolutions import onednn_convolutions
from msnewlesions.errors import MSNewLesionsError

if TYPE_CHECKING:
    import torch

Precision = Literal["auto", "float32", "bfloat16"]
PRECISIONS: tuple[str, ...] = ("auto", "float32", "bfloat16")


#: oneDNN's instruction-set caps (``ONEDNN_MAX_CPU_ISA``) that leave out bfloat16 instructions.
_ISA_CAPS_WITHOUT_BFLOAT16 = {
    "SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI",
}  # fmt: skip


def cpu_has_bfloat16() -> bool:
    """Whether this CPU has bfloat16 instructions PyTorch uses (AVX-512 BF16 or AMX tiles), and
    they are not capped away (``ONEDNN_MAX_CPU_ISA=AVX2`` and the like, which the network engines
    obey: bfloat16 would then be emulated, far slower than float32)."""
    import os

    import torch

    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in _ISA_CAPS_WITHOUT_BFLOAT16:
        return False

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_precision(precision: str, device: str = "cpu") -> Literal["float32", "bfloat16"]:
    """``"float32"`` or ``"bfloat16"``: the format ``precision`` means on ``device``."""
    if precision not in PRECISIONS:
        raise MSNewLesionsError(
            f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}."
        )
    if precision == "auto":
        return "bfloat16" if device == "cpu" and cpu_has_bfloat16() else "float32"
    if precision == "bfloat16" and device != "cpu":
        raise MSNewLesionsError(
            "bfloat16 passes are for the CPU; on CUDA use auto or float32 (nnU-Net runs its "
            "passes in float16 there itself)."
        )
    return precision  # type: ignore[return-value]


def _as_float32(output: object) -> object:
    import torch

    if isinstance(output, torch.Tensor):
        return output.float()
    if isinstance(output, (list, tuple)):
        return type(output)(_as_float32(o) for o in output)
    return output


@contextlib.contextmanager
def network_precision(network: torch.nn.Module, precision: str) -> Iterator[None]:
    """Within the block, ``network``'s passes run in ``precision`` (``"float32"`` or
    ``"bfloat16"``, resolved) and return float32; float32 ones with oneDNN's convolutions on the
    CPU. Enter it in the thread that runs the passes (autocast belongs to one thread); the
    network is left as it was at exit."""
    import torch

    if precision == "float32":
        with onednn_convolutions(network):
            yield
        return
    if precision != "bfloat16":
        raise ValueError(f"resolve the precision first: {precision!r}")
    hook = network.register_forward_hook(lambda _module, _inputs, output: _as_float32(output))
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yield
    finally:
        hook.remove()
