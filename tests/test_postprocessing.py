"""Threshold, size filter, lesion numbering, native mapping and the lesion table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from msnewlesions.errors import MSNewLesionsError
from msnewlesions.io import Volume
from msnewlesions.lesions import (
    PostprocessingSettings,
    label_lesions,
    label_maxima,
    lesion_depths_mm,
    model_postprocessing,
    write_model_postprocessing,
)
from msnewlesions.postprocessing import lesion_labels, lesion_table, to_native
from msnewlesions.preprocessing import registration
from tests.conftest import oblique_affine

MNI_AFFINE = np.array([[1.0, 0, 0, -40], [0, 1, 0, -40], [0, 0, 1, -30], [0, 0, 0, 1]])


def probability_map() -> Volume:
    probability = np.zeros((80, 80, 60), np.float32)
    probability[10:13, 10:13, 10:13] = 0.9  # 27 voxels
    probability[11, 11, 11] = 0.97
    probability[40:46, 40:44, 30:33] = 0.6  # 72 voxels: the largest, numbered 1
    probability[60:62, 60:62, 20:22] = 0.55  # 8 voxels
    probability[70, 70, 50:53] = 0.8  # 3 voxels = 3 mm3: dropped
    probability[5:8, 60:63, 5:8] = 0.49  # below the threshold
    return Volume(probability, MNI_AFFINE)


def test_lesions_are_thresholded_size_filtered_and_numbered_by_volume() -> None:
    labels, count = lesion_labels(probability_map(), threshold=0.5, min_lesion_mm3=3.0)
    assert count == 3
    assert labels.array.dtype == np.uint16
    assert (labels.array == 1).sum() == 72 and labels.array[42, 42, 31] == 1
    assert (labels.array == 2).sum() == 27 and labels.array[11, 11, 11] == 2
    assert (labels.array == 3).sum() == 8
    assert labels.array[70, 70, 51] == 0 and labels.array[6, 61, 6] == 0


def test_lesion_table_gives_volumes_centroids_and_peaks() -> None:
    probability = probability_map()
    labels, _ = lesion_labels(probability)
    identity = registration.transform_from_matrix(np.eye(4))
    table = lesion_table(labels, labels, probability, identity)
    assert [lesion.lesion_id for lesion in table] == [1, 2, 3]
    second = table[1]
    assert second.voxels_mni == 27 and second.volume_mm3 == pytest.approx(27.0)
    # Voxels 10..12 -> centre index 11 -> world 11 - 40 = -29 (x, y) and 11 - 30 = -19 (z).
    assert second.centroid_mni_mm == pytest.approx((-29.0, -29.0, -19.0))
    assert second.centroid_native_mm == pytest.approx((-29.0, -29.0, -19.0))
    assert second.max_probability == pytest.approx(0.97)
    row = second.as_row()
    assert row["mni_x_mm"] == -29.0 and row["native_z_mm"] == -19.0 and row["voxels_native"] == 27


def test_native_mask_keeps_lesion_numbers_and_agrees_through_the_transform() -> None:
    probability = probability_map()
    labels, _ = lesion_labels(probability)
    followup_to_mni = sitk.Euler3DTransform()  # an MNI point -> the follow-up point
    followup_to_mni.SetRotation(0.05, -0.04, 0.1)
    followup_to_mni.SetTranslation((3.0, -2.0, 5.0))
    native_grid = Volume(
        np.zeros((110, 110, 30), np.float32),
        oblique_affine(spacing=(0.8, 0.8, 3.0), angles_rad=(0.0, 0.0, 0.0), origin=(45, -55, -45)),
    )
    native = to_native(labels, native_grid, followup_to_mni)
    assert native.same_grid(native_grid)
    assert set(np.unique(native.array)) == {0, 1, 2, 3}
    table = lesion_table(labels, native, probability, followup_to_mni)
    for lesion in table:
        voxels = np.argwhere(native.array == lesion.lesion_id)
        centre_native = native.index_to_world(voxels).mean(axis=0)
        # 3 mm slices sample a lesion coarsely: centroids agree to about half a slice.
        assert np.linalg.norm(centre_native - lesion.centroid_native_mm) < 1.5
        assert lesion.voxels_native == len(voxels)


def brain_box() -> Volume:
    """A brain filling indices 10..74 x 10..74 x 10..54 of the probability map's grid."""
    brain = np.zeros((80, 80, 60), np.uint8)
    brain[10:75, 10:75, 10:55] = 1
    return Volume(brain, MNI_AFFINE)


