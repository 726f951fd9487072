"""scripts/ship_default_model.py: the training log a reader of the model card follows."""

from __future__ import annotations

import importlib.util
from pathlib import Path

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
