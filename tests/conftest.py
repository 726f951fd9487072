"""Shared fixtures: small synthetic volumes built on the fly, and the real data under ../shared."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from filelock import FileLock

from msnewlesions.commands.predict import predict_files
from msnewlesions.example import write_example_bids
from msnewlesions.io import Volume, read_volume, write_volume
from msnewlesions.model import nnunet
from msnewlesions.model.schedule import TrainingSchedule

# Bound here, once: tests patch the name in the modules that call it (the pipeline's included).
from msnewlesions.preprocessing.intensity import crop
from msnewlesions.preprocessing.pipeline import PreprocessOptions, preprocess_pair

REPOSITORY = Path(__file__).resolve().parents[1]
OPEN_MS_DATA = Path(
    os.environ.get("MSNEWLESIONS_OPEN_MS_DATA", REPOSITORY.parent / "shared/data/open_ms_data")
)


@pytest.fixture(autouse=True)
def _command_line_logging_ends_with_its_test() -> Iterator[None]:
    """The command line points the package's log at the stderr of its moment (a test's capture);
    a later test must not log into that closed stream."""
    yield
    package = logging.getLogger("msnewlesions")
    package.handlers.clear()
    package.propagate = True
    package.setLevel(logging.NOTSET)


@pytest.fixture(scope="session")
def open_ms_data() -> Path:
    """The real open_ms_data folder; tests that need it skip, with the reason, when it is absent."""
    if not (OPEN_MS_DATA / "longitudinal" / "raw").is_dir():
        pytest.skip(f"real data not found at {OPEN_MS_DATA} (set MSNEWLESIONS_OPEN_MS_DATA)")
    return OPEN_MS_DATA


class PreprocessOnce:
    """``preprocess_pair`` that computes each distinct pair once per test session.

    Preprocessing has tests of its own (test_preprocess_cli.py, test_preprocess_real.py, both
    on the real pipeline). Tests whose subject is what comes after it (building a dataset,
    segment's slice matching, network, mapping back, writing) patch this in where their code
    calls ``preprocess_pair``: the first call on two scans runs the real pipeline, a later call
    on the same scans with the same options gets a copy of that result. About 25-45 s each.

    ``folder`` holds the results (pickled, each under a lock) so that the test processes of one
    session (pytest-xdist's workers) share them: whichever asks first computes, the others wait
    for it and read.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.results: dict[str, bytes] = {}

    @staticmethod
    def key(baseline: Volume, followup: Volume, options: object) -> str:
        digest = hashlib.sha256(repr(options).encode())
        for volume in (baseline, followup):
            digest.update(np.ascontiguousarray(volume.array).tobytes())
            digest.update(np.asarray(volume.affine, np.float64).tobytes())
        return digest.hexdigest()

    def __call__(self, baseline: Volume, followup: Volume, options: Any = None) -> Any:
        options = options or PreprocessOptions()
        key = self.key(baseline, followup, options)
        if key not in self.results:
            self.folder.mkdir(parents=True, exist_ok=True)
            stored = self.folder / f"{key}.pickle"
            with FileLock(str(stored) + ".lock"):
                if not stored.exists():
                    result = pickle.dumps(preprocess_pair(baseline, followup, options))
                    partial = stored.with_suffix(".partial")
                    partial.write_bytes(result)
                    partial.replace(stored)
                self.results[key] = stored.read_bytes()
        return pickle.loads(self.results[key])


@pytest.fixture(scope="session")
def preprocess_once(tmp_path_factory: pytest.TempPathFactory) -> PreprocessOnce:
    # Under pytest-xdist each worker has its own base folder; their parent is the session's.
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    return PreprocessOnce(shared / "preprocess_once")


@pytest.fixture(scope="module")
def segment_preprocesses_once(preprocess_once: PreprocessOnce) -> Iterator[None]:
    """For a module whose subject is what ``segment`` does after preprocessing: it preprocesses
    each distinct pair once per session (see PreprocessOnce). Use with
    ``pytestmark = pytest.mark.usefixtures("segment_preprocesses_once")``. Runs in child processes
    are not affected."""
    from msnewlesions.preprocessing import model_inputs

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(model_inputs, "preprocess_pair", preprocess_once)
        yield


def oblique_affine(
    spacing: tuple[float, float, float] = (0.7, 0.8, 3.0),
    angles_rad: tuple[float, float, float] = (0.1, -0.2, 0.3),
    origin: tuple[float, float, float] = (-80.0, 90.0, -40.0),
    flip_first_axis: bool = True,
) -> np.ndarray:
    """A voxel-to-RAS affine with rotated, anisotropic, LPS-like axes."""
    ax, ay, az = angles_rad
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    direction = rz @ ry @ rx
    if flip_first_axis:
        direction = direction @ np.diag([-1.0, 1.0, 1.0])
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


@pytest.fixture()
def oblique_volume() -> Volume:
    rng = np.random.default_rng(0)
    return Volume(rng.random((12, 10, 6), dtype=np.float32) * 100, oblique_affine())


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from msnewlesions.cli import main

    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="session")
def chain(
    tmp_path_factory: pytest.TempPathFactory, preprocess_once: PreprocessOnce
) -> dict[str, Path]:
    """dataset -> plan and preprocess -> train 2 epochs -> resume to 3 -> predict.

    The three subjects are one example pair (seed 4, as test_segment.py's), preprocessed once
    per session (PreprocessOnce), then cut down to the box around their new lesions: the
    subject here is the nnU-Net chain, not preprocessing, and nnU-Net's fingerprint and
    preprocessing of the whole 161 x 196 x 163 grids took twice as long as of these boxes.
    """
    from msnewlesions.cli import main
    from msnewlesions.model import datasets

    root = tmp_path_factory.mktemp("chain")
    bids = write_example_bids(root / "bids", seeds=[4, 4, 4])
    raw = root / "raw"
    argv = ["dataset", "--layout", "bids", "--input", str(bids), "--out", str(raw), "--id", "502"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets, "preprocess_pair", preprocess_once)
        assert main([*argv, "--quiet"]) == 0
    dataset = raw / nnunet.dataset_name(502)
    # Resumable: a second run finds every case written and preprocesses nothing.
    assert main([*argv, "--quiet"]) == 0
    records = json.loads((dataset / "msnewlesions_cases.json").read_text())
    assert {r["status"] for r in records} == {"already written"}
    crop_cases_to_their_lesions(dataset)

    preprocessed, results = root / "preprocessed", root / "results"
    nnunet.plan_and_preprocess(raw, preprocessed, 502)
    short = {"iterations_per_epoch": 1, "validation_iterations": 1}
    quick = {"validate": False, "data_workers": 0}
    # The last epoch of each run at the learning rate / 5; the resumed run must not divide again.
    first_schedule = TrainingSchedule(epochs=2, anneal_epochs=1, **short)
    fold = nnunet.train(preprocessed, results, 502, 0, "cpu", schedule=first_schedule, **quick)
    first = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    first_debug = json.loads((fold / "debug.json").read_text())
    # Resumed with the checkpoint's own schedule, one epoch longer.
    saved_after_first = nnunet.saved_schedule(fold)
    assert saved_after_first is not None
    nnunet.train(
        preprocessed,
        results,
        502,
        0,
        "cpu",
        schedule=saved_after_first.updated(epochs=3),
        resume=True,
        **quick,
    )
    second = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    # Fine-tuning: resumed once more, at a lower learning rate from the next epoch on.
    nnunet.train(
        preprocessed,
        results,
        502,
        0,
        "cpu",
        schedule=TrainingSchedule(epochs=4, anneal_epochs=0, **short),
        resume=True,
        learning_rate=0.0004,
        **quick,
    )
    third = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    # A second fine-tuning phase with an anneal of its own: the new rate, then its fifth.
    nnunet.train(
        preprocessed,
        results,
        502,
        0,
        "cpu",
        schedule=TrainingSchedule(epochs=6, anneal_epochs=1, **short),
        resume=True,
        learning_rate=0.001,
        **quick,
    )
    fourth = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)

    case = json.loads((dataset / "splits_final.json").read_text())[0]["val"][0]
    # One 64^3 tile of the case (its affine moved with it): one network pass per prediction.
    inputs = root / "inputs"
    inputs.mkdir()
    for channel in ("0000", "0001"):
        source = read_volume(dataset / "imagesTr" / f"{case}_{channel}.nii.gz")
        centre = np.array(source.shape) // 2
        box = tuple(slice(int(c) - 32, int(c) + 32) for c in centre)
        write_volume(crop(source, box), inputs / f"{case}_{channel}.nii.gz", np.float32)
    predict_files(nnunet.model_folder(results, 502, "cpu"), inputs, root / "predictions")
    return {
        "dataset": dataset,
        "fold": fold,
        "first": first,
        "second": second,
        "third": third,
        "fourth": fourth,
        "first_schedule": first_schedule,
        "saved_after_first": saved_after_first,
        "first_debug": first_debug,
        "input": inputs / f"{case}_0000.nii.gz",
        "prediction": root / "predictions" / f"{case}.nii.gz",
    }


