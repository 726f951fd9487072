"""``msnewlesions segment``: two FLAIR scans in, the new lesions out on the follow-up's own grid.

preprocess (registration, HD-BET, N4, crop, z-score) -> slice matching (the sharper scan resliced
like the other along any axis where their slices differ; preprocessing/resolution.py) -> nnU-Net
probability in MNI space ->
threshold and minimum lesion size -> lesions numbered in MNI -> mask on the follow-up's native grid
through the saved transform. Outputs (DESIGN.md): ``new_lesions.nii.gz`` (uint8, the follow-up's
shape and affine), ``new_lesions_mni.nii.gz``, ``lesions.csv``, ``summary.json``, ``report.html``,
and ``baseline_to_mni.tfm`` / ``followup_to_mni.tfm`` (ITK files; each maps MNI points to that
native scan, as ``preprocess`` writes them).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from msnewlesions.errors import MSNewLesionsError
from msnewlesions.io import (
    Volume,
    atomic_output_folder,
    check_output_folder,
    read_volume,
    write_volume,
)
from msnewlesions.postprocessing import (
    Lesion,
    PostprocessingSettings,
    lesion_labels,
    lesion_table,
    to_native,
)
from msnewlesions.preprocessing import registration
from msnewlesions.preprocessing.pipeline import (
    PreprocessedPair,
    PreprocessOptions,
    preprocess_pair,
    software_versions,
)
from msnewlesions.preprocessing.resolution import match_resolution
from msnewlesions.report.html import render_report

logger = logging.getLogger(__name__)

#: Where the shipped default model lives inside the package (trained by the default-model issue).
DEFAULT_MODEL = Path(__file__).resolve().parent / "model" / "weights"


@dataclass(frozen=True)
class SegmentOptions:
    """``threshold`` / ``min_lesion_mm3``: None takes the model's own (its postprocessing.json).

    ``match_slices``: see the two scans through the same slices before the network compares them.
    """

    threshold: float | None = None
    min_lesion_mm3: float | None = None
    preprocess: PreprocessOptions = field(default_factory=PreprocessOptions)
    match_slices: bool = True

    def postprocessing(self, model_settings: PostprocessingSettings) -> PostprocessingSettings:
        """These options over the model's settings."""
        return PostprocessingSettings(
            model_settings.threshold if self.threshold is None else self.threshold,
            model_settings.min_lesion_mm3 if self.min_lesion_mm3 is None else self.min_lesion_mm3,
        )


@dataclass
class Segmentation:
    new_lesions: Volume  # uint8 on the follow-up's native grid
    labels_mni: Volume  # lesion numbers on the preprocessed MNI grid
    probability: Volume
    lesions: list[Lesion]
    preprocessed: PreprocessedPair
    seconds: dict[str, float]
    postprocessing: PostprocessingSettings
    #: Axes along which one scan was resliced like the other (SliceMatch.as_dict()), if any.
    slice_matches: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ModelInputs:
    """What the network is given: the preprocessed pair, slice-matched where asked."""

    preprocessed: PreprocessedPair
    baseline: Volume
    followup: Volume
    #: Axes along which one scan was resliced like the other (SliceMatch.as_dict()), if any.
    slice_matches: list[dict[str, Any]]
    seconds: dict[str, float]


def model_inputs(
    baseline: Volume, followup: Volume, options: SegmentOptions | None = None
) -> ModelInputs:
    """Preprocess two scans and match their slices (``options.match_slices``), as ``segment``
    does before its network: training pairs and benchmarks made here meet what segment meets."""
    options = options or SegmentOptions()
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    preprocessed = preprocess_pair(baseline, followup, options.preprocess)
    seconds["preprocessing"] = round(time.perf_counter() - start, 2)
    model_baseline, model_followup, matches = preprocessed.baseline, preprocessed.followup, []
    if options.match_slices:
        start = time.perf_counter()
        model_baseline, model_followup, matches = match_resolution(
            preprocessed.baseline, preprocessed.followup, preprocessed.brain_mask
        )
        seconds["slice_matching"] = round(time.perf_counter() - start, 2)
        for match in matches:
            logger.info(
                "slices differ along axis %d: %s resliced through %.2f mm slices",
                match.axis,
                match.resliced,
                match.thickness_mm,
            )
    return ModelInputs(
        preprocessed,
        model_baseline,
        model_followup,
        [match.as_dict() for match in matches],
        seconds,
    )


def default_model() -> Path:
    """The model shipped inside the package, or one clear error saying how to get a model."""
    if (DEFAULT_MODEL / "plans.json").exists() and (DEFAULT_MODEL / "dataset.json").exists():
        return DEFAULT_MODEL
    raise MSNewLesionsError(
        "no model given and this installation ships no default model yet; train one "
        "(msnewlesions dataset, then msnewlesions train; see the README) and pass --model FOLDER."
    )


