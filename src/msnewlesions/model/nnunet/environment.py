"""nnU-Net's names, folders and process hygiene: the part of the adapter every other part uses.

nnU-Net finds its folders through environment variables (``nnUNet_raw``, ``nnUNet_preprocessed``,
``nnUNet_results``, ``nnUNet_extTrainer``); :func:`nnunet_environment` sets them from explicit
paths for the duration of one call and restores the previous values, so users never export them.
nnU-Net prints; :func:`quiet` sends its output to the debug log.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, TypeVar

from msnewlesions.errors import MSNewLesionsError

logger = logging.getLogger(__name__)

Config = Literal["paper", "cpu"]

TRAINER = "nnUNetTrainerMSNewLesions"
#: The network of a run, by name: the two visits as two channels of one U-Net (the paper's and
#: nnU-Net's input), or one encoder per visit merged by difference weighting (Rokuss et al.).
Network = Literal["concatenation", "difference-weighting"]
TRAINERS: dict[str, str] = {
    "concatenation": TRAINER,
    "difference-weighting": "nnUNetTrainerMSNewLesionsDifferenceWeighting",
}
CONFIGURATION = "3d_fullres"
PLANS: dict[str, str] = {"paper": "nnUNetPlans", "cpu": "nnUNetPlans_cpu"}
CHANNEL_NAMES = {"0": "baseline", "1": "followup"}
LABELS = {"background": 0, "new_lesion": 1}
DATASET_NAME = "MSNewLesions"

#: The folder nnU-Net searches for our trainers (``nnUNet_extTrainer``): it imports every module
#: in it, so it holds the trainers and nothing else.
TRAINERS_FOLDER = Path(__file__).resolve().parents[1] / "trainers"

_Result = TypeVar("_Result")


def dataset_name(dataset_id: int) -> str:
    return f"Dataset{dataset_id:03d}_{DATASET_NAME}"


def dataset_id_of(folder: str | Path) -> int:
    """The number of a raw dataset folder named ``DatasetNNN_<name>``."""
    name = Path(folder).name
    if not (Path(folder) / "dataset.json").exists():
        raise MSNewLesionsError(f"{folder} is not an nnU-Net raw dataset (no dataset.json).")
    try:
        return int(name.removeprefix("Dataset").split("_", 1)[0])
    except ValueError:
        raise MSNewLesionsError(
            f"{folder}: an nnU-Net dataset folder is named DatasetNNN_<name>."
        ) from None


@contextmanager
def nnunet_environment(
    raw: str | Path | None = None,
    preprocessed: str | Path | None = None,
    results: str | Path | None = None,
    data_workers: int | None = None,
) -> Iterator[None]:
    """nnU-Net's folder variables (and our trainers' folder) set for the duration of the block."""
    values = {
        "nnUNet_raw": raw,
        "nnUNet_preprocessed": preprocessed,
        "nnUNet_results": results,
        "nnUNet_extTrainer": TRAINERS_FOLDER,
        "nnUNet_compile": "false",
        "nnUNet_n_proc_DA": data_workers,
    }
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = str(value)
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


@contextmanager
def quiet() -> Iterator[None]:
    """nnU-Net prints; library code logs. Its output goes to the debug log."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            yield
    finally:
        for line in captured.getvalue().splitlines():
            if line.strip():
                logger.debug("nnU-Net: %s", line)


def in_fresh_process(function: Callable[..., _Result], *arguments: object) -> _Result:
    """Run ``function`` in a newly spawned process and return its result (errors re-raised).

    Parts of nnU-Net open multiprocessing pools with the default *fork* start method. Forking a
    process that already runs threads (torch, SimpleITK: every preprocessing does) can copy a
    held lock into the child and hang it for ever - seen here, intermittently, in nnU-Net's
    dataset integrity check. A freshly spawned process has no such threads.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as executor:
        return executor.submit(function, *arguments).result()


def check_device(device: str) -> None:
    """Refuse ``cuda`` where no CUDA GPU is available, in one sentence."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise MSNewLesionsError("--device cuda was asked for, but no CUDA GPU is available.")
