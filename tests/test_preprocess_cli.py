"""``msnewlesions preprocess`` end to end on the example pair, and each way a user can misuse it."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from msnewlesions import template
from msnewlesions.example import make_example_pair, write_example_pair
from msnewlesions.io import Volume, read_volume, write_volume
from msnewlesions.preprocessing import pipeline, registration
from msnewlesions.preprocessing.pipeline import OUTPUT_FILES
from tests.conftest import PreprocessOnce, run_cli


@pytest.fixture(scope="module")
def example_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return write_example_pair(tmp_path_factory.mktemp("example"), seed=4)


@pytest.fixture(scope="module")
def preprocessed(
    example_files: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
    preprocess_once: PreprocessOnce,
) -> Path:
    """The command on the example pair. The pipeline runs for real, once per session for this
    pair (PreprocessOnce: seed 4, the pair test_segment.py and test_default_model.py segment)."""
    from msnewlesions.cli import main

    out = tmp_path_factory.mktemp("run") / "preprocessed"
    argv = ["preprocess", "--baseline", example_files["baseline"]]
    argv += ["--followup", example_files["followup"], "--out", str(out), "--quiet"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipeline, "preprocess_pair", preprocess_once)
        assert main(argv) == 0
    return out


def test_preprocess_writes_the_design_contract(preprocessed: Path) -> None:
    assert sorted(p.name for p in preprocessed.iterdir()) == sorted(OUTPUT_FILES)
    baseline = nib.load(preprocessed / "baseline_mni.nii.gz")
    followup = nib.load(preprocessed / "followup_mni.nii.gz")
    mask = nib.load(preprocessed / "brainmask_mni.nii.gz")
    assert baseline.get_data_dtype() == np.float32 and followup.get_data_dtype() == np.float32
    assert mask.get_data_dtype() == np.uint8
    assert baseline.shape == followup.shape == mask.shape
    np.testing.assert_allclose(baseline.affine, mask.affine)
    np.testing.assert_allclose(np.linalg.norm(baseline.affine[:3, :3], axis=0), 1.0)
    # Cropped from the MNI 1 mm grid: same axes, whole-voxel offset.
    offset = np.linalg.solve(template.mni_t1().affine, baseline.affine)[:3, 3]
    np.testing.assert_allclose(offset, np.round(offset), atol=1e-4)
    qc = json.loads((preprocessed / "qc.json").read_text())
    for key in ("timepoint_correlation_in_brain", "brain_volume_ml", "voxel_size_mm", "seconds"):
        assert key in qc
    assert qc["voxel_size_mm"]["followup_in"] == [1.0, 1.0, 3.0]


def test_images_are_zscored_inside_the_brain_and_zero_outside(preprocessed: Path) -> None:
    mask = read_volume(preprocessed / "brainmask_mni.nii.gz").array > 0
    for name in ("baseline_mni.nii.gz", "followup_mni.nii.gz"):
        array = read_volume(preprocessed / name).array
        assert abs(array[mask].mean()) < 1e-3
        assert array[mask].std() == pytest.approx(1.0, abs=1e-3)
        assert not array[~mask].any()


def test_saved_transforms_map_mni_points_to_each_native_scan(preprocessed: Path) -> None:
    """The example's baseline is on the MNI grid and its follow-up is moved by a known transform."""
    pair = make_example_pair(seed=4)
    brain = template.mni_brain_mask()
    points = brain.index_to_world(np.argwhere(brain.array > 0)[::97])
    baseline_to_mni = registration.read_transform(preprocessed / "baseline_to_mni.tfm")
    followup_to_mni = registration.read_transform(preprocessed / "followup_to_mni.tfm")
    baseline_points = registration.transform_points_ras(baseline_to_mni, points)
    assert np.linalg.norm(baseline_points - points, axis=1).mean() < 1.0
    # followup_to_mni must send each MNI point where the follow-up shows the same anatomy.
    expected = registration.transform_points_ras(
        registration.invert(pair.baseline_to_followup), baseline_points
    )
    found = registration.transform_points_ras(followup_to_mni, points)
    assert np.linalg.norm(found - expected, axis=1).mean() < 0.5


