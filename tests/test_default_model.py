"""The model shipped inside the package: what it is, and that it finds the example's lesions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from msnewlesions.example import write_example_pair
from msnewlesions.io import read_volume, write_volume
from msnewlesions.lesions import model_postprocessing
from msnewlesions.model.default import DEFAULT_MODEL, default_model
from msnewlesions.model.nnunet import check_model
from tests.conftest import PreprocessOnce

CHECKPOINT = DEFAULT_MODEL / "fold_0" / "checkpoint_final.pth"

pytestmark = pytest.mark.skipif(
    not CHECKPOINT.exists(), reason="this checkout ships no default model (model/weights)"
)


def test_the_shipped_model_is_a_small_two_channel_cpu_model_without_optimizer_state() -> None:
    assert default_model() == DEFAULT_MODEL
    check_model(DEFAULT_MODEL)
    # Every fold (the shipped model may be an ensemble) without optimizer state, < 60 MB in all.
    checkpoints = sorted(DEFAULT_MODEL.glob("fold_*/checkpoint_final.pth"))
    assert CHECKPOINT in checkpoints
    assert sum(path.stat().st_size for path in checkpoints) < 60 * 2**20
    for path in checkpoints:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        assert checkpoint["optimizer_state"] is None, path
        assert checkpoint["trainer_name"] == "nnUNetTrainerMSNewLesions", path
    plans = json.loads((DEFAULT_MODEL / "plans.json").read_text())
    assert plans["plans_name"] == "nnUNetPlans_cpu"
    assert (DEFAULT_MODEL / "MODEL_CARD.md").exists()
    assert (DEFAULT_MODEL / "TRAINING_LOG.md").exists()


@pytest.fixture(scope="module")
def segmented_example(
    tmp_path_factory: pytest.TempPathFactory, preprocess_once: PreprocessOnce
) -> dict[str, Path]:
    """``segment`` of the example pair with the shipped model, through the command line."""
    from msnewlesions.cli import main
    from msnewlesions.preprocessing import model_inputs

    root = tmp_path_factory.mktemp("default_model")
    # The real pipeline, once per session for this pair (test_segment.py's and others' too).
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(model_inputs, "preprocess_pair", preprocess_once)
        example = write_example_pair(root / "example", seed=4)
        out = root / "segment"
        argv = ["segment", "--baseline", example["baseline"], "--followup", example["followup"]]
        assert main([*argv, "--out", str(out), "-q"]) == 0
    return {"root": root, "out": out} | {key: Path(path) for key, path in example.items()}


def test_segment_with_the_shipped_model_finds_the_example_lesions(
    segmented_example: dict[str, Path], tmp_path: Path
) -> None:
    """The shipped network end to end through the command line."""
    from msnewlesions.cli import main

    out = segmented_example["out"]
    metrics = tmp_path / "metrics.json"
    argv = ["evaluate", "--pred", str(out / "new_lesions.nii.gz")]
    argv += ["--ref", str(segmented_example["true_new_lesions"]), "--out", str(metrics), "-q"]
    assert main(argv) == 0
    case = json.loads(metrics.read_text())["cases"][0]
    truth = json.loads((segmented_example["root"] / "example" / "truth.json").read_text())
    assert case["n_ref_lesions"] == truth["new_lesion_count"]
    assert case["lesion_sensitivity"] == 1.0, case
    assert case["lesion_ppv"] >= 0.75, case
    assert case["dice"] >= 0.6, case
    # segment applied the shipped model's own post-processing and says so.
    summary = json.loads((out / "summary.json").read_text())
    applied = model_postprocessing(DEFAULT_MODEL)
    assert (summary["threshold"], summary["min_lesion_mm3"], summary["min_depth_mm"]) == (
        applied.threshold,
        applied.min_lesion_mm3,
        applied.min_depth_mm,
    )
    assert 0.0 < applied.threshold < 1.0 and applied.min_lesion_mm3 >= 3.0  # MSSEG-2's floor


@pytest.mark.slow  # a second pass of both networks (about 45 s here)
def test_predict_on_the_inputs_segment_gave_the_network_finds_the_same_lesions(
    segmented_example: dict[str, Path], tmp_path: Path, preprocess_once: PreprocessOnce
) -> None:
    """``predict`` on the inputs segment gave the network: the same lesions, voxel for voxel."""
    from msnewlesions.cli import main
    from msnewlesions.preprocessing import model_inputs

    baseline = read_volume(segmented_example["baseline"])
    followup = read_volume(segmented_example["followup"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(model_inputs, "preprocess_pair", preprocess_once)
        given = model_inputs.model_inputs(baseline, followup)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    write_volume(given.baseline, inputs / "example_0000.nii.gz", np.float32)
    write_volume(given.followup, inputs / "example_0001.nii.gz", np.float32)
    argv = ["predict", "--model", str(DEFAULT_MODEL), "--input", str(inputs)]
    assert main([*argv, "--out", str(tmp_path / "predicted"), "-q"]) == 0
    predicted = read_volume(tmp_path / "predicted" / "example.nii.gz")
    segmented = read_volume(segmented_example["out"] / "new_lesions_mni.nii.gz")
    assert predicted.same_grid(segmented)
    assert segmented.array.any()
    np.testing.assert_array_equal(predicted.array, segmented.array)
