"""segment end to end on a real open_ms_data pair (raw FLAIRs in) with the shipped model."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from msnewlesions.io import read_volume
from msnewlesions.model.default import DEFAULT_MODEL
from msnewlesions.preprocessing import model_inputs
from msnewlesions.preprocessing.registration import read_transform
from msnewlesions.validation import mask_agreement, open_ms_pairs
from tests.conftest import PreprocessOnce

pytestmark = pytest.mark.real_data


@pytest.fixture(scope="module")
def segmented_real(
    open_ms_data: Path, tmp_path_factory: pytest.TempPathFactory, preprocess_once: PreprocessOnce
) -> dict:
    from msnewlesions.cli import main

    if not (DEFAULT_MODEL / "plans.json").exists():
        pytest.skip("this checkout ships no default model (model/weights)")
    pair = next(p for p in open_ms_pairs(open_ms_data) if p.patient == "patient01")
    out = tmp_path_factory.mktemp("segment_real") / "patient01"
    argv = ["segment", "--baseline", str(pair.baseline), "--followup", str(pair.followup)]
    # The pair test_preprocess_real.py and test_datasets_real.py preprocess: once (PreprocessOnce).
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(model_inputs, "preprocess_pair", preprocess_once)
        assert main([*argv, "--out", str(out), "-q"]) == 0
    return {"out": out, "pair": pair}


def test_the_mask_has_the_follow_ups_geometry(segmented_real: dict) -> None:
    mask = nib.load(segmented_real["out"] / "new_lesions.nii.gz")
    followup = nib.load(segmented_real["pair"].followup)
    assert mask.shape == followup.shape
    np.testing.assert_array_equal(mask.affine, followup.affine)
    assert mask.get_data_dtype() == np.uint8


def test_native_and_mni_lesions_agree_through_the_saved_transform(segmented_real: dict) -> None:
    out = segmented_real["out"]
    agreement = mask_agreement(
        read_volume(out / "new_lesions.nii.gz"),
        read_volume(out / "new_lesions_mni.nii.gz"),
        read_transform(out / "followup_to_mni.tfm"),
    )
    # The shipped model marks lesions in patient01 (MODEL_CARD.md); none is a regression.
    assert agreement.centroid_distance_mm, "the shipped model found no new lesion in patient01"
    assert agreement.native_voxels_in_mni_lesions > 0.99
    seen = {k: d for k, d in agreement.centroid_distance_mm.items() if not np.isnan(d)}
    assert seen, agreement
    # Lesions larger than a few native voxels: within 1.5 mm. A small lesion is sampled by one
    # or two slices (4 mm thick here), so its native centroid sits on a slice centre: within
    # half a slice (plus half a millimetre).
    large = [d for k, d in seen.items() if agreement.volume_mm3[k] >= 30]
    assert all(d < 1.5 for d in large), agreement
    slice_mm = float(read_volume(out / "new_lesions.nii.gz").spacing.max())
    assert max(seen.values()) < slice_mm / 2 + 0.5, agreement


def test_the_report_of_a_real_pair_opens_in_the_viewer(
    segmented_real: dict, tmp_path: Path
) -> None:
    """Headless Chromium (skips without it): under 15 MB, ready, and lesion 2 centred."""
    from tests.browser import check_viewer_on_lesion

    report = segmented_real["out"] / "report.html"
    assert report.stat().st_size < 15 * 1024**2
    loaded = check_viewer_on_lesion(segmented_real["out"], tmp_path, lesion=2)
    megabytes, ready = report.stat().st_size / 1e6, loaded.body["data-ready-ms"]
    print(f"report {megabytes:.1f} MB, viewer ready {ready} ms")
