"""``msnewlesions segment`` end to end with a (tiny) trained model, and its failure modes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from msnewlesions.example import write_example_pair
from msnewlesions.io import read_volume
from msnewlesions.postprocessing import lesion_labels
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return write_example_pair(tmp_path_factory.mktemp("segment_example"), seed=4)


@pytest.fixture(scope="module")
def segmented(
    chain: dict, example: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    from msnewlesions.cli import main

    out = tmp_path_factory.mktemp("segment") / "result"
    model = chain["fold"].parent
    argv = ["segment", "--baseline", example["baseline"], "--followup", example["followup"]]
    # A low threshold so that the briefly trained model marks something to map and tabulate.
    assert main([*argv, "--out", str(out), "--model", str(model), "--threshold", "0.05", "-q"]) == 0
    return out


def test_segment_writes_every_output(segmented: Path) -> None:
    names = sorted(p.name for p in segmented.iterdir())
    assert names == [
        "lesions.csv",
        "new_lesions.nii.gz",
        "new_lesions_mni.nii.gz",
        "report.html",
        "summary.json",
    ]


def test_the_native_mask_has_the_follow_ups_geometry(segmented: Path, example: dict) -> None:
    mask, followup = nib.load(segmented / "new_lesions.nii.gz"), nib.load(example["followup"])
    assert mask.shape == followup.shape
    np.testing.assert_allclose(mask.affine, followup.affine, atol=1e-5)
    assert mask.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}


def test_table_summary_and_masks_agree(segmented: Path) -> None:
    summary = json.loads((segmented / "summary.json").read_text())
    rows = list(csv.DictReader((segmented / "lesions.csv").open()))
    assert summary["new_lesion_count"] == len(rows)
    assert summary["new_lesion_volume_mm3"] == pytest.approx(
        sum(float(r["volume_mm3"]) for r in rows), abs=0.05 * max(len(rows), 1)
    )
    mni = read_volume(segmented / "new_lesions_mni.nii.gz")
    _, count = lesion_labels(mni, threshold=0.5, min_lesion_mm3=0.0)
    assert count == len(rows)
    assert int(mni.array.sum()) == sum(int(r["voxels_mni"]) for r in rows)
    assert len(summary["inputs"]["baseline"]["sha256"]) == 64
    assert "timepoint_correlation_in_brain" in summary["qc"]


def test_msseg2_container_form_writes_just_the_mask(
    chain: dict, example: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mask = tmp_path / "mask.nii.gz"
    argv = ["segment", "-t1", example["baseline"], "-t2", example["followup"], "-o", str(mask)]
    code, _, _ = run_cli([*argv, "--model", str(chain["fold"].parent), "-q"], capsys)
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.nii.gz"]
    assert nib.load(mask).shape == nib.load(example["followup"]).shape


def test_without_a_model_segment_says_how_to_get_one(
    example: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["segment", "--baseline", example["baseline"], "--followup", example["followup"]]
    code, _, err = run_cli([*argv, "--out", str(tmp_path / "out")], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "msnewlesions train" in err and not (tmp_path / "out").exists()


def test_an_unknown_model_path_is_refused(
    example: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["segment", "--baseline", example["baseline"], "--followup", example["followup"]]
    code, _, err = run_cli(
        [*argv, "--out", str(tmp_path / "o"), "--model", str(tmp_path / "x")], capsys
    )
    assert code == 1 and "does not exist" in err
