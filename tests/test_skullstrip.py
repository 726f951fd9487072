"""Brain masks of scans that are already brain-extracted, and how such scans are recognised."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from msnewlesions import template
from msnewlesions.example import write_example_pair
from msnewlesions.io import Volume, read_volume
from msnewlesions.preprocessing import pipeline, registration, skullstrip
from msnewlesions.preprocessing.pipeline import preprocess_pair
from msnewlesions.preprocessing.skullstrip import (
    fraction_inside_template_brain,
    looks_skull_stripped,
    nonzero_brain_mask,
)
from tests.conftest import PreprocessOnce, run_cli


def ball(shape: tuple[int, int, int], centre: tuple[int, int, int], radius: float) -> np.ndarray:
    grid = np.indices(shape)
    distance = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)))
    return distance <= radius


def test_nonzero_brain_mask_keeps_dark_ventricles_and_drops_specks() -> None:
    brain = ball((60, 60, 60), (30, 30, 30), 20)
    array = np.where(brain, 100.0, 0.0).astype(np.float32)
    array[ball((60, 60, 60), (30, 30, 30), 5)] = 0.0  # a ventricle darker than the threshold
    array[2, 2, 2] = 100.0  # one bright voxel of ringing outside the brain
    array[~brain & (np.indices(array.shape)[0] % 2 == 0)] += -1.5  # interpolation ringing
    mask = nonzero_brain_mask(Volume(array, np.eye(4))).array
    assert mask.dtype == np.uint8
    # Exactly the brain (the opening by one voxel leaves a ball of radius 20 as it is).
    np.testing.assert_array_equal(mask > 0, brain)


def test_template_brain_counts_as_skull_stripped_and_a_head_around_it_does_not() -> None:
    brain = template.mni_brain_mask()
    inside = brain.array > 0
    scan = brain.with_array(np.where(inside, 100.0, 0.0).astype(np.float32))
    assert fraction_inside_template_brain(scan) == pytest.approx(1.0)
    assert looks_skull_stripped(scan)
    # Skull and scalp: everything within 10 mm of the brain is non-zero. Only what lies within the
    # 3 mm margin counts as inside.
    outer = ndimage.binary_dilation(inside, iterations=10)
    head = brain.with_array(np.where(outer, 100.0, 0.0).astype(np.float32))
    expected = ndimage.binary_dilation(inside, iterations=3).sum() / outer.sum()
    assert fraction_inside_template_brain(head) == pytest.approx(expected, abs=1e-6)
    assert expected < 0.8
    assert not looks_skull_stripped(head)
    assert fraction_inside_template_brain(brain.with_array(np.zeros(brain.shape))) == 0.0


def test_the_example_brain_is_its_own_mask_without_hd_bet(
    tmp_path: Path, preprocess_once: PreprocessOnce
) -> None:
    """The example scans are brain-extracted (a brain, zero outside): their own brain is the
    mask. (The pair test_segment.py preprocesses: PreprocessOnce serves it again.)"""
    files = write_example_pair(tmp_path, seed=4)
    baseline = read_volume(files["baseline"])
    pair = preprocess_once(baseline, read_volume(files["followup"]))
    assert pair.qc.brain_mask_source == "scans (skull-stripped)"
    assert min(pair.qc.nonzero_inside_template_brain.values()) >= 0.95
    # The mask holds the baseline's own brain, carried into MNI space.
    own = (
        registration.resample(
            nonzero_brain_mask(baseline), pair.brain_mask, pair.baseline_to_mni, "nearest"
        ).array
        > 0
    )
    mask = pair.brain_mask.array > 0
    assert (own & mask).sum() / own.sum() >= 0.99


def test_skull_stripped_no_asks_hd_bet_even_for_brain_extracted_scans(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``skull_stripped=False`` overrides the detection: HD-BET makes the mask, once, on the
    average of the two scans; None detects the brain-extracted template and does not run it."""
    calls: list[Volume] = []

    def fake_hdbet(head: Volume, *args: object, **kwargs: object) -> Volume:
        calls.append(head)
        return template.mni_brain_mask()

    monkeypatch.setattr(skullstrip, "hdbet_brain_mask", fake_hdbet)
    brain = template.mni_brain_mask()
    scan = brain.with_array(np.where(brain.array > 0, 100.0, 0.0).astype(np.float32))
    forced = skullstrip.pair_brain_mask(scan, scan, skull_stripped=False)
    assert (forced.source, len(calls)) == ("HD-BET", 1)
    np.testing.assert_allclose(calls[0].array, 2.0 * (brain.array > 0))  # each scaled to 1
    detected = skullstrip.pair_brain_mask(scan, scan)
    assert (detected.source, len(calls)) == ("scans (skull-stripped)", 1)


def test_the_skull_stripped_option_reaches_the_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``preprocess --skull-stripped no|yes|auto`` is the pipeline's False / True / None."""
    seen: list[object] = []

    def record(baseline: Volume, followup: Volume, options: object = None) -> None:
        seen.append(options.skull_stripped)  # type: ignore[attr-defined]
        raise KeyboardInterrupt  # stop there: nothing else is under test

    monkeypatch.setattr(pipeline, "preprocess_pair", record)
    files = write_example_pair(tmp_path / "example", seed=0)
    argv = ["preprocess", "--baseline", files["baseline"], "--followup", files["followup"]]
    for choice in ("no", "yes", "auto"):
        code, _, _ = run_cli(
            [*argv, "--out", str(tmp_path / choice), "--skull-stripped", choice], capsys
        )
        assert code == 130 and not (tmp_path / choice).exists()
    assert seen == [False, True, None]


# A whole preprocessing of a real scan (about 40 s); in the default run the example's
# brain-extracted scans keep their own mask (test_the_example_brain_is_its_own_mask_without_hd_bet).
@pytest.mark.slow
@pytest.mark.real_data
def test_a_real_brain_extracted_flair_keeps_its_whole_brain(open_ms_data: Path) -> None:
    """open_ms_data's brain-extracted FLAIRs: HD-BET dropped 13-25 % of their brain (144-277 ml);
    their own non-zero region keeps all of it."""
    flair = (
        open_ms_data
        / "cross_sectional/MNI/patient19"
        / "FLAIR_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz"
    )
    if not flair.exists():
        pytest.skip(f"{flair} is absent")
    scan = read_volume(flair)
    # The same scan as both visits (a pair of one image is refused: scaled by a hair here).
    pair = preprocess_pair(scan, scan.with_array(scan.array * np.float32(1.001)))
    assert pair.qc.brain_mask_source == "scans (skull-stripped)"
    own = nonzero_brain_mask(scan).array > 0
    mask_native = (
        registration.resample(
            pair.brain_mask, scan, registration.invert(pair.baseline_to_mni), "nearest"
        ).array
        > 0
    )
    assert (own & mask_native).sum() / own.sum() >= 0.99
    assert pair.qc.brain_mask_template_dice >= 0.7  # 0.61 with HD-BET's mask
