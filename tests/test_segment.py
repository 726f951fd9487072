"""``msnewlesions segment`` end to end with a (tiny) trained model, and its failure modes."""

from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from msnewlesions import segment
from msnewlesions.example import write_example_pair
from msnewlesions.io import read_volume, write_volume
from msnewlesions.model import nnunet
from msnewlesions.postprocessing import (
    PostprocessingSettings,
    lesion_labels,
    write_model_postprocessing,
)
from msnewlesions.preprocessing.registration import read_transform
from msnewlesions.preprocessing.resolution import reslice
from msnewlesions.validation import mask_agreement
from tests.conftest import PreprocessOnce, run_cli


@pytest.fixture(scope="module", autouse=True)
def preprocess_each_pair_once(preprocess_once: PreprocessOnce) -> Iterator[None]:
    """segment preprocesses each distinct pair once here (see PreprocessOnce): the subject of
    these tests is what it does after. Runs in child processes are not affected."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(segment, "preprocess_pair", preprocess_once)
        yield


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return write_example_pair(tmp_path_factory.mktemp("segment_example"), seed=4)


@pytest.fixture(scope="module")
def segmented(
    chain: dict, example: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    from msnewlesions.cli import main

    root = tmp_path_factory.mktemp("segment")
    out, model = root / "result", root / "model"
    # A low threshold, saved as the model's own, so that the briefly trained model marks
    # something to map and tabulate.
    nnunet.copy_model(chain["fold"].parent, model)
    write_model_postprocessing(model, PostprocessingSettings(0.05, 3.0), "test")
    argv = ["segment", "--baseline", example["baseline"], "--followup", example["followup"]]
    assert main([*argv, "--out", str(out), "--model", str(model), "-q"]) == 0
    return out


def test_segment_applies_the_models_own_postprocessing(segmented: Path) -> None:
    summary = json.loads((segmented / "summary.json").read_text())
    assert (summary["threshold"], summary["min_lesion_mm3"]) == (0.05, 3.0)
    assert summary["new_lesion_count"] > 0  # at 0.5 this briefly trained model marks nothing


@pytest.fixture(scope="module")
def thick_slice_followup(example: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The example baseline with fine texture (1 mm detail), and the same brain seen through
    4 mm axial slices as the follow-up: a 3D baseline against a 2D follow-up."""
    folder = tmp_path_factory.mktemp("thick_slice_followup")
    baseline = read_volume(example["baseline"])
    rng = np.random.default_rng(0)
    texture = ndimage.gaussian_filter(rng.normal(size=baseline.shape), 0.8)
    textured = baseline.array * (1 + 0.15 * texture / texture.std())
    thick = reslice(textured, axis=2, thickness_mm=4.0) + rng.normal(0, 10, baseline.shape)
    paths = {"baseline": folder / "baseline.nii.gz", "followup": folder / "followup.nii.gz"}
    for role, array in (("baseline", textured), ("followup", thick)):
        array = np.where(baseline.array > 0, np.clip(array, 0, None), 0).astype(np.float32)
        write_volume(baseline.with_array(array), paths[role], np.float32)
    return {role: str(path) for role, path in paths.items()}