def segment_pair(
    baseline: Volume,
    followup: Volume,
    predictor: Any,
    options: SegmentOptions | None = None,
) -> Segmentation:
    """Segment the new lesions of ``followup`` against ``baseline`` with a loaded predictor.

    The threshold and minimum lesion volume are ``options``' where given, else the predictor's
    model's own (the predictor's ``postprocessing``: its postprocessing.json, else the defaults).
    """
    options = options or SegmentOptions()
    settings = options.postprocessing(predictor.postprocessing)
    inputs = model_inputs(baseline, followup, options)
    preprocessed, seconds = inputs.preprocessed, dict(inputs.seconds)

    logger.info("nnU-Net prediction (folds %s) ...", ",".join(predictor.folds))
    start = time.perf_counter()
    probability = predictor.probability(inputs.baseline, inputs.followup)
    probability = probability.with_array(probability.array * (preprocessed.brain_mask.array > 0))
    seconds["prediction"] = round(time.perf_counter() - start, 2)
    logger.info("nnU-Net prediction done (%.1f s)", seconds["prediction"])

    start = time.perf_counter()
    labels_mni, count = lesion_labels(probability, settings.threshold, settings.min_lesion_mm3)
    labels_native = to_native(labels_mni, followup, preprocessed.followup_to_mni)
    lesions = lesion_table(labels_mni, labels_native, probability, preprocessed.followup_to_mni)
    new_lesions = followup.with_array((labels_native.array > 0).astype(np.uint8))
    seconds["postprocessing"] = round(time.perf_counter() - start, 2)
    logger.info("%d new lesion(s)", count)
    return Segmentation(
        new_lesions,
        labels_mni,
        probability,
        lesions,
        preprocessed,
        seconds,
        settings,
        inputs.slice_matches,
    )


def _sha256(path: Path) -> str:
    if path.is_dir():
        digest = hashlib.sha256()
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(item.read_bytes())
        return digest.hexdigest()
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def summary_of(
    result: Segmentation, inputs: dict[str, Path], model: Path, options: SegmentOptions
) -> dict[str, Any]:
    total = float(sum(lesion.volume_mm3 for lesion in result.lesions))
    qc = dict(result.preprocessed.qc)
    return {
        "new_lesion_count": len(result.lesions),
        "new_lesion_volume_mm3": round(total, 2),
        "threshold": result.postprocessing.threshold,
        "min_lesion_mm3": result.postprocessing.min_lesion_mm3,
        "slice_matching": options.match_slices,
        "slice_matches": result.slice_matches,
        "model": str(model),
        "qc": qc,
        "warnings": qc.get("warnings", []),
        "seconds": {**{"preprocessing_steps": qc.get("seconds", {})}, **result.seconds},
        "inputs": {
            role: {"path": str(path), "sha256": _sha256(path)} for role, path in inputs.items()
        },
        "versions": software_versions(),
    }


def write_segmentation(result: Segmentation, summary: dict[str, Any], folder: Path) -> None:
    write_volume(result.new_lesions, folder / "new_lesions.nii.gz", np.uint8)
    # The transforms that carry the MNI results to the native scans (and back, inverted).
    registration.write_transform(
        result.preprocessed.baseline_to_mni, folder / "baseline_to_mni.tfm"
    )
    registration.write_transform(
        result.preprocessed.followup_to_mni, folder / "followup_to_mni.tfm"
    )
    mni_mask = result.labels_mni.with_array((result.labels_mni.array > 0).astype(np.uint8))
    write_volume(mni_mask, folder / "new_lesions_mni.nii.gz", np.uint8)
    rows = [lesion.as_row() for lesion in result.lesions]
    with (folder / "lesions.csv").open("w", newline="") as handle:
        fields = (
            list(rows[0])
            if rows
            else [
                "lesion_id",
                "voxels_mni",
                "volume_mm3",
                "voxels_native",
                "max_probability",
                "mni_x_mm",
                "mni_y_mm",
                "mni_z_mm",
                "native_x_mm",
                "native_y_mm",
                "native_z_mm",
            ]
        )
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    page = render_report(
        summary,
        result.lesions,
        result.preprocessed.baseline,
        result.preprocessed.followup,
        result.labels_mni,
    )
    (folder / "report.html").write_text(page, encoding="utf-8")


def segment_files(
    baseline_path: str | Path,
    followup_path: str | Path,
    out: str | Path,
    model: str | Path | None = None,
    options: SegmentOptions | None = None,
    device: str = "cpu",
    test_time_augmentation: bool = False,
    overwrite: bool = False,
    mask_only: bool = False,
) -> Segmentation:
    """Read, segment and write. ``mask_only`` (MSSEG-2's container form) writes just the mask
    to the file ``out``; otherwise ``out`` is a folder that receives every output."""
    from msnewlesions.model.nnunet import NewLesionPredictor

    options = options or SegmentOptions()
    baseline_path, followup_path, out = Path(baseline_path), Path(followup_path), Path(out)
    if mask_only:
        if out.exists() and not overwrite:
            raise MSNewLesionsError(
                f"{out} already exists; choose another file or pass --overwrite."
            )
        if out.resolve() in (baseline_path.resolve(), followup_path.resolve()):
            raise MSNewLesionsError(f"the output {out} is one of the inputs; choose another file.")
    else:
        check_output_folder(out, overwrite, inputs=(baseline_path, followup_path))
    model_path = Path(model) if model is not None else default_model()
    predictor = NewLesionPredictor(
        model_path, device=device, test_time_augmentation=test_time_augmentation
    )
    baseline, followup = read_volume(baseline_path), read_volume(followup_path)
    result = segment_pair(baseline, followup, predictor, options)
    summary = summary_of(
        result, {"baseline": baseline_path, "followup": followup_path}, model_path, options
    )
    if mask_only:
        out.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            prefix=f".{out.name}.", suffix=".nii.gz", dir=out.parent
        )
        os.close(handle)
        try:
            write_volume(result.new_lesions, temporary, np.uint8)
            os.chmod(temporary, 0o644)
            os.replace(temporary, out)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    else:
        with atomic_output_folder(out, overwrite) as staging:
            write_segmentation(result, summary, staging)
    return result
