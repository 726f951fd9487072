"""``msnewlesions evaluate`` on files and folders, its summary, table, and bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from msnewlesions.evaluation import CaseResult, EvaluationResult, format_table, summarize
from msnewlesions.metrics import CaseMetrics
from tests.conftest import run_cli

AFFINE = np.diag([0.5, 0.5, 3.0, 1.0])  # anisotropic: 0.75 mm3 voxels


def save(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    nib.save(nib.Nifti1Image(array.astype(np.uint8), affine), path)
    return path


def masks() -> tuple[np.ndarray, np.ndarray]:
    reference = np.zeros((20, 20, 10), np.uint8)
    prediction = np.zeros((20, 20, 10), np.uint8)
    reference[2:5, 2:5, 2:5] = 1  # 27 voxels, found
    reference[10:13, 10:13, 2:5] = 1  # 27 voxels, missed
    prediction[2:5, 2:5, 2:5] = 1
    prediction[15:18, 15:18, 5:8] = 1  # false positive
    return prediction, reference


def test_two_files_give_the_case_metrics_and_a_box_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prediction, reference = masks()
    argv = ["evaluate", "--pred", str(save(tmp_path / "p.nii.gz", prediction))]
    argv += ["--ref", str(save(tmp_path / "case7.nii.gz", reference))]
    argv += ["--out", str(tmp_path / "metrics.json"), "--csv", str(tmp_path / "m.csv"), "-q"]
    code, out, _ = run_cli(argv, capsys)
    assert code == 0 and "1 case(s)" in out
    result = json.loads((tmp_path / "metrics.json").read_text())
    (case,) = result["cases"]
    assert case["case"] == "case7"
    assert case["dice"] == pytest.approx(0.5) and case["recall"] == pytest.approx(0.5)
    assert case["lesion_f1"] == pytest.approx(0.5)
    assert case["n_ref_lesions"] == 2 and case["n_pred_lesions"] == 2
    assert case["pred_lesion_volume_mm3"] == pytest.approx(54 * 0.75)
    assert result["summary"]["n_cases"] == 1 and result["summary"]["dice_std"] is None
    assert (tmp_path / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader((tmp_path / "m.csv").open()))
    assert rows[0]["case"] == "case7" and float(rows[0]["dice"]) == pytest.approx(0.5)


def test_folders_are_matched_by_name_and_summarized(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prediction, reference = masks()
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    save(tmp_path / "pred/a.nii.gz", prediction)
    save(tmp_path / "ref/a.nii.gz", reference)
    save(tmp_path / "pred/b.nii.gz", reference)  # perfect
    save(tmp_path / "ref/b.nii.gz", reference)
    save(tmp_path / "pred/healthy.nii.gz", np.zeros_like(reference))  # no lesion, none found
    save(tmp_path / "ref/healthy.nii.gz", np.zeros_like(reference))
    argv = ["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref")]
    code, out, _ = run_cli([*argv, "--out", str(tmp_path / "m.json"), "--table", "-q"], capsys)
    assert code == 0
    result = json.loads((tmp_path / "m.json").read_text())
    assert [c["case"] for c in result["cases"]] == ["a", "b", "healthy"]
    summary = result["summary"]
    assert summary["dice_mean"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert summary["dice_std"] == pytest.approx(np.std([0.5, 1, 1], ddof=1))
    assert summary["lesion_f1_mean"] == pytest.approx(0.75)  # the healthy case's null is skipped
    assert summary["n_cases_without_new_lesions"] == 1
    assert summary["false_positive_lesions_mean_without_new_lesions"] == 0
    assert out.splitlines()[-2].startswith("All")
    assert "0.83+/-0.29" in out


def test_the_table_reproduces_the_papers_summary_row() -> None:
    """Table 2 of the paper: its 0.58 +/- 0.35 and 0.62 +/- 0.36 use the sample std (ddof 1)."""
    dice = [0.37, 1.0, 0.0, 0.81, 0.0, 1.0, 0.5, 0.71, 0.57, 0.65, 0.38, 1.0]
    recall = [0.75, 1.0, 0.0, 0.73, 0.0, 1.0, 0.39, 0.63, 0.46, 0.74, 0.28, 1.0]
    cases = [
        CaseResult(f"MS_{i:05d}", CaseMetrics(d, r, None, None, None, 1, 1, 1.0))
        for i, (d, r) in enumerate(zip(dice, recall, strict=True))
    ]
    table = format_table(EvaluationResult(cases, summarize(cases)))
    last = table.splitlines()[-1].split()
    assert last[0] == "All"
    assert last[1] == "0.58+/-0.35" and last[2] == "0.58+/-0.36"


def _bad(tmp_path: Path, case: str) -> tuple[list[str], str]:
    prediction, reference = masks()
    ref = save(tmp_path / "r.nii.gz", reference)
    if case == "shape":
        pred = save(tmp_path / "p.nii.gz", np.zeros((20, 20, 11), np.uint8))
        return [str(pred), str(ref)], "same grid"
    if case == "affine":
        pred = save(tmp_path / "p.nii.gz", prediction, np.diag([0.5, 0.5, 2.0, 1.0]))
        return [str(pred), str(ref)], "different affines"
    if case == "labels":
        pred = save(tmp_path / "p.nii.gz", prediction * 2)
        return [str(pred), str(ref)], "--label"
    if case == "unreadable":
        pred = tmp_path / "p.nii.gz"
        pred.write_text("nope")
        return [str(pred), str(ref)], "not a readable NIfTI"
    folders = [tmp_path / "pred", tmp_path / "ref"]
    for folder in folders:
        folder.mkdir()
    save(folders[1] / "a.nii.gz", reference)
    save(folders[1] / "b.nii.gz", reference)
    save(folders[0] / "a.nii.gz", prediction)
    if case == "missing":
        return [str(f) for f in folders], "no prediction for 1 reference case(s)"
    save(folders[0] / "b.nii.gz", prediction)
    save(folders[0] / "zz.nii.gz", prediction)
    return [str(f) for f in folders], "zz"


@pytest.mark.parametrize("case", ["shape", "affine", "labels", "unreadable", "missing", "extra"])
def test_bad_input_is_one_line_and_a_non_zero_exit(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (pred, ref), message = _bad(tmp_path, case)
    out = tmp_path / "metrics.json"
    argv = ["evaluate", "--pred", pred, "--ref", ref, "--out", str(out), "--quiet"]
    code, _, err = run_cli(argv, capsys)
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and message in err
    assert not out.exists()


def test_label_selects_one_value_of_multi_label_masks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prediction, reference = masks()
    pred = save(tmp_path / "p.nii.gz", prediction * 2)
    ref = save(tmp_path / "r.nii.gz", reference * 2 + (reference == 0))  # background labelled 1
    argv = ["evaluate", "--pred", str(pred), "--ref", str(ref), "--label", "2"]
    code, _, _ = run_cli([*argv, "--out", str(tmp_path / "m.json"), "-q"], capsys)
    assert code == 0
    assert json.loads((tmp_path / "m.json").read_text())["cases"][0]["dice"] == pytest.approx(0.5)


def test_an_existing_result_is_kept_without_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prediction, reference = masks()
    out = tmp_path / "metrics.json"
    out.write_text("earlier")
    argv = ["evaluate", "--pred", str(save(tmp_path / "p.nii.gz", prediction))]
    argv += ["--ref", str(save(tmp_path / "r.nii.gz", reference)), "--out", str(out)]
    code, _, err = run_cli(argv, capsys)
    assert code == 1 and "--overwrite" in err
    assert out.read_text() == "earlier"
    assert run_cli([*argv, "--overwrite", "-q"], capsys)[0] == 0
