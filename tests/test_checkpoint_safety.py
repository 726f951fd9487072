"""A model file never runs code: a crafted checkpoint that would create a file when unpickled is
refused through --model, --initial-weights and model import, and the file is never created."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from msnewlesions.errors import MSNewLesionsError
from msnewlesions.io import Volume, write_volume
from msnewlesions.model.default import DEFAULT_MODEL
from msnewlesions.model.nnunet.archives import check_plans, load_checkpoint
from tests.conftest import run_cli


class _CreatesAFile:
    """Unpickled, it would call ``Path.touch`` on the marker: code run by loading a model."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


@pytest.fixture()
def crafted(tmp_path: Path) -> tuple[Path, Path]:
    if not (DEFAULT_MODEL / "plans.json").exists():
        pytest.skip("this checkout ships no default model (model/weights)")
    marker = tmp_path / "was-run"
    model = tmp_path / "model"
    (model / "fold_0").mkdir(parents=True)
    for name in ("plans.json", "dataset.json"):
        shutil.copy(DEFAULT_MODEL / name, model / name)
    checkpoint = load_checkpoint(DEFAULT_MODEL / "fold_0" / "checkpoint_final.pth")
    checkpoint["payload"] = _CreatesAFile(marker)
    torch.save(checkpoint, model / "fold_0" / "checkpoint_final.pth")
    assert not marker.exists()
    return model, marker


def test_a_crafted_checkpoint_is_refused_by_segment(
    crafted: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, marker = crafted
    # Two readable scans (read first, in a second): the model is refused before any work on them.
    scans = []
    for seed in (1, 2):
        scans.append(tmp_path / f"scan{seed}.nii.gz")
        values = np.random.default_rng(seed).random((20, 22, 12)).astype(np.float32)
        write_volume(Volume(values, np.eye(4)), scans[-1])
    argv = ["segment", "--baseline", str(scans[0]), "--followup", str(scans[1]), "--out",
            str(tmp_path / "out"), "--model", str(model)]  # fmt: skip
    code, _, err = run_cli(argv, capsys)
    assert code == 1 and "could run code" in err and "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_a_crafted_checkpoint_is_refused_as_initial_weights(
    crafted: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, marker = crafted
    argv = ["train", "--dataset", str(tmp_path / "any"), "--fold", "0", "--initial-weights",
            str(model / "fold_0" / "checkpoint_final.pth")]  # fmt: skip
    code, _, err = run_cli(argv, capsys)
    assert code == 1 and "could run code" in err
    assert not marker.exists()


def test_a_crafted_checkpoint_is_refused_by_model_import(
    crafted: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, marker = crafted
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for path in model.rglob("*"):
            handle.write(path, path.relative_to(model.parent))
    installed = tmp_path / "installed"
    code, _, err = run_cli(
        ["model", "import", "--zip", str(archive), "--out", str(installed)], capsys
    )
    assert code == 1 and "could run code" in err
    assert not marker.exists() and not (installed / "model").exists()


def test_plans_that_name_other_classes_are_refused(tmp_path: Path) -> None:
    plans = json.loads((DEFAULT_MODEL / "plans.json").read_text())
    check_plans(plans, "shipped")  # the shipped model's own plans pass
    configuration = next(iter(plans["configurations"].values()))
    configuration["architecture"]["network_class_name"] = "os.system"
    with pytest.raises(MSNewLesionsError, match=r"'os\.system'"):
        check_plans(plans, "crafted")


def test_a_truncated_checkpoint_is_one_clear_error(tmp_path: Path) -> None:
    source = (DEFAULT_MODEL / "fold_0" / "checkpoint_final.pth").read_bytes()
    broken = tmp_path / "checkpoint.pth"
    broken.write_bytes(source[: len(source) // 3])
    with pytest.raises(MSNewLesionsError, match="not a readable checkpoint"):
        load_checkpoint(broken)