def crop_cases_to_their_lesions(dataset: Path, margin: int = 16, least: int = 64) -> None:
    """Cut each case of a raw nnU-Net dataset (both channels and the label, in place) to the box
    around its label's voxels, ``margin`` voxels wider on each side and at least ``least`` voxels
    long (nnU-Net's cpu patch), within the grid."""
    for label_path in sorted((dataset / "labelsTr").glob("*.nii.gz")):
        label = read_volume(label_path)
        found = np.argwhere(label.array > 0)
        box = []
        for axis, size in enumerate(label.shape):
            low, high = int(found[:, axis].min()) - margin, int(found[:, axis].max()) + 1 + margin
            grow = max(least - (high - low), 0)
            low, high = low - grow // 2, high + grow - grow // 2
            shift = max(-low, 0) - max(high - size, 0)
            box.append(slice(low + shift, high + shift))
        case = label_path.name.removesuffix(".nii.gz")
        for channel in ("0000", "0001"):
            image = dataset / "imagesTr" / f"{case}_{channel}.nii.gz"
            write_volume(crop(read_volume(image), tuple(box)), image, np.float32)
        write_volume(crop(label, tuple(box)), label_path, np.uint8)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` run only with MSNEWLESIONS_SLOW=1 (make test-all) or -m slow."""
    if os.environ.get("MSNEWLESIONS_SLOW") == "1" or "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with MSNEWLESIONS_SLOW=1 (make test-all)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def train_from_chain(chain: dict, results: Path, **options: Any) -> Path:
    """A new one-epoch run (2 iterations) on the chain's dataset from its final weights, at a
    rate too small to move any weight measurably (each Adam step moves one by about the rate)."""
    return nnunet.train(
        chain["fold"].parents[3] / "preprocessed",
        results,
        502,
        0,
        "cpu",
        schedule=nnunet.TrainingSchedule(1, 2, 1),
        learning_rate=1e-9,
        initial_weights=chain["fold"] / "checkpoint_final.pth",
        data_workers=0,
        validate=False,
        **options,
    )
