"""One pair end to end, in memory: two native FLAIR scans in, the new lesions out.

preprocess and match slices (:func:`~msnewlesions.preprocessing.model_inputs.model_inputs`) ->
the network's new-lesion probability on the MNI grid, zero outside the brain (any
:class:`LesionPredictor`) -> threshold and minimum lesion size (the model's own, unless
overridden) -> lesions numbered in MNI -> the mask on the follow-up's native grid through the
saved transform. Reading and writing files is :mod:`msnewlesions.commands.segment`'s.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from msnewlesions.io import Volume
from msnewlesions.lesions import PostprocessingSettings
from msnewlesions.postprocessing import Lesion, lesion_labels, lesion_table, to_native
from msnewlesions.preprocessing.model_inputs import InputOptions, ModelInputs, model_inputs
from msnewlesions.preprocessing.parenchyma import parenchyma_mask
from msnewlesions.preprocessing.pipeline import PreprocessedPair, PreprocessOptions
from msnewlesions.preprocessing.quality import QualityReport

logger = logging.getLogger(__name__)


class LesionPredictor(Protocol):
    """What ``segment`` needs from a network: a probability map, and the model's own settings.

    :class:`msnewlesions.model.nnunet.NewLesionPredictor` is the real one; tests inject a fake
    that returns a known map.
    """

    @property
    def postprocessing(self) -> PostprocessingSettings:
        """The threshold and minimum lesion volume chosen for this model."""
        ...

    def probability(self, baseline: Volume, followup: Volume) -> Volume:
        """The new-lesion probability (float32) on the grid the two volumes share."""
        ...


@dataclass(frozen=True)
class SegmentOptions:
    """``threshold`` / ``min_lesion_mm3`` / ``min_depth_mm``: None takes the model's own (its
    postprocessing.json).

    ``match_slices``: see the two scans through the same slices before the network compares them.
    """

    threshold: float | None = None
    min_lesion_mm3: float | None = None
    min_depth_mm: float | None = None
    preprocess: PreprocessOptions = field(default_factory=PreprocessOptions)
    match_slices: bool = True

    def postprocessing(self, model_settings: PostprocessingSettings) -> PostprocessingSettings:
        """These options over the model's settings."""
        return model_settings.override(self.threshold, self.min_lesion_mm3, self.min_depth_mm)

    def inputs(self) -> InputOptions:
        return InputOptions(self.preprocess, self.match_slices)


@dataclass
class Segmentation:
    new_lesions: Volume  # uint8 on the follow-up's native grid
    labels_mni: Volume  # lesion numbers on the preprocessed MNI grid
    probability: Volume
    lesions: list[Lesion]
    inputs: ModelInputs
    seconds: dict[str, float]
    postprocessing: PostprocessingSettings
    match_slices: bool = True
    #: Lesion numbers (those of ``lesions``) on the follow-up's native grid.
    labels_native: Volume | None = None

    @property
    def preprocessed(self) -> PreprocessedPair:
        return self.inputs.preprocessed

    @property
    def total_volume_mm3(self) -> float:
        return float(sum(lesion.volume_mm3 for lesion in self.lesions))


def brain_of(baseline: Volume, followup: Volume) -> Volume:
    """The brain of a preprocessed pair: where either channel is non-zero."""
    return baseline.with_array(((baseline.array != 0) | (followup.array != 0)).astype(np.uint8))


def predict_lesions(
    baseline: Volume,
    followup: Volume,
    brain_mask: Volume,
    predictor: LesionPredictor,
    settings: PostprocessingSettings,
) -> tuple[Volume, Volume, int]:
    """Probability (zero outside the brain) and numbered lesions on the model-ready grid.

    A minimum depth (``settings.min_depth_mm``) is measured inside the brain's parenchyma: the
    brain mask without the fluid at its surface, at either visit (:func:`parenchyma_mask`).
    """
    probability = predictor.probability(baseline, followup)
    inside = brain_mask.array > 0
    probability = probability.with_array((probability.array * inside).astype(np.float32))
    parenchyma = None
    if settings.min_depth_mm > 0:
        parenchyma = parenchyma_mask([baseline, followup], brain_mask)
    labels, count = lesion_labels(
        probability, settings.threshold, settings.min_lesion_mm3, parenchyma, settings.min_depth_mm
    )
    return probability, labels, count


