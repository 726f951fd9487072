"""segment end to end on a real open_ms_data pair (raw FLAIRs in) with the shipped model."""

from __future__ import annotations

import json
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


def test_the_summary_says_what_ran_the_networks(segmented_real: dict) -> None:
    """The default engine on the CPU: OpenVINO where installed, PyTorch otherwise."""
    from msnewlesions.engines import resolve_engine
    from msnewlesions.precision import resolve_precision

    engines = json.loads((segmented_real["out"] / "summary.json").read_text())["engines"]
    engine = resolve_engine("auto")
    assert engines["lesion_network"]["engine"] == engines["hd_bet"]["engine"] == engine
    assert engines["lesion_network"]["precision"] == resolve_precision("auto")


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


def test_the_report_of_a_real_pair_is_under_15_mb(segmented_real: dict) -> None:
    assert (segmented_real["out"] / "report.html").stat().st_size < 15 * 1024**2


@pytest.mark.slow  # the review test below opens this report; test_segment.py centres on a lesion
def test_the_report_of_a_real_pair_opens_in_the_viewer(
    segmented_real: dict, tmp_path: Path
) -> None:
    """Headless Chromium (skips without it): ready, and lesion 2 centred."""
    from tests.browser import check_viewer_on_lesion

    report = segmented_real["out"] / "report.html"
    loaded = check_viewer_on_lesion(segmented_real["out"], tmp_path, lesion=2)
    megabytes, ready = report.stat().st_size / 1e6, loaded.body["data-ready-ms"]
    print(f"report {megabytes:.1f} MB, viewer ready {ready} ms")


def test_a_review_in_the_report_of_a_real_pair_becomes_the_reviewed_mask(
    segmented_real: dict, tmp_path: Path
) -> None:
    """Headless Chromium (skips without it): in the report, confirm lesion 1, reject lesion 2,
    add a lesion by a click on the follow-up, save; review apply writes a mask with exactly the
    confirmed and the added lesion. The same review given for another pair is refused."""
    import csv
    import hashlib
    import json
    import shutil

    from msnewlesions.cli import main
    from tests.test_review import review_in_browser

    out = tmp_path / "patient01"
    shutil.copytree(segmented_real["out"], out)
    with (out / "lesions.csv").open() as handle:
        before = list(csv.DictReader(handle))
    assert len(before) >= 3, "the shipped model marks at least 3 lesions in patient01"
    # A clear spot to add: the brightest follow-up rise over the baseline, 20 mm or more from
    # every lesion the model marked.
    centres = [[float(row[f"mni_{a}_mm"]) for a in "xyz"] for row in before]
    seed = _brightest_rise(out, centres)
    saved = review_in_browser(out / "report.html", tmp_path / "profile", tmp_path / "dl", seed)
    assert main(["review", "apply", str(out), str(tmp_path / "dl" / "review.json")]) == 0
    summary = json.loads((out / "summary.json").read_text())["review"]
    assert (summary["confirmed"], summary["rejected"], summary["lesions_after"]) == (1, 1, 2)
    assert summary["undecided"] == len(before) - 2 and summary["added_voxels"] > 0
    with (out / "lesions_reviewed.csv").open() as handle:
        after = {row["origin"]: row for row in csv.DictReader(handle)}
    assert set(after) == {"1", "added"}
    assert after["1"]["voxels_mni"] == before[0]["voxels_mni"]
    assert int(after["added"]["voxels_mni"]) == summary["added_voxels"] == len(saved["added"])
    mask = nib.load(out / "new_lesions_reviewed.nii.gz")
    followup = nib.load(segmented_real["pair"].followup)
    assert mask.shape == followup.shape
    np.testing.assert_array_equal(mask.affine, followup.affine)
    voxels = int(np.asarray(mask.dataobj).astype(bool).sum())
    assert voxels == sum(int(row["voxels_native"]) for row in after.values())
    # Another pair's review: its follow-up's checksum is not this pair's.
    other = dict(saved)
    del other["first_added"]
    patient03 = segmented_real["pair"].followup.parents[1] / "patient03" / "study2_FLAIR.nii.gz"
    other["inputs"]["followup"]["sha256"] = hashlib.sha256(patient03.read_bytes()).hexdigest()
    (tmp_path / "other.json").write_text(json.dumps(other))
    fresh = tmp_path / "fresh"
    shutil.copytree(segmented_real["out"], fresh)
    assert main(["review", "apply", str(fresh), str(tmp_path / "other.json")]) == 1
    assert not (fresh / "new_lesions_reviewed.nii.gz").exists()
    assert "review" not in json.loads((fresh / "summary.json").read_text())


def _brightest_rise(out: Path, centres: list[list[float]]) -> list[float]:
    """The MNI point (mm) where the follow-up rises most over the baseline (smoothed over a
    voxel) in the images the report shows, at least 20 mm from every centre."""
    import base64
    import gzip
    import json
    import re

    from scipy import ndimage

    text = (out / "report.html").read_text(encoding="utf-8")
    found = re.search(r'<script id="viewer-data" type="application/json">(.*?)</script>', text)
    assert found is not None
    data = json.loads(found.group(1))
    images = {
        name: nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(data[name])))
        for name in ("baseline", "followup")
    }
    baseline, followup = (np.asarray(images[n].get_fdata(), np.float32) for n in images)
    affine = images["followup"].affine
    rise = ndimage.gaussian_filter(followup - baseline, 1.0)
    rise[(baseline <= -3) | (followup <= -3)] = -np.inf  # outside the brain (stored as 0)
    points = nib.affines.apply_affine(affine, np.indices(rise.shape).reshape(3, -1).T)
    for centre in centres:
        near = np.linalg.norm(points - np.array(centre), axis=1) < 20
        rise.reshape(-1)[near] = -np.inf
    index = np.unravel_index(int(np.argmax(rise)), rise.shape)
    return [float(v) for v in nib.affines.apply_affine(affine, index)]
