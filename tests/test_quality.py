"""The QC's registration check: edge alignment of two registered visits."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from msnewlesions import template
from msnewlesions.example import flair_like
from msnewlesions.io import Volume
from msnewlesions.preprocessing.quality import edge_alignment


@pytest.fixture(scope="module")
def visits() -> tuple[Volume, Volume, Volume]:
    """A FLAIR-like baseline, a follow-up of other tissue contrasts on the same grid, the brain."""
    brain = template.mni_brain_mask()
    white = template.mni_white_matter().array
    grey = template.mni_grey_matter().array
    csf = np.clip(brain.array - white - grey, 0, 1)
    other = ndimage.gaussian_filter(420 * white + 520 * grey + 300 * csf, 0.7).astype(np.float32)
    return flair_like(seed=3), brain.with_array(other), brain


def _moved(volume: Volume, shift_voxels: tuple[float, float, float]) -> Volume:
    return volume.with_array(ndimage.shift(volume.array, shift_voxels, order=3))


def test_aligned_visits_of_different_contrast_have_parallel_edges_and_no_shift(visits) -> None:
    baseline, followup, brain = visits
    edges = edge_alignment(baseline, followup, brain)
    assert edges.score > 0.8
    assert edges.residual_shift_mm is not None
    assert np.abs(edges.residual_shift_mm).max() < 0.1
    # Blind to the sign of the contrast: an inverted follow-up reads the same.
    inverted = edge_alignment(baseline, followup.with_array(-followup.array), brain)
    assert inverted.score == pytest.approx(edges.score)


def test_a_known_shift_of_the_follow_up_is_read_back(visits) -> None:
    """Moved +0.5 voxel along x and -0.3 along z (1 mm grid): the shift that would align the
    visits again is -0.5 and +0.3 mm, within 0.15 mm."""
    baseline, followup, brain = visits
    edges = edge_alignment(baseline, _moved(followup, (0.5, 0.0, -0.3)), brain)
    assert edges.residual_shift_mm is not None
    np.testing.assert_allclose(edges.residual_shift_mm, [-0.5, 0.0, 0.3], atol=0.15)
    aligned = edge_alignment(baseline, followup, brain).score
    assert edges.score < aligned


def test_visits_two_voxels_apart_have_no_residual_to_report(visits) -> None:
    baseline, followup, brain = visits
    assert (
        edge_alignment(baseline, _moved(followup, (2.0, 0.0, 0.0)), brain).residual_shift_mm is None
    )


def test_the_qc_warns_when_the_visits_edges_are_more_than_half_a_millimetre_apart(visits) -> None:
    from msnewlesions.preprocessing.quality import measure_quality

    baseline, followup, brain = visits
    warned = []
    for shift in (0.0, 0.8):
        moved = _moved(followup, (shift, 0.0, 0.0))
        qc = measure_quality((baseline, moved), (baseline, moved), brain, brain, 0.0)
        warned.append([w for w in qc.warnings if "edges" in w])
    assert warned[0] == []
    assert len(warned[1]) == 1 and "mm apart after registration" in warned[1][0]
