"""Slice matching: which scan has thicker slices along which axis, and the other seen like it."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from msnewlesions.io import Volume
from msnewlesions.preprocessing.resolution import axis_sharpness, match_resolution, reslice

SHAPE = (72, 72, 72)


def anatomy(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fine random texture (1 mm detail in every direction) inside a ball-shaped brain."""
    rng = np.random.default_rng(seed)
    texture = ndimage.gaussian_filter(rng.normal(size=SHAPE), 0.8).astype(np.float32)
    texture /= texture.std()
    grid = np.indices(SHAPE) - (np.array(SHAPE)[:, None, None, None] - 1) / 2
    brain = (grid**2).sum(axis=0) <= 32**2
    return 1.0 + 0.2 * texture, brain


def acquisition(image: np.ndarray, brain: np.ndarray, seed: int, noise: float = 0.03) -> np.ndarray:
    """The image with its own Gaussian noise, zero outside the brain."""
    noisy = image + np.random.default_rng(seed).normal(0, noise, image.shape)
    return np.where(brain, noisy, 0).astype(np.float32)


def volumes(*arrays: np.ndarray) -> list[Volume]:
    return [Volume(array.astype(np.float32), np.eye(4)) for array in arrays]


def test_thick_slices_lower_the_sharpness_of_their_own_axis_most() -> None:
    image, brain = anatomy()
    sharp = axis_sharpness(acquisition(image, brain, 1), brain)
    np.testing.assert_allclose(sharp, sharp.mean(), rtol=0.1)  # the texture has no direction
    thick = axis_sharpness(acquisition(reslice(image, 2, 4.0), brain, 2), brain)
    # Averaging through 4 mm slices also smooths the in-plane texture, but far less.
    assert thick[2] / sharp[2] < 0.2 * min(thick[:2] / sharp[:2])


@pytest.mark.parametrize(("axis", "thickness_mm"), [(2, 4.0), (0, 3.0), (1, 5.0)])
def test_a_thin_slice_followup_is_resliced_like_a_thick_slice_baseline(
    axis: int, thickness_mm: float
) -> None:
    image, brain = anatomy()
    baseline_array = acquisition(reslice(image, axis, thickness_mm), brain, 1)
    followup_array = acquisition(image, brain, 2)
    baseline, followup, brain_mask = volumes(baseline_array, followup_array, brain)
    matched_baseline, matched_followup, matches = match_resolution(baseline, followup, brain_mask)
    assert [(m.axis, m.resliced) for m in matches] == [(axis, "followup")]
    assert matches[0].thickness_mm == pytest.approx(thickness_mm, abs=0.75)
    # Before: over 5 times less fine detail along that axis; after: no mismatch left to match.
    before = axis_sharpness(baseline_array, brain) / axis_sharpness(followup_array, brain)
    after = axis_sharpness(matched_baseline.array, brain) / axis_sharpness(
        matched_followup.array, brain
    )
    assert before[axis] < 0.2
    assert 1 / 2.5 < after[axis] < 2.5
    assert match_resolution(matched_baseline, matched_followup, brain_mask)[2] == []
    # Both come back z-scored over the brain, zero outside.
    for matched in (matched_baseline, matched_followup):
        assert matched.array[brain].mean() == pytest.approx(0, abs=1e-4)
        assert matched.array[brain].std() == pytest.approx(1, abs=1e-3)
        assert not matched.array[~brain].any()


def test_the_baseline_is_resliced_when_the_followup_has_the_thick_slices() -> None:
    image, brain = anatomy(3)
    baseline, followup, brain_mask = volumes(
        acquisition(image, brain, 1), acquisition(reslice(image, 2, 4.5), brain, 2), brain
    )
    _, _, matches = match_resolution(baseline, followup, brain_mask)
    assert [(m.axis, m.resliced) for m in matches] == [(2, "baseline")]
    assert matches[0].log10_sharpness_ratio > 0


def test_two_thick_slice_scans_along_different_axes_are_each_matched_to_the_other() -> None:
    image, brain = anatomy(4)
    baseline, followup, brain_mask = volumes(
        acquisition(reslice(image, 2, 4.0), brain, 1),
        acquisition(reslice(image, 0, 4.0), brain, 2),
        brain,
    )
    _, _, matches = match_resolution(baseline, followup, brain_mask)
    assert sorted((m.axis, m.resliced) for m in matches) == [(0, "baseline"), (2, "followup")]


@pytest.mark.parametrize("noise", [0.01, 0.06])
def test_two_acquisitions_with_the_same_slices_are_left_as_they_are(noise: float) -> None:
    image, brain = anatomy(5)
    baseline, followup, brain_mask = volumes(
        acquisition(image, brain, 1, noise=0.03), acquisition(image, brain, 2, noise=noise), brain
    )
    matched_baseline, matched_followup, matches = match_resolution(baseline, followup, brain_mask)
    assert matches == []
    assert matched_baseline is baseline and matched_followup is followup


def test_the_same_thick_slices_in_both_scans_need_no_matching() -> None:
    image, brain = anatomy(6)
    thick = reslice(image, 2, 4.0)
    baseline, followup, brain_mask = volumes(
        acquisition(thick, brain, 1), acquisition(thick, brain, 2), brain
    )
    assert match_resolution(baseline, followup, brain_mask)[2] == []


def test_slice_thickness_is_measured_in_millimetres_on_a_coarser_grid() -> None:
    """On 2 mm voxels, 6 mm slices are 3 voxels thick; the match reports millimetres."""
    image, brain = anatomy(7)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    baseline = Volume(acquisition(reslice(image, 2, 6.0, spacing_mm=2.0), brain, 1), affine)
    followup = Volume(acquisition(image, brain, 2), affine)
    brain_mask = Volume(brain.astype(np.uint8), affine)
    _, _, matches = match_resolution(baseline, followup, brain_mask)
    assert [(m.axis, m.resliced) for m in matches] == [(2, "followup")]
    assert matches[0].thickness_mm == pytest.approx(6.0, abs=1.5)