def test_new_lesions_are_brighter_at_follow_up_after_preprocessing(
    preprocessed: Path, example_files: dict[str, str]
) -> None:
    grid = read_volume(preprocessed / "brainmask_mni.nii.gz")
    followup_to_mni = registration.read_transform(preprocessed / "followup_to_mni.tfm")
    lesions = registration.resample(
        read_volume(example_files["true_new_lesions"]), grid, followup_to_mni, "nearest"
    )
    inside = lesions.array > 0
    difference = (
        read_volume(preprocessed / "followup_mni.nii.gz").array
        - read_volume(preprocessed / "baseline_mni.nii.gz").array
    )
    assert inside.sum() > 100
    assert np.median(difference[inside]) > 1.0
    assert abs(np.median(difference[(grid.array > 0) & ~inside])) < 0.2


def _write(folder: Path, name: str, array: np.ndarray, affine: np.ndarray | None = None) -> str:
    path = folder / name
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), path)
    return str(path)


BAD_FOLLOWUPS = {
    "missing": (lambda d: str(d / "nothing.nii.gz"), "does not exist"),
    "not an image": (lambda d: _text(d), "not a readable NIfTI"),
    "4-D": (lambda d: _write(d, "4d.nii.gz", np.ones((8, 8, 8, 2), np.float32)), "3-D image"),
    "all zero": (lambda d: _write(d, "zero.nii.gz", np.zeros((8, 8, 8), np.float32)), "empty"),
    "NaN": (lambda d: _write(d, "nan.nii.gz", np.full((8, 8, 8), np.nan, np.float32)), "NaN"),
}


def _text(folder: Path) -> str:
    path = folder / "report.nii.gz"
    path.write_text("not an image")
    return str(path)


@pytest.mark.parametrize("case", sorted(BAD_FOLLOWUPS))
def test_bad_input_gives_one_line_and_no_output(
    case: str, example_files: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make, message = BAD_FOLLOWUPS[case]
    out = tmp_path / "out"
    argv = ["preprocess", "--baseline", example_files["baseline"], "--followup", make(tmp_path)]
    code, _, err = run_cli([*argv, "--out", str(out), "--quiet"], capsys)
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and message in err
    assert not out.exists()


def test_a_pair_that_cannot_be_registered_is_refused(
    example_files: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A FLAIR against pure noise: the quality check catches it instead of writing garbage."""
    followup = read_volume(example_files["followup"])
    # The follow-up's field of view with voxels twice as large: pure noise all the same, and the
    # registrations that try to fit it cost an eighth.
    shape = tuple(size // 2 for size in followup.shape)
    affine = followup.affine @ np.diag([2.0, 2.0, 2.0, 1.0])
    noise = np.random.default_rng(0).uniform(0, 1000, shape).astype(np.float32)
    write_volume(Volume(noise, affine), tmp_path / "noise.nii.gz")
    out = tmp_path / "out"
    argv = ["preprocess", "--baseline", example_files["baseline"]]
    argv += ["--followup", str(tmp_path / "noise.nii.gz"), "--out", str(out), "--quiet"]
    code, _, err = run_cli(argv, capsys)
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and "could not be registered" in err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["noise.nii.gz"]


def test_an_existing_output_is_kept_without_overwrite(
    example_files: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.txt").write_text("keep me")
    argv = ["preprocess", "--baseline", example_files["baseline"]]
    argv += ["--followup", example_files["followup"], "--out", str(out)]
    code, _, err = run_cli(argv, capsys)
    assert code == 1 and "--overwrite" in err
    assert (out / "earlier.txt").read_text() == "keep me"
