"""Metrics of one case: the paper's voxel-wise Dice and recall, and MSSEG-2's lesion-wise
detection, computed as animaSegPerfAnalyzer (the challenge's evaluation tool) computes them.

Voxel-wise (on the masks as given, no size filter): ``dice`` and ``recall``; with an empty
reference both are 1.0 when the prediction is empty too and 0.0 otherwise (the paper's rule).

Lesion-wise (anima's ``getDetectionMarks``):

* lesions as :mod:`msnewlesions.lesions` defines them (6-connected components of more than
  ``min_lesion_mm3``); smaller components are removed from both masks first and count as
  background from then on;
* a reference lesion is *detected* when more than ``alpha`` of its voxels are covered by predicted
  lesions and, going through the predicted lesions in decreasing order of their overlap with it
  while the overlaps seen so far make up less than ``gamma`` of its covered voxels, none has more
  than ``beta`` of its own voxels outside every reference lesion;
* the same test with the masks' roles swapped decides which predicted lesions are true positives;
* ``lesion_sensitivity`` = detected / reference lesions, ``lesion_ppv`` = true positive / predicted
  lesions, ``lesion_f1`` = 2 PS / (P + S).

One quirk of anima is kept so that figures stay comparable with MSSEG-2's: the walk through the
overlapping lesions also stops after as many steps as the row side has labels, background included
(``k < NbLabelsRef`` in ``falsePositiveRatioTester``), counting the lesion as detected.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from msnewlesions.lesions import MIN_LESION_MM3, label_lesions

#: anima's parameters as used for MSSEG-2: coverage, outside share and walk fraction.
ALPHA = 0.10
BETA = 0.70
GAMMA = 0.65


@dataclass(frozen=True)
class CaseMetrics:
    """The metrics of one case; lesion-wise ratios are None when the reference is empty."""

    dice: float
    recall: float
    lesion_sensitivity: float | None
    lesion_ppv: float | None
    lesion_f1: float | None
    n_ref_lesions: int
    n_pred_lesions: int
    pred_lesion_volume_mm3: float

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def dice(first: np.ndarray, second: np.ndarray) -> float:
    """Dice overlap of two binary arrays (non-zero is inside); 1.0 when both are empty."""
    a, b = np.asarray(first) > 0, np.asarray(second) > 0
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(a & b)) / total


def dice_recall(prediction: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """Voxel-wise Dice and recall of two binary masks, with the paper's empty-reference rule."""
    predicted = prediction > 0
    truth = reference > 0
    n_truth = int(truth.sum())
    n_predicted = int(predicted.sum())
    if n_truth == 0:
        score = 1.0 if n_predicted == 0 else 0.0
        return score, score
    overlap = int(np.count_nonzero(predicted & truth))
    return dice(predicted, truth), overlap / n_truth


def overlap_table(
    reference_labels: np.ndarray, prediction_labels: np.ndarray, n_reference: int, n_prediction: int
) -> np.ndarray:
    """``table[i, j]``: voxels in reference label i and predicted label j (0 = background)."""
    combined = reference_labels.astype(np.int64) * (n_prediction + 1) + prediction_labels
    counts = np.bincount(combined.ravel(), minlength=(n_reference + 1) * (n_prediction + 1))
    return counts.reshape(n_reference + 1, n_prediction + 1)


def detected_lesions(
    table: np.ndarray, alpha: float = ALPHA, beta: float = BETA, gamma: float = GAMMA
) -> np.ndarray:
    """Which row lesions (rows 1..n of ``table``) are detected by the column lesions.

    ``table`` is an overlap table whose row and column 0 are background. Use the transposed table
    to ask which column lesions are true positives.
    """
    n_rows = table.shape[0]
    column_sizes = table.sum(axis=0)
    detected = np.zeros(n_rows - 1, dtype=bool)
    for row in range(1, n_rows):
        overlaps = table[row, 1:]
        covered = int(overlaps.sum())
        missed = int(table[row, 0])
        if covered + missed == 0 or covered / (covered + missed) <= alpha:
            continue
        order = np.argsort(-overlaps, kind="stable") + 1  # column labels, largest overlap first
        accounted = 0.0
        rejected = False
        step = 0
        while accounted < gamma and step < n_rows and step < len(order):
            column = order[step]
            outside = table[0, column] / column_sizes[column]
            if outside > beta:
                rejected = True
                break
            accounted += table[row, column] / covered
            step += 1
        detected[row - 1] = not rejected
    return detected


def case_metrics(
    prediction: np.ndarray,
    reference: np.ndarray,
    voxel_mm3: float,
    min_lesion_mm3: float = MIN_LESION_MM3,
    alpha: float = ALPHA,
    beta: float = BETA,
    gamma: float = GAMMA,
) -> CaseMetrics:
    """All metrics of one case from two binary masks on the same grid."""
    if prediction.shape != reference.shape:
        raise ValueError(f"shapes differ: {prediction.shape} and {reference.shape}")
    dice, recall = dice_recall(prediction, reference)
    # Lesion-wise work only needs the box around both masks.
    union = (prediction > 0) | (reference > 0)
    if union.any():
        box = tuple(slice(int(a.min()), int(a.max()) + 1) for a in np.nonzero(union))
        prediction, reference = prediction[box], reference[box]
    reference_labels, n_reference = label_lesions(reference, voxel_mm3, min_lesion_mm3)
    prediction_labels, n_prediction = label_lesions(prediction, voxel_mm3, min_lesion_mm3)
    predicted_volume = float(np.count_nonzero(prediction_labels) * voxel_mm3)
    if n_reference == 0:
        return CaseMetrics(dice, recall, None, None, None, 0, n_prediction, predicted_volume)
    table = overlap_table(reference_labels, prediction_labels, n_reference, n_prediction)
    sensitivity = float(detected_lesions(table, alpha, beta, gamma).mean())
    if n_prediction == 0:
        ppv = 0.0
    else:
        ppv = float(detected_lesions(table.T, alpha, beta, gamma).mean())
    f1 = 0.0 if sensitivity + ppv == 0 else 2 * ppv * sensitivity / (ppv + sensitivity)
    return CaseMetrics(
        dice, recall, sensitivity, ppv, f1, n_reference, n_prediction, predicted_volume
    )
