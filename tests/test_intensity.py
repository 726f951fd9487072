from __future__ import annotations

import numpy as np
import pytest

from msnewlesions.io import Volume
from msnewlesions.preprocessing.bias import n4_bias_correction
from msnewlesions.preprocessing.intensity import brain_bounding_box, crop, zscore
from tests.conftest import oblique_affine


def _ball(shape: tuple[int, int, int], radius: float) -> np.ndarray:
    grid = np.indices(shape) - (np.array(shape)[:, None, None, None] - 1) / 2
    return (np.sqrt((grid**2).sum(0)) <= radius).astype(np.uint8)


def test_bounding_box_adds_the_margin_in_millimetres() -> None:
    mask = np.zeros((40, 40, 20), np.uint8)
    mask[10:20, 12:30, 8:11] = 1
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    box = brain_bounding_box(Volume(mask, affine), margin_mm=5.0)
    # 5 voxels in-plane (1 mm), 2 slices through-plane (ceil(5/3)); clipped at the array's edge.
    assert box == (slice(5, 25), slice(7, 35), slice(6, 13))


def test_crop_keeps_every_voxel_at_its_world_point() -> None:
    volume = Volume(np.arange(6 * 7 * 8, dtype=np.float32).reshape(6, 7, 8), oblique_affine())
    box = (slice(1, 4), slice(2, 7), slice(3, 5))
    cropped = crop(volume, box)
    assert cropped.shape == (3, 5, 2)
    assert cropped.array[0, 0, 0] == volume.array[1, 2, 3]
    np.testing.assert_allclose(
        cropped.index_to_world([[2, 4, 1]]), volume.index_to_world([[3, 6, 4]]), atol=1e-9
    )


def test_zscore_is_zero_mean_unit_std_inside_and_zero_outside() -> None:
    array = np.zeros((4, 4, 4), np.float32)
    mask = np.zeros((4, 4, 4), np.uint8)
    mask[0, 0, :4] = 1
    array[0, 0, :4] = [2.0, 4.0, 4.0, 6.0]  # mean 4, std sqrt(2)
    array[3, 3, 3] = 100.0  # outside the brain
    result = zscore(Volume(array, np.eye(4)), Volume(mask, np.eye(4))).array
    np.testing.assert_allclose(result[0, 0, :4], np.array([-2, 0, 0, 2]) / np.sqrt(2), rtol=1e-6)
    assert result[3, 3, 3] == 0.0
    assert result.dtype == np.float32


def test_n4_removes_a_smooth_multiplicative_field() -> None:
    shape = (64, 64, 48)
    brain = _ball(shape, 28)
    rng = np.random.default_rng(0)
    # Two tissues (a shell and a core) plus noise, multiplied by a smooth 1.0-2.2 field.
    core = _ball(shape, 14)
    truth = np.where(core, 800.0, 500.0) * brain + rng.normal(0, 10, shape) * brain
    x = np.linspace(0, 1, shape[0])[:, None, None]
    z = np.linspace(0, 1, shape[2])[None, None, :]
    field = 1.0 + 0.8 * x + 0.4 * z**2
    biased = (truth * field).astype(np.float32)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    corrected = n4_bias_correction(Volume(biased, affine), Volume(brain, affine), shrink_factor=2)
    shell = (brain > 0) & (core == 0)

    def variation(values: np.ndarray) -> float:
        return float(values.std() / values.mean())

    before = variation(biased[shell])
    after = variation(corrected.array[shell])
    assert before > 0.1
    assert after < before / 3, (before, after)
    # The contrast between the two tissues survives (about 800 / 500).
    ratio = np.median(corrected.array[core > 0]) / np.median(corrected.array[shell])
    assert ratio == pytest.approx(1.6, rel=0.1)