@pytest.mark.parametrize(("min_depth_mm", "kept_volumes"), [(3.0, [72, 27, 8]), (3.5, [72, 8])])
def test_lesions_that_reach_too_little_inside_the_brain_are_dropped(
    min_depth_mm: float, kept_volumes: list[int]
) -> None:
    """The 27-voxel lesion sits in the brain's corner: its deepest voxel, (12, 12, 12), lies
    3 mm from the nearest voxel outside (index 9 on every axis); the others lie 12 mm or more
    deep. The kept lesions stay numbered by decreasing volume."""
    labels, count = lesion_labels(probability_map(), 0.5, 3.0, brain_box(), min_depth_mm)
    assert count == len(kept_volumes)
    assert np.bincount(labels.array.ravel())[1:].tolist() == kept_volumes


def test_a_lesion_depth_is_measured_in_mm_with_the_voxels_own_size() -> None:
    """3 mm slices: a voxel two slices from the array's end (outside the brain) is 6 mm deep,
    though it lies 11 voxels (11 mm) from the nearest edge in-plane."""
    mask = np.zeros((30, 30, 10), bool)
    mask[10, 10, 1] = True  # depth: min(11 x 1 mm, 2 x 3 mm)
    mask[15, 15, 5] = True  # depth: min(15 x 1 mm, 5 x 3 mm) = 15 mm
    labels, count = label_lesions(mask, 3.0, 0.0)
    depths = lesion_depths_mm(labels, count, np.ones(mask.shape), (1.0, 1.0, 3.0))
    assert depths.tolist() == [6.0, 15.0]
    # Measured only up to 7 mm (each lesion in its own box): exact below, at least 7 above.
    local = lesion_depths_mm(labels, count, np.ones(mask.shape), (1.0, 1.0, 3.0), up_to_mm=7.0)
    assert local[0] == 6.0 and local[1] >= 7.0
    outside = np.ones(mask.shape)
    outside[10, 10, 1] = 0
    assert lesion_depths_mm(labels, count, outside, (1.0, 1.0, 3.0))[0] == 0.0


def test_a_depth_rule_without_the_parenchyma_is_refused() -> None:
    with pytest.raises(ValueError, match="needs the brain's parenchyma"):
        lesion_labels(probability_map(), 0.5, 3.0, None, 3.0)


def test_no_lesion_gives_an_empty_table() -> None:
    empty = Volume(np.zeros((10, 10, 10), np.float32), MNI_AFFINE)
    labels, count = lesion_labels(empty)
    identity = registration.transform_from_matrix(np.eye(4))
    assert count == 0 and lesion_table(labels, labels, empty, identity) == []


def test_a_models_own_settings_are_read_back_and_options_override_them(tmp_path: Path) -> None:
    from msnewlesions.segment import SegmentOptions

    assert model_postprocessing(tmp_path) == PostprocessingSettings(0.5, 3.0)  # no file: defaults
    write_model_postprocessing(tmp_path, PostprocessingSettings(0.4, 10.0), "validation split")
    saved = model_postprocessing(tmp_path)
    assert saved == PostprocessingSettings(0.4, 10.0)
    assert SegmentOptions().postprocessing(saved) == saved
    assert SegmentOptions(threshold=0.6).postprocessing(saved) == PostprocessingSettings(0.6, 10.0)
    assert SegmentOptions(min_lesion_mm3=0.0).postprocessing(saved) == PostprocessingSettings(
        0.4, 0.0
    )
    assert saved.min_depth_mm == 0.0  # a file without the depth rule has none
    write_model_postprocessing(tmp_path, PostprocessingSettings(0.4, 10.0, 3.0), "validation")
    with_depth = model_postprocessing(tmp_path)
    assert with_depth == PostprocessingSettings(0.4, 10.0, 3.0)
    assert SegmentOptions(min_depth_mm=0.0).postprocessing(with_depth).min_depth_mm == 0.0
    # The model's 0.4 takes in the 0.49 block (27 voxels); its 10 mm3 drops the 8-voxel lesion.
    labels, count = lesion_labels(probability_map(), saved.threshold, saved.min_lesion_mm3)
    assert count == 3
    assert sorted(np.bincount(labels.array.ravel())[1:].tolist()) == [27, 27, 72]


def test_a_broken_settings_file_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "postprocessing.json").write_text('{"threshold": "high"}')
    with pytest.raises(MSNewLesionsError, match="not a valid post-processing file"):
        model_postprocessing(tmp_path)


def test_each_label_gets_the_largest_value_inside_it_and_an_absent_one_zero() -> None:
    values = np.arange(24, dtype=float).reshape(2, 3, 4)  # value = 12 i + 4 j + k
    labels = np.zeros((2, 3, 4), np.int32)
    labels[0, 0, :2] = 1  # values 0, 1
    labels[1, 2, 3] = 1  # 23: the same label, far from the first voxels
    labels[0, 1, 1] = 3  # 5 (label 2 has no voxel)
    np.testing.assert_array_equal(label_maxima(values, labels, 3), [23.0, 0.0, 5.0])
