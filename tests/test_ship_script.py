"""scripts/ship_default_model.py: the training log a reader of the model card follows."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ship_default_model.py"


def _ship_module():
    spec = importlib.util.spec_from_file_location("ship_default_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _checkpoint(path: Path, train_losses: list[float]) -> Path:
    epochs = len(train_losses)
    logging = {
        "train_losses": train_losses,
        "val_losses": [-0.5] * epochs,
        "mean_fg_dice": [0.7] * epochs,
        "ema_fg_dice": [0.7] * epochs,
        "lrs": [0.0004] * epochs,
        "epoch_start_timestamps": [60.0 * i for i in range(epochs)],
        "epoch_end_timestamps": [60.0 * i + 330.0 for i in range(epochs)],
    }
    torch.save({"logging": logging}, path)
    return path


def test_a_run_from_the_shipped_weights_continues_the_log(tmp_path: Path) -> None:
    ship = _ship_module()
    first = ship.training_log(_checkpoint(tmp_path / "a.pth", [-0.1, -0.2, -0.3]))
    notes = first.replace("is noisy.\n", "is noisy.\n\nFrom epoch 2 on, other pairs.\n", 1)
    # The new run (2 epochs, numbered from 0 in its checkpoint) started from epoch 2's weights.
    log = ship.training_log(_checkpoint(tmp_path / "b.pth", [-0.4, -0.5]), notes, first_epoch=3)
    rows = [line for line in log.splitlines() if line.startswith("| ") and "---" not in line]
    epochs_and_losses = [tuple(c.strip() for c in row.split("|")[1:3]) for row in rows[1:]]
    assert epochs_and_losses == [
        ("0", "-0.1000"),
        ("1", "-0.2000"),
        ("2", "-0.3000"),
        ("3", "-0.4000"),
        ("4", "-0.5000"),
    ]
    assert "From epoch 2 on, other pairs." in log  # hand-written notes stay
    assert "| 3 | -0.4000 | -0.5000 | 0.700 (0.700) | 0.0004 | 5.5 |" in log
    # Without --first-epoch the table is the checkpoint's own, from epoch 0.
    plain = ship.training_log(tmp_path / "b.pth", notes)
    assert "| 0 | -0.4000 |" in plain and "-0.1000" not in plain


def _model_folder(path: Path, patch_size: list[int]) -> Path:
    """A trained model folder as the script reads it: plans, dataset and fold 0's checkpoint."""
    path.mkdir(parents=True)
    plans = {"configurations": {"3d_fullres": {"patch_size": patch_size, "spacing": [1, 1, 1]}}}
    (path / "plans.json").write_text(json.dumps(plans))
    for name in ("dataset.json", "dataset_fingerprint.json"):
        (path / name).write_text("{}")
    (path / "fold_0").mkdir()
    checkpoint = _checkpoint(path / "fold_0" / "checkpoint_final.pth", [-0.1, -0.2])
    saved = torch.load(checkpoint, weights_only=False)
    torch.save(saved | {"optimizer_state": {"lr": 0.01}, "network_weights": {}}, checkpoint)
    return path


def test_a_fold_joins_the_shipped_model_and_a_new_model_replaces_the_ensemble(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    ship = _ship_module()
    weights = tmp_path / "weights"
    monkeypatch.setattr(ship, "WEIGHTS", weights)
    first = _model_folder(tmp_path / "first", [64, 64, 64])
    assert ship.main([str(first), "--checkpoint", "checkpoint_final.pth"]) == 0
    (weights / "postprocessing.json").write_text('{"threshold": 0.3}')
    (weights / "inference.json").write_text('{"tile_step_size": 0.6}')

    candidate = _model_folder(tmp_path / "candidate", [64, 64, 64])
    assert (
        ship.main([str(candidate), "--checkpoint", "checkpoint_final.pth", "--as-fold", "1"]) == 0
    )
    added = torch.load(weights / "fold_1" / "checkpoint_final.pth", weights_only=False)
    assert added["optimizer_state"] is None  # stripped like fold 0
    assert (weights / "fold_0" / "checkpoint_final.pth").exists()
    # The operating point, the window step and fold 0's log stay; fold 1 has its own log.
    assert (weights / "postprocessing.json").exists() and (weights / "inference.json").exists()
    log = (weights / "TRAINING_LOG_fold_1.md").read_text()
    assert log.startswith("# Training log of fold 1 of the shipped model\n")
    assert "| 1 | -0.2000 |" in log
    assert "2 folds" in capsys.readouterr().out

    # Fold 1 fine-tuned further from its shipped weights replaces it and continues its log.
    further = _model_folder(tmp_path / "further", [64, 64, 64])
    arguments = [str(further), "--checkpoint", "checkpoint_final.pth", "--as-fold", "1"]
    assert ship.main([*arguments, "--first-epoch", "2"]) == 0
    log = (weights / "TRAINING_LOG_fold_1.md").read_text()
    rows = [line.split("|")[1].strip() for line in log.splitlines() if line.startswith("| ")]
    assert rows[2:] == ["0", "1", "2", "3"]  # after the header and its rule
    assert "2 folds" in capsys.readouterr().out

    # A network the shipped plans would not build is refused, and nothing is written.
    other = _model_folder(tmp_path / "other", [96, 96, 96])
    assert ship.main([str(other), "--checkpoint", "checkpoint_final.pth", "--as-fold", "2"]) == 1
    assert "patch_size" in capsys.readouterr().err and not (weights / "fold_2").exists()

    # Shipping a new fold 0 replaces the whole ensemble: the other folds and their settings go.
    assert ship.main([str(other), "--checkpoint", "checkpoint_final.pth"]) == 0
    assert sorted(p.name for p in weights.iterdir() if p.is_dir()) == ["fold_0"]
    assert not (weights / "inference.json").exists()
    assert not (weights / "TRAINING_LOG_fold_1.md").exists()
