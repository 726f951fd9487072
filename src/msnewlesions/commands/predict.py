"""``msnewlesions predict``: a trained model on folders of preprocessed pairs, as ``segment``.

Each case is ``<case>_0000.nii.gz`` (baseline) and ``<case>_0001.nii.gz`` (follow-up), z-scored
on one grid with zero outside the brain, as ``preprocess`` and nnU-Net datasets hold them. Every
case goes through :func:`msnewlesions.segment.predict_lesions`, the step ``segment`` uses: the
same network call, the probability set to zero outside the brain (here: where both channels are
zero), and the model's own threshold, minimum lesion size and minimum depth inside that brain's
parenchyma (without the fluid at its surface). The same model therefore gives the same mask
through ``predict`` and ``segment``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from msnewlesions.atomic import atomic_output_folder
from msnewlesions.engines import Engine
from msnewlesions.errors import MSNewLesionsError
from msnewlesions.io import read_volume, write_volume
from msnewlesions.lesions import PostprocessingSettings
from msnewlesions.model.nnunet import NewLesionPredictor
from msnewlesions.segment import LesionPredictor, brain_of, predict_lesions

logger = logging.getLogger(__name__)


def find_cases(folder: Path) -> list[str]:
    """The cases of a folder that has both channels of each (one clear error otherwise)."""
    if not folder.is_dir():
        raise MSNewLesionsError(f"{folder} is not a folder of <case>_0000/_0001 NIfTI files.")
    cases = sorted(p.name.removesuffix("_0000.nii.gz") for p in folder.glob("*_0000.nii.gz"))
    missing = [case for case in cases if not (folder / f"{case}_0001.nii.gz").exists()]
    if missing or not cases:
        raise MSNewLesionsError(
            f"{folder}: no follow-up (_0001) for {', '.join(missing)}."
            if missing
            else f"{folder} holds no <case>_0000.nii.gz file."
        )
    return cases


def predict_folder(
    predictor: LesionPredictor,
    input_folder: str | Path,
    output_folder: str | Path,
    settings: PostprocessingSettings | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write ``<case>.nii.gz`` (uint8 new-lesion mask on the case's grid) for every case."""
    input_folder, output_folder = Path(input_folder), Path(output_folder)
    cases = find_cases(input_folder)
    settings = settings or predictor.postprocessing
    with atomic_output_folder(output_folder, overwrite) as staging:
        for index, case in enumerate(cases, start=1):
            logger.info("case %d/%d: %s", index, len(cases), case)
            baseline = read_volume(input_folder / f"{case}_0000.nii.gz")
            followup = read_volume(input_folder / f"{case}_0001.nii.gz")
            brain = brain_of(baseline, followup)
            _, labels, _ = predict_lesions(baseline, followup, brain, predictor, settings)
            mask = labels.with_array((labels.array > 0).astype(np.uint8))
            write_volume(mask, staging / f"{case}.nii.gz", np.uint8)
    return [output_folder / f"{case}.nii.gz" for case in cases]


def predict_files(
    model: str | Path,
    input_folder: str | Path,
    output_folder: str | Path,
    folds: Sequence[int | str] | None = None,
    device: str = "cpu",
    test_time_augmentation: bool = False,
    overwrite: bool = False,
    engine: Engine = "auto",
) -> list[Path]:
    """Load ``model`` (folder or zip; its folds ensembled unless ``folds`` names some; its
    passes run by ``engine``, :mod:`msnewlesions.engines`) and run :func:`predict_folder`."""
    predictor = NewLesionPredictor(model, folds, device, test_time_augmentation, engine=engine)
    return predict_folder(predictor, input_folder, output_folder, overwrite=overwrite)