def segment_pair(
    baseline: Volume,
    followup: Volume,
    predictor: LesionPredictor,
    options: SegmentOptions | None = None,
) -> Segmentation:
    """Segment the new lesions of ``followup`` against ``baseline`` with a loaded predictor.

    The threshold and minimum lesion volume are ``options``' where given, else the predictor's
    model's own.
    """
    options = options or SegmentOptions()
    settings = options.postprocessing(predictor.postprocessing)
    inputs = model_inputs(baseline, followup, options.inputs())
    seconds = dict(inputs.seconds)

    logger.info("network prediction ...")
    start = time.perf_counter()
    probability, labels_mni, count = predict_lesions(
        inputs.baseline, inputs.followup, inputs.preprocessed.brain_mask, predictor, settings
    )
    seconds["prediction"] = round(time.perf_counter() - start, 2)
    logger.info("network prediction done (%.1f s)", seconds["prediction"])

    start = time.perf_counter()
    to_mni = inputs.preprocessed.followup_to_mni
    labels_native = to_native(labels_mni, followup, to_mni)
    lesions = lesion_table(labels_mni, labels_native, probability, to_mni)
    new_lesions = followup.with_array((labels_native.array > 0).astype(np.uint8))
    seconds["postprocessing"] = round(time.perf_counter() - start, 2)
    logger.info("%d new lesion(s)", count)
    return Segmentation(
        new_lesions,
        labels_mni,
        probability,
        lesions,
        inputs,
        seconds,
        settings,
        options.match_slices,
        labels_native,
    )


@dataclass
class SegmentationSummary:
    """``summary.json``: what was found, with what, on what, and how long it took."""

    new_lesion_count: int
    new_lesion_volume_mm3: float
    threshold: float
    min_lesion_mm3: float
    min_depth_mm: float
    slice_matching: bool
    slice_matches: list[dict[str, Any]]
    model: str
    qc: QualityReport
    warnings: list[str]
    seconds: dict[str, Any]
    #: Per role (``baseline``, ``followup``): ``path`` and ``sha256`` of the file read.
    inputs: dict[str, dict[str, str]]
    versions: dict[str, str]
    #: What ran each network's passes (``hd_bet``, ``lesion_network``): engine and precision.
    engines: dict[str, dict[str, str]] = field(default_factory=dict)
    #: The DICOM objects written beside the NIfTI outputs (``seg``, ``sr``: file names), when
    #: the follow-up was a DICOM series. Segment *n* of the SEG is lesion *n*.
    dicom_outputs: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        result: Segmentation,
        model: str,
        inputs: dict[str, dict[str, str]],
        versions: dict[str, str],
        lesion_network: dict[str, str] | None = None,
    ) -> SegmentationSummary:
        """``lesion_network``: the engine and precision that ran the lesion network."""
        qc = result.preprocessed.qc
        options = qc.options or {}
        hd_bet: dict[str, str] = {
            key: str(options[key]) for key in ("engine", "precision") if key in options
        }
        return cls(
            new_lesion_count=len(result.lesions),
            new_lesion_volume_mm3=round(result.total_volume_mm3, 2),
            threshold=result.postprocessing.threshold,
            min_lesion_mm3=result.postprocessing.min_lesion_mm3,
            min_depth_mm=result.postprocessing.min_depth_mm,
            slice_matching=result.match_slices,
            slice_matches=result.inputs.slice_matches_as_dicts(),
            model=model,
            qc=qc,
            warnings=list(qc.warnings),
            seconds={"preprocessing_steps": dict(qc.seconds), **result.seconds},
            inputs=inputs,
            versions=versions,
            engines={"hd_bet": hd_bet, "lesion_network": dict(lesion_network or {})},
        )

    def as_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["qc"] = self.qc.as_dict()
        return record