def test_a_thick_slice_followup_is_compared_with_the_baseline_seen_through_its_slices(
    chain: dict, thick_slice_followup: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["segment", "-t1", thick_slice_followup["baseline"], "-t2"]
    argv += [thick_slice_followup["followup"], "--out", str(tmp_path / "out")]
    code, _, _ = run_cli([*argv, "--model", str(chain["fold"].parent), "-q"], capsys)
    assert code == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["slice_matching"] is True
    [match] = summary["slice_matches"]
    assert (match["axis"], match["resliced"]) == (2, "baseline")  # MNI z: the axial slices
    assert 3.0 <= match["thickness_mm"] <= 5.0
    assert summary["seconds"]["slice_matching"] < 30


def test_slice_matching_can_be_turned_off(
    chain: dict, thick_slice_followup: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["segment", "-t1", thick_slice_followup["baseline"], "-t2"]
    argv += [thick_slice_followup["followup"], "--out", str(tmp_path / "out")]
    options = ["--model", str(chain["fold"].parent), "--no-slice-matching", "-q"]
    code, _, _ = run_cli([*argv, *options], capsys)
    assert code == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["slice_matching"], summary["slice_matches"]) == (False, [])
    assert "slice_matching" not in summary["seconds"]


def test_segment_writes_every_output(segmented: Path) -> None:
    names = sorted(p.name for p in segmented.iterdir())
    assert names == [
        "baseline_to_mni.tfm",
        "followup_to_mni.tfm",
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
    example: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An installation whose package holds no model (as before the default model was trained).
    monkeypatch.setattr("msnewlesions.segment.DEFAULT_MODEL", tmp_path / "no_model_here")
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


def test_a_model_with_one_input_channel_is_refused(
    chain: dict, example: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "one_channel_model"
    shutil.copytree(chain["fold"].parent, model)
    dataset = json.loads((model / "dataset.json").read_text())
    dataset["channel_names"] = {"0": "FLAIR"}
    (model / "dataset.json").write_text(json.dumps(dataset))
    argv = ["segment", "--baseline", example["baseline"], "--followup", example["followup"]]
    code, _, err = run_cli([*argv, "--out", str(tmp_path / "o"), "--model", str(model)], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "takes 1 input channel" in err and not (tmp_path / "o").exists()


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_segment_leaves_nothing_partial(
    chain: dict, example: dict[str, str], tmp_path: Path, signal_number: int
) -> None:
    out = tmp_path / "result"
    argv = [sys.executable, "-m", "msnewlesions.cli", "segment"]
    argv += ["--baseline", example["baseline"], "--followup", example["followup"]]
    argv += ["--out", str(out), "--model", str(chain["fold"].parent)]
    # A background launcher (nohup, `cmd &`) makes its children ignore SIGINT; a user at a
    # terminal has Ctrl-C working, so the child starts with the default disposition.
    process = subprocess.Popen(
        argv,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert process.stderr is not None
    for line in process.stderr:  # halfway: once the skull stripping has started
        if "[3/7]" in line:
            process.send_signal(signal_number)
            break
    assert process.wait(timeout=120) != 0
    assert "interrupted" in process.stderr.read()
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_overwrite_keeps_the_previous_result(
    segmented: Path,
    chain: dict,
    example: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    previous = tmp_path / "result"
    shutil.copytree(segmented, previous)
    before = {p.name: p.read_bytes() for p in previous.iterdir()}

    def interrupted_while_writing(*args: object, **kwargs: object) -> str:
        assert any(tmp_path.glob(".result.partial-*/new_lesions.nii.gz"))  # writing has begun
        raise KeyboardInterrupt

    monkeypatch.setattr("msnewlesions.segment.render_report", interrupted_while_writing)
    argv = ["segment", "--baseline", example["baseline"], "--followup", example["followup"]]
    argv += ["--out", str(previous), "--model", str(chain["fold"].parent), "--overwrite", "-q"]
    code, _, err = run_cli(argv, capsys)
    assert code != 0 and "interrupted" in err
    assert {p.name: p.read_bytes() for p in previous.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result"]


def test_the_native_mask_agrees_with_the_mni_mask_through_the_saved_transform(
    segmented: Path,
) -> None:
    agreement = mask_agreement(
        read_volume(segmented / "new_lesions.nii.gz"),
        read_volume(segmented / "new_lesions_mni.nii.gz"),
        read_transform(segmented / "followup_to_mni.tfm"),
    )
    assert agreement.centroid_distance_mm, "the model marked nothing to compare"
    assert agreement.native_voxels_in_mni_lesions > 0.99
    large = [d for k, d in agreement.centroid_distance_mm.items() if agreement.volume_mm3[k] > 30]
    assert large and max(large) < 1.5
