"""Dataset layouts, patient-level folds, label transfer and the gaining-lesion filter."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from msnewlesions.errors import MSNewLesionsError
from msnewlesions.io import Volume, write_volume
from msnewlesions.model.datasets import (
    Case,
    folds_for,
    gaining_on_label_grid,
    keep_gaining_components,
    label_on_grid,
    read_cases,
)
from msnewlesions.preprocessing.pipeline import PreprocessedPair
from msnewlesions.preprocessing.quality import QualityReport
from msnewlesions.preprocessing.registration import transform_from_matrix


def touch_nifti(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4)), path)
    return path


def test_msseg2_layout(tmp_path: Path) -> None:
    for case in ("013", "015"):
        touch_nifti(tmp_path / case / "flair_time01_on_middle_space.nii.gz")
        touch_nifti(tmp_path / case / "flair_time02_on_middle_space.nii.gz")
        touch_nifti(tmp_path / case / "ground_truth.nii.gz")
    touch_nifti(tmp_path / "099" / "flair_time01_on_middle_space.nii.gz")  # incomplete
    cases = read_cases("msseg2", tmp_path)
    assert [c.case_id for c in cases] == ["013", "015"]
    assert cases[0].label == tmp_path / "013" / "ground_truth.nii.gz"
    assert cases[0].label_space == "baseline"


def test_open_ms_data_layout_skips_incomplete_patients(tmp_path: Path) -> None:
    for patient, studies in (("patient01", (1, 2)), ("patient04", (1,)), ("patient09", (2,))):
        for study in studies:
            touch_nifti(tmp_path / "raw" / patient / f"study{study}_FLAIR.nii.gz")
        touch_nifti(tmp_path / "raw" / patient / "gt.nii.gz")
    (tmp_path / "raw/patient01/study1_FLAIR_to_common_space.txt").write_text("x")
    (tmp_path / "raw/patient01/study2_FLAIR_to_common_space.txt").write_text("x")
    brain = touch_nifti(tmp_path / "coregistered/patient01/brainmask.nii.gz")
    cases = read_cases("open_ms_data", tmp_path)
    assert [c.case_id for c in cases] == ["patient01"]
    assert cases[0].label_space == "common"
    assert cases[0].baseline_to_label_space.name == "study1_FLAIR_to_common_space.txt"
    assert cases[0].followup_to_label_space.name == "study2_FLAIR_to_common_space.txt"
    assert cases[0].label_brain_mask == brain


def test_bids_layout_pairs_consecutive_sessions(tmp_path: Path) -> None:
    for session in ("ses-01", "ses-02", "ses-03"):
        touch_nifti(tmp_path / f"sub-a/{session}/anat/sub-a_{session}_FLAIR.nii.gz")
    touch_nifti(tmp_path / "sub-b/ses-01/anat/sub-b_ses-01_FLAIR.nii.gz")  # one session only
    mask = touch_nifti(
        tmp_path / "derivatives/experts/sub-a/ses-02/anat/sub-a_ses-02_desc-newlesions_mask.nii.gz"
    )
    cases = read_cases("bids", tmp_path)
    assert [c.case_id for c in cases] == ["sub-a_ses-01_ses-02", "sub-a_ses-02_ses-03"]
    assert cases[0].label == mask and cases[0].label_space == "followup"
    assert cases[1].label is None
    assert {c.patient for c in cases} == {"sub-a"}


def test_an_empty_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(MSNewLesionsError, match="no case found"):
        read_cases("msseg2", tmp_path)


def test_folds_are_patient_level_and_cover_every_case() -> None:
    case_patients = {f"p{p}_visit{v}": f"p{p}" for p in range(10) for v in range(2)}
    folds = folds_for(case_patients)
    assert len(folds) == 5
    validation = [case for fold in folds for case in fold["val"]]
    assert sorted(validation) == sorted(case_patients)  # each case validated exactly once
    for fold in folds:
        assert len(fold["val"]) == 4 and len(fold["train"]) == 16  # 80 / 20
        train_patients = {case_patients[c] for c in fold["train"]}
        assert not train_patients & {case_patients[c] for c in fold["val"]}


def test_fewer_patients_than_folds_gives_fewer_folds(caplog: pytest.LogCaptureFixture) -> None:
    folds = folds_for({"a": "a", "b": "b"})
    assert len(folds) == 2 and "2 fold(s) instead of 5" in caplog.text
    assert folds_for({"a": "a"}) == [{"train": ["a"], "val": ["a"]}]


def test_only_components_that_gain_signal_are_kept() -> None:
    shape = (20, 20, 20)
    label = np.zeros(shape, np.uint8)
    label[2:5, 2:5, 2:5] = 1  # new: brighter at follow-up
    label[10:13, 10:13, 10:13] = 1  # shrinking: darker at follow-up
    baseline = np.zeros(shape, np.float32)
    followup = np.zeros(shape, np.float32)
    followup[2:5, 2:5, 2:5] = 2.0
    baseline[10:13, 10:13, 10:13] = 2.0
    kept, n_kept, n_dropped = keep_gaining_components(
        Volume(label, np.eye(4)), Volume(baseline, np.eye(4)), Volume(followup, np.eye(4))
    )
    assert (n_kept, n_dropped) == (1, 1)
    assert kept.array[3, 3, 3] == 1 and kept.array[11, 11, 11] == 0


def test_a_label_on_a_third_grid_follows_the_reference_transform(tmp_path: Path) -> None:
    """open_ms_data: label grid -> baseline by a file transform, baseline -> MNI by ours."""
    from msnewlesions.model.datasets import Case

    grid = Volume(np.zeros((30, 30, 30), np.uint8), np.eye(4))
    baseline_to_label = sitk.TranslationTransform(3, (-4.0, 0.0, 0.0))  # LPS: RAS x + 4 mm
    sitk.WriteTransform(baseline_to_label, str(tmp_path / "t.txt"))
    identity = transform_from_matrix(np.eye(4))
    qc = QualityReport(0.9, 0.9, 1000.0, 0.0, 0.95, [0.1, 0.0, 0.0], {}, {}, [])
    pair = PreprocessedPair(grid, grid, grid, identity, identity, identity, qc)
    label = np.zeros((30, 30, 30), np.uint8)
    label[10, 10, 10] = 1
    case = Case("c", "c", Path("b"), Path("f"), Path("l"), "common", tmp_path / "t.txt")
    moved = label_on_grid(case, Volume(label, np.eye(4)), pair)
    # The file maps label-grid point p to baseline point p + 4 mm (RAS x); the grid is the
    # baseline here, so the label voxel at x = 10 shows up at x = 14.
    assert np.argwhere(moved.array).tolist() == [[14, 10, 10]]
    assert json.dumps(moved.affine.tolist()) == json.dumps(grid.affine.tolist())


def test_gaining_lesions_are_decided_on_the_label_grid(tmp_path: Path) -> None:
    """A new lesion is kept; an old one, bright at both visits once the baseline is carried by
    its transform (4 mm away in its own grid), is dropped. Ignoring the transform would see it
    dark at baseline, so gaining."""
    shape = (30, 30, 30)
    rng = np.random.default_rng(0)
    change = np.zeros(shape, np.uint8)
    change[5:9, 5:9, 5:9] = 1  # new at follow-up
    change[18:22, 18:22, 18:22] = 1  # old: bright at both visits
    baseline = rng.normal(0, 0.1, shape).astype(np.float32)
    baseline[22:26, 18:22, 18:22] += 5.0  # the old lesion, 4 mm further along x in its own grid
    followup = rng.normal(0, 0.1, shape).astype(np.float32)
    followup[5:9, 5:9, 5:9] += 5.0
    followup[18:22, 18:22, 18:22] += 5.0
    write_volume(Volume(baseline, np.eye(4)), tmp_path / "baseline.nii.gz")
    write_volume(Volume(followup, np.eye(4)), tmp_path / "followup.nii.gz")
    write_volume(Volume(np.ones(shape, np.uint8), np.eye(4)), tmp_path / "brain.nii.gz")
    # Label-grid point p -> baseline point p + 4 mm (RAS x; ITK's LPS x is -RAS x).
    sitk.WriteTransform(sitk.TranslationTransform(3, (-4.0, 0, 0)), str(tmp_path / "b.txt"))
    sitk.WriteTransform(sitk.TranslationTransform(3, (0.0, 0, 0)), str(tmp_path / "f.txt"))
    case = Case(
        "p", "p", tmp_path / "baseline.nii.gz", tmp_path / "followup.nii.gz", None, "common",
        baseline_to_label_space=tmp_path / "b.txt",
        followup_to_label_space=tmp_path / "f.txt",
        label_brain_mask=tmp_path / "brain.nii.gz",
    )  # fmt: skip
    kept, n_kept, n_dropped = gaining_on_label_grid(case, Volume(change, np.eye(4)))
    assert (n_kept, n_dropped) == (1, 1)
    assert kept.array[6, 6, 6] == 1 and kept.array[19, 19, 19] == 0
    assert kept.shape == shape

    without_followup = Case(
        "p", "p", case.baseline, case.followup, None, "common", case.baseline_to_label_space
    )
    with pytest.raises(MSNewLesionsError, match="has no follow-up transform or brain mask, so"):
        gaining_on_label_grid(without_followup, Volume(change, np.eye(4)))
