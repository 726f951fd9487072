"""crossval end to end on tiny data: four patients' five 64^3 preprocessed pairs, two folds, one
epoch of two iterations each (about a CPU minute): the tables are what ``evaluate`` says of the
saved predictions, and a second run resumes without training again."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from msnewlesions.io import Volume, write_volume
from msnewlesions.model import nnunet

AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])


def tiny_dataset(root: Path, cases: int = 5) -> Path:
    """An nnU-Net raw dataset of preprocessed-looking pairs: smooth z-scored noise, a bright ball
    at the follow-up (its label) in all but the last case."""
    from scipy import ndimage

    folder = root / "Dataset700_Tiny"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    for index in range(cases):
        rng = np.random.default_rng(index)
        baseline = ndimage.gaussian_filter(rng.normal(0, 1, (64, 64, 64)), 1.5)
        baseline = (baseline - baseline.mean()) / baseline.std()
        followup = baseline + rng.normal(0, 0.1, baseline.shape)
        label = np.zeros(baseline.shape, np.uint8)
        if index < cases - 1:
            centre = rng.integers(20, 44, 3)
            grid = np.indices(baseline.shape) - centre[:, None, None, None]
            label[(grid**2).sum(0) <= 16] = 1
            followup[label > 0] += 4.0
        case = f"case{index}"
        for channel, image in (("0000", baseline), ("0001", followup)):
            write_volume(
                Volume(image.astype(np.float32), AFFINE),
                folder / "imagesTr" / f"{case}_{channel}.nii.gz",
                np.float32,
            )
        write_volume(Volume(label, AFFINE), folder / "labelsTr" / f"{case}.nii.gz", np.uint8)
    nnunet.write_dataset_json(folder, cases)
    # Cases 0 and 1 are one patient's two pairs: always on the same side of every split.
    patients = {f"case{i}": f"patient{max(i, 1)}" for i in range(cases)}
    (folder / "patients.json").write_text(json.dumps(patients))
    return folder


@pytest.fixture(scope="module")
def crossval_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from msnewlesions.cli import main

    root = tmp_path_factory.mktemp("crossval")
    data = tiny_dataset(root / "data")
    run = root / "run"
    argv = ["crossval", str(data), "--out", str(run), "--folds", "2", "--epochs", "1",
            "--iterations", "2", "--validation-iterations", "1", "--id", "701", "-q"]  # fmt: skip
    assert main(argv) == 0
    model = nnunet.model_folder(run / "nnunet" / "results", 701, "cpu")
    checkpoints = {p: p.stat().st_mtime_ns for p in model.glob("fold_*/checkpoint_final.pth")}
    assert main(argv) == 0  # the second run resumes: nothing to train
    return {"run": run, "data": data, "checkpoints": checkpoints, "argv": argv}


def test_every_fold_is_trained_once_and_a_second_run_resumes(crossval_run: dict) -> None:
    checkpoints = crossval_run["checkpoints"]
    assert len(checkpoints) == 2
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in checkpoints.items())


def test_the_test_split_is_patients_never_trained_on(crossval_run: dict) -> None:
    split = json.loads((crossval_run["run"] / "split.json").read_text())
    patients = split["patients"]
    assert len({patients[case] for case in split["test"]}) == 1  # a fifth of four patients
    for fold in split["folds"]:
        assert not set(split["test"]) & (set(fold["train"]) | set(fold["val"]))
        for side in (fold["train"], fold["val"], split["test"]):
            assert ("case0" in side) == ("case1" in side)
    validated = sorted(case for fold in split["folds"] for case in fold["val"])
    assert validated == sorted(set(split["patients"]) - set(split["test"]))


def test_table2_is_what_evaluate_says_of_the_saved_predictions(
    crossval_run: dict, tmp_path: Path
) -> None:
    from msnewlesions.cli import main
    from msnewlesions.crossvalidation_tables import mean_std

    run, data = crossval_run["run"], crossval_run["data"]
    metrics = tmp_path / "metrics.json"
    reference = tmp_path / "reference"
    reference.mkdir()
    for prediction in (run / "test").glob("*.nii.gz"):
        (reference / prediction.name).symlink_to(data / "labelsTr" / prediction.name)
    argv = ["evaluate", "--pred", str(run / "test"), "--ref", str(reference), "--out", str(metrics)]
    assert main([*argv, "-q"]) == 0
    expected = {case["case"]: case for case in json.loads(metrics.read_text())["cases"]}
    rows = [line.split("\t") for line in (run / "table2_test.tsv").read_text().splitlines()]
    assert rows[0][:4] == ["case", "Dice", "recall", "lesion F1"]
    assert len(rows) == len(expected) + 2
    for row in rows[1:-1]:
        case = expected[row[0]]
        assert float(row[1]) == pytest.approx(case["dice"], abs=0.005)
        assert float(row[2]) == pytest.approx(case["recall"], abs=0.005)
    dice_mean, _ = mean_std([case["dice"] for case in expected.values()])
    assert rows[-1][0] == "All" and rows[-1][1].startswith(f"{dice_mean:.2f}")
    table1 = (run / "table1_validation.md").read_text()
    assert table1.count("\n") == 2 + 2 + 1  # header, rule, two folds, all
    assert (run / "crossval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_run_with_other_settings_in_the_same_folder_is_refused(crossval_run: dict) -> None:
    from msnewlesions.cli import main

    argv = [*crossval_run["argv"]]
    argv[argv.index("--epochs") + 1] = "2"
    assert main(argv) == 1
