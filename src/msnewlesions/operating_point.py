"""Scoring probability maps at an operating point, and choosing one on held-out cases.

An operating point is ``segment``'s post-processing (:class:`PostprocessingSettings`: threshold,
minimum lesion volume, minimum depth). A case is scored as ``segment`` marks it
(:func:`~msnewlesions.postprocessing.lesion_labels`) against its reference with MSSEG-2's
lesion-wise detection (:func:`~msnewlesions.metrics.case_metrics`). Over many cases:

* mean Dice and lesion F1 over the cases with new lesions, false lesions per case without;
* the *pooled* lesion F1: detected lesions / all reference lesions, true marks / all marks (the
  empty cases' false marks included), which :func:`choose_operating_point` maximises; near ties
  (``tie_margin``) go to ``prefer`` when given (a base model's own setting: few cases should not
  move it for nothing), then to the smaller minimum volume and the threshold nearest 0.5.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from msnewlesions.io import Volume
from msnewlesions.lesions import PostprocessingSettings
from msnewlesions.metrics import CaseMetrics, case_metrics
from msnewlesions.postprocessing import lesion_labels

THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
MIN_VOLUMES_MM3 = (3.0, 5.0, 8.0, 10.0, 15.0, 20.0)


@dataclass(frozen=True)
class ScoredCase:
    """A case's probability map, reference mask and parenchyma, all on one grid."""

    name: str
    probability: Volume
    reference: Volume
    parenchyma: Volume | None = None


@dataclass(frozen=True)
class PointScore:
    """How a set of cases scores at one operating point."""

    settings: PostprocessingSettings
    dice: float | None
    lesion_f1: float | None
    false_lesions_per_empty_case: float | None
    pooled_lesion_f1: float
    cases: tuple[tuple[str, CaseMetrics], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return asdict(self.settings) | {
            "dice": self.dice,
            "lesion_f1": self.lesion_f1,
            "false_lesions_per_empty_case": self.false_lesions_per_empty_case,
            "pooled_lesion_f1": self.pooled_lesion_f1,
            "cases": {name: metrics.as_dict() for name, metrics in self.cases},
        }


def score_case(case: ScoredCase, settings: PostprocessingSettings) -> CaseMetrics:
    """One case marked as ``segment`` marks it and scored against its reference."""
    labels, _ = lesion_labels(
        case.probability,
        settings.threshold,
        settings.min_lesion_mm3,
        case.parenchyma if settings.min_depth_mm > 0 else None,
        settings.min_depth_mm,
    )
    return case_metrics(labels.array > 0, case.reference.array > 0, case.reference.voxel_volume_mm3)


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def score_cases(cases: Sequence[ScoredCase], settings: PostprocessingSettings) -> PointScore:
    """Every case at one operating point, and the summary figures."""
    scored = [(case.name, score_case(case, settings)) for case in cases]
    dice, f1, false_lesions = [], [], []
    detected = true_marks = references = marks = 0
    for _, metrics in scored:
        marks += metrics.n_pred_lesions
        if metrics.n_ref_lesions > 0:
            dice.append(metrics.dice)
            f1.append(metrics.lesion_f1 or 0.0)
            references += metrics.n_ref_lesions
            detected += round((metrics.lesion_sensitivity or 0.0) * metrics.n_ref_lesions)
            true_marks += round((metrics.lesion_ppv or 0.0) * metrics.n_pred_lesions)
        else:
            false_lesions.append(metrics.n_pred_lesions)
    sensitivity = detected / references if references else 0.0
    ppv = true_marks / marks if marks else 0.0
    pooled = 2 * sensitivity * ppv / (sensitivity + ppv) if sensitivity + ppv else 0.0
    return PointScore(settings, _mean(dice), _mean(f1), _mean(false_lesions), pooled, tuple(scored))


def grid(
    min_depth_mm: float,
    thresholds: Iterable[float] = THRESHOLDS,
    min_volumes_mm3: Iterable[float] = MIN_VOLUMES_MM3,
) -> list[PostprocessingSettings]:
    """The operating points tried (the minimum depth is set beforehand, not chosen)."""
    volumes = list(min_volumes_mm3)
    return [PostprocessingSettings(t, v, min_depth_mm) for t in thresholds for v in volumes]


def choose_operating_point(
    cases: Sequence[ScoredCase],
    candidates: Sequence[PostprocessingSettings],
    prefer: PostprocessingSettings | None = None,
    tie_margin: float = 0.005,
) -> tuple[PointScore, list[PointScore]]:
    """The candidate with the best pooled lesion F1 (ties as the module says), and all scores."""
    if not cases:
        raise ValueError("an operating point is chosen on at least one case")
    scores = [score_cases(cases, settings) for settings in candidates]
    best = max(score.pooled_lesion_f1 for score in scores)
    near = [s for s in scores if s.pooled_lesion_f1 >= best - tie_margin]
    preferred = [s for s in near if prefer is not None and s.settings == prefer]
    if preferred:
        return preferred[0], scores
    choice = min(near, key=lambda s: (s.settings.min_lesion_mm3, abs(s.settings.threshold - 0.5)))
    return choice, scores
