"""The ``msnewlesions`` Typer application and the options several commands share."""

from __future__ import annotations

import logging
import sys
from enum import Enum
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from msnewlesions.segment import SegmentOptions

app = typer.Typer(
    name="msnewlesions",
    help="Find new multiple sclerosis lesions between a baseline and a follow-up FLAIR.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _commands() -> None:
    """Find new multiple sclerosis lesions between a baseline and a follow-up FLAIR."""


class SkullstripChoice(str, Enum):
    fast = "fast"
    accurate = "accurate"


class SkullStrippedChoice(str, Enum):
    auto = "auto"
    yes = "yes"
    no = "no"

    def as_option(self) -> bool | None:
        return {"auto": None, "yes": True, "no": False}[self.value]


SkullStripped = Annotated[
    SkullStrippedChoice,
    typer.Option(
        help="Are the scans already brain-extracted? yes: their non-zero region is the brain "
        "mask; no: HD-BET finds the brain (it needs the skull); auto: yes when both scans lie "
        "inside the template's brain after registration to MNI (default: auto).",
    ),
]


class DeviceChoice(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


class PrecisionChoice(str, Enum):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"


PrecisionOption = Annotated[
    PrecisionChoice,
    typer.Option(
        help="Number format of the network passes (HD-BET and the lesion network) on the CPU: "
        "auto takes bfloat16 where the CPU has bfloat16 instructions (about twice as fast, "
        "nearly the same masks) and float32 elsewhere; float32 gives the same results on "
        "every CPU (default: auto).",
    ),
]


class EngineChoice(str, Enum):
    auto = "auto"
    torch = "torch"
    onnxruntime = "onnxruntime"
    openvino = "openvino"


EngineOption = Annotated[
    EngineChoice,
    typer.Option(
        help="What runs the network passes (HD-BET and the lesion network) on the CPU: auto "
        "takes OpenVINO where it is installed (the fastest measured, same masks) and PyTorch "
        "otherwise; torch is the reference (default: auto).",
    ),
]


SendTo = Annotated[
    str | None,
    typer.Option(
        "--send-to",
        metavar="AET@HOST:PORT",
        help="Store the DICOM SEG and SR on this DICOM node (C-STORE) once the outputs are "
        "complete, e.g. PACS@pacs.example.org:104; for DICOM follow-ups. A node that refuses "
        "them or cannot be reached is an error; the local outputs are kept.",
    ),
]


def segment_options(
    threshold: float | None,
    min_lesion_mm3: float | None,
    min_depth_mm: float | None,
    device: DeviceChoice,
    skull_stripped: SkullStrippedChoice,
    match_slices: bool,
    precision: PrecisionChoice = PrecisionChoice.auto,
    engine: EngineChoice = EngineChoice.auto,
) -> SegmentOptions:
    """``segment``'s options from the flags every segmenting command shares (None: the model's
    own post-processing)."""
    from msnewlesions.preprocessing.pipeline import PreprocessOptions
    from msnewlesions.segment import SegmentOptions

    return SegmentOptions(
        threshold=threshold,
        min_lesion_mm3=min_lesion_mm3,
        min_depth_mm=min_depth_mm,
        preprocess=PreprocessOptions(
            device=device.value,
            skull_stripped=skull_stripped.as_option(),
            precision=precision.value,
            engine=engine.value,
        ),
        match_slices=match_slices,
    )


def configure_logging(verbose: bool, quiet: bool) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    root = logging.getLogger("msnewlesions")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


class ConfigChoice(str, Enum):
    paper = "paper"
    cpu = "cpu"


Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Say more about each step.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print only warnings and errors.")]
