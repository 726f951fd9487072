"""Each metric rule on masks drawn by hand; expected values are worked out in the comments."""

from __future__ import annotations

import numpy as np
import pytest

from msnewlesions.metrics import case_metrics, dice_recall


def empty(shape: tuple[int, int, int] = (30, 30, 30)) -> np.ndarray:
    return np.zeros(shape, dtype=bool)


def cube(mask: np.ndarray, corner: tuple[int, int, int], size: tuple[int, int, int]) -> np.ndarray:
    x, y, z = corner
    a, b, c = size
    mask[x : x + a, y : y + b, z : z + c] = True
    return mask


def test_both_empty_scores_one_and_has_no_lesion_ratios() -> None:
    result = case_metrics(empty(), empty(), voxel_mm3=1.0)
    assert (result.dice, result.recall) == (1.0, 1.0)
    assert result.lesion_sensitivity is None and result.lesion_ppv is None
    assert result.lesion_f1 is None
    assert (result.n_ref_lesions, result.n_pred_lesions, result.pred_lesion_volume_mm3) == (0, 0, 0)


def test_empty_reference_counts_false_positive_lesions_and_their_volume() -> None:
    prediction = cube(empty(), (1, 1, 1), (2, 2, 2))  # 8 voxels
    cube(prediction, (10, 10, 10), (3, 3, 3))  # 27 voxels
    cube(prediction, (20, 20, 20), (1, 1, 2))  # 2 voxels = 2 mm3 <= 3 mm3: not a lesion
    result = case_metrics(prediction, empty(), voxel_mm3=1.0)
    assert (result.dice, result.recall) == (0.0, 0.0)
    assert result.lesion_f1 is None
    assert result.n_pred_lesions == 2
    assert result.pred_lesion_volume_mm3 == pytest.approx(35.0)


def test_a_perfect_prediction_scores_one_everywhere() -> None:
    reference = cube(empty(), (1, 1, 1), (3, 3, 3))
    cube(reference, (15, 15, 15), (4, 2, 2))
    result = case_metrics(reference.copy(), reference, voxel_mm3=1.0)
    assert (result.dice, result.recall) == (1.0, 1.0)
    assert (result.lesion_sensitivity, result.lesion_ppv, result.lesion_f1) == (1.0, 1.0, 1.0)
    assert (result.n_ref_lesions, result.n_pred_lesions) == (2, 2)


def test_one_hit_one_miss_one_false_positive() -> None:
    reference = cube(empty(), (1, 1, 1), (3, 3, 3))  # A, found
    cube(reference, (10, 10, 10), (3, 3, 3))  # B, missed
    prediction = cube(empty(), (1, 1, 1), (3, 3, 3))  # A
    cube(prediction, (20, 20, 20), (3, 3, 3))  # C, false positive
    result = case_metrics(prediction, reference, voxel_mm3=1.0)
    # Dice = 2 * 27 / (54 + 54); recall = 27 / 54.
    assert result.dice == pytest.approx(0.5) and result.recall == pytest.approx(0.5)
    assert result.lesion_sensitivity == pytest.approx(0.5)
    assert result.lesion_ppv == pytest.approx(0.5)
    assert result.lesion_f1 == pytest.approx(0.5)


@pytest.mark.parametrize(("covered", "detected"), [(10, False), (11, True)])
def test_coverage_must_be_strictly_above_alpha(covered: int, detected: bool) -> None:
    reference = cube(empty(), (5, 5, 5), (5, 5, 4))  # 100 voxels
    prediction = empty()
    flat = np.argwhere(reference)[:covered]  # the first voxels in C order: one connected piece
    prediction[tuple(flat.T)] = True
    result = case_metrics(prediction, reference, voxel_mm3=1.0)
    assert result.lesion_sensitivity == (1.0 if detected else 0.0)
    # Swapped roles: the prediction is covered wholly, but the reference lesion has 89-90 % of its
    # voxels outside every predicted lesion (> beta): a small piece is not a true positive.
    assert result.lesion_ppv == 0.0


def test_a_blob_swallowing_a_small_lesion_is_neither_detection_nor_true_positive() -> None:
    reference = cube(empty(), (10, 10, 10), (2, 2, 2))  # 8 voxels
    prediction = cube(empty(), (5, 5, 5), (10, 10, 10))  # 1000 voxels around it
    result = case_metrics(prediction, reference, voxel_mm3=1.0)
    # Coverage of the lesion is 100 % but 992/1000 > beta of the blob lies outside it;
    # the blob itself is covered 8/1000 <= alpha.
    assert result.lesion_sensitivity == 0.0
    assert result.lesion_ppv == 0.0
    assert result.lesion_f1 == 0.0
    assert result.recall == 1.0


def test_a_lesion_detected_by_a_prediction_that_is_not_a_true_positive() -> None:
    prediction = cube(empty((30, 30, 30)), (10, 10, 10), (10, 10, 2))  # P: 200 voxels
    reference = cube(empty((30, 30, 30)), (10, 10, 10), (2, 2, 2))  # R1: 8 voxels inside P
    cube(reference, (14, 10, 0), (6, 10, 11))  # R2: 660 voxels, 60 of them inside P
    result = case_metrics(prediction, reference, voxel_mm3=1.0)
    # R1: covered 8/8; P has 132/200 = 0.66 <= beta outside the reference: detected.
    # R2: covered 60/660 = 0.09 <= alpha: missed.  Sensitivity 1/2.
    # P: covered 68/200 > alpha, but its largest overlap, R2, has 600/660 > beta outside P.
    assert result.lesion_sensitivity == pytest.approx(0.5)
    assert result.lesion_ppv == 0.0
    assert result.lesion_f1 == 0.0


def test_anisotropic_voxels_set_volumes_and_the_size_filter() -> None:
    voxel_mm3 = 0.5 * 0.5 * 3.0  # 0.75 mm3
    reference = cube(empty(), (1, 1, 1), (2, 2, 1))  # 4 voxels = 3.0 mm3: removed (<= 3)
    cube(reference, (10, 10, 10), (5, 1, 1))  # 5 voxels = 3.75 mm3: kept
    prediction = reference.copy()
    result = case_metrics(prediction, reference, voxel_mm3=voxel_mm3)
    assert result.n_ref_lesions == 1 and result.n_pred_lesions == 1
    assert result.pred_lesion_volume_mm3 == pytest.approx(3.75)
    assert result.dice == 1.0  # voxel-wise metrics see the masks as given


def test_small_components_become_background_in_both_masks() -> None:
    reference = cube(empty(), (1, 1, 1), (3, 3, 3))
    cube(reference, (20, 20, 20), (3, 1, 1))  # 3 mm3: removed from the reference
    prediction = cube(empty(), (1, 1, 1), (3, 3, 3))
    cube(prediction, (10, 10, 10), (1, 1, 3))  # 3 mm3: removed from the prediction
    filtered = case_metrics(prediction, reference, voxel_mm3=1.0)
    assert (filtered.n_ref_lesions, filtered.n_pred_lesions) == (1, 1)
    assert filtered.lesion_f1 == 1.0
    unfiltered = case_metrics(prediction, reference, voxel_mm3=1.0, min_lesion_mm3=0.0)
    assert (unfiltered.n_ref_lesions, unfiltered.n_pred_lesions) == (2, 2)
    assert unfiltered.lesion_sensitivity == 0.5 and unfiltered.lesion_ppv == 0.5


def test_lesions_are_six_connected() -> None:
    reference = cube(empty(), (1, 1, 1), (2, 2, 2))
    cube(reference, (3, 3, 3), (2, 2, 2))  # touches the first only at a corner
    result = case_metrics(reference.copy(), reference, voxel_mm3=1.0)
    assert result.n_ref_lesions == 2


def test_anima_stops_the_walk_after_as_many_steps_as_row_labels() -> None:
    """One reference lesion (2 row labels with background) split among four predictions.

    In overlap order P1 (48), P2 (32), P3 (32), P4 (32): after two steps 80/144 = 0.56 < gamma,
    and anima stops there, counting the lesion as detected, although P3 has 100/132 > beta of its
    voxels outside the reference.
    """
    reference = cube(empty((40, 40, 40)), (5, 5, 5), (12, 4, 4))  # 192 voxels
    prediction = cube(empty((40, 40, 40)), (5, 5, 5), (3, 4, 4))  # P1: 48 inside
    cube(prediction, (9, 5, 5), (2, 4, 4))  # P2: 32 inside
    cube(prediction, (12, 5, 5), (2, 4, 4))  # P3: 32 inside ...
    cube(prediction, (12, 5, 9), (2, 2, 25))  # ... and 100 outside
    cube(prediction, (15, 5, 5), (2, 4, 4))  # P4: 32 inside
    result = case_metrics(prediction, reference, voxel_mm3=1.0)
    assert result.n_pred_lesions == 4
    assert result.lesion_sensitivity == 1.0


def test_dice_recall_on_plain_arrays() -> None:
    prediction = np.array([1, 1, 0, 0], bool).reshape(1, 1, 4)
    reference = np.array([1, 0, 1, 1], bool).reshape(1, 1, 4)
    dice, recall = dice_recall(prediction, reference)
    assert dice == pytest.approx(2 * 1 / 5) and recall == pytest.approx(1 / 3)
