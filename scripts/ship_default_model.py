"""Copy a trained fold into the package as the default model, and write its training log.

    python scripts/ship_default_model.py MODEL_FOLDER [--checkpoint checkpoint_latest.pth]
        [--first-epoch K] [--as-fold N]

MODEL_FOLDER is nnU-Net's ``Trainer__Plans__configuration`` folder (with plans.json,
dataset.json and fold_0/). The chosen checkpoint of fold 0 is stripped of its optimizer state and
written as ``src/msnewlesions/model/weights/fold_0/checkpoint_final.pth`` (the name the predictor
loads); ``TRAINING_LOG.md`` beside it gets one row per epoch (losses, hold-out pseudo-Dice,
learning rate, minutes) from the checkpoint's own log; hand-written notes between the log's
header and its table (runs not in the table, changes of data) are kept. A run started from the
shipped weights (``train --initial-weights``) counts its epochs from 0 again: ``--first-epoch K``
keeps the previous log's rows 0 to K-1 and numbers the new run's epochs from K on.

``--as-fold N`` (N >= 1) adds the checkpoint to the shipped model as one more fold of an ensemble
(nnU-Net averages every fold's probabilities) instead of replacing it: the shipped plans, fold 0,
post-processing and log stay, the candidate's plans must build the same network on the same
inputs, and its log is written as ``TRAINING_LOG_fold_N.md`` (a fold fine-tuned from the
shipped fold N replaces it: ``--first-epoch K`` keeps that log's rows 0 to K-1, as for fold 0).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

from msnewlesions.model.nnunet import strip_checkpoint

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "msnewlesions" / "model" / "weights"


TABLE_HEADER = (
    "| epoch | train loss | validation loss | pseudo-Dice (EMA) | learning rate | minutes |"
)


def kept_notes(previous_log: str) -> list[str]:
    """The hand-written paragraphs of a previous log (between its fixed header and its table)."""
    if TABLE_HEADER not in previous_log or "is noisy.\n" not in previous_log:
        return []
    notes = previous_log.split("is noisy.\n", 1)[1].split(TABLE_HEADER, 1)[0].strip("\n")
    return [*notes.split("\n"), ""] if notes else []


def earlier_rows(previous_log: str, first_epoch: int) -> list[str]:
    """The previous log's table rows of the epochs before ``first_epoch``."""
    if TABLE_HEADER not in previous_log:
        return []
    rows = []
    for line in previous_log.split(TABLE_HEADER, 1)[1].splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells and cells[0].isdigit() and int(cells[0]) < first_epoch:
            rows.append(line)
    return rows


def training_log(
    checkpoint_path: Path,
    previous_log: str = "",
    first_epoch: int = 0,
    title: str = "Training log of the shipped model",
) -> str:
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    log = checkpoint["logging"]
    lines = [
        f"# {title}",
        "",
        "One row per epoch, from the checkpoint's own log (nnU-Net's logger). Training loss:",
        "Dice + cross-entropy on the training pairs (lower is better; nnU-Net's Dice term is",
        "negative). Validation loss and pseudo-Dice: nnU-Net's per-epoch estimate on patches of",
        "the synthetic hold-out pairs (validation split of fold 0; anatomy never trained on).",
        "Only a few of those batches hold a lesion, so the pseudo-Dice is noisy.",
        "",
        *kept_notes(previous_log),
        TABLE_HEADER,
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        *earlier_rows(previous_log, first_epoch),
    ]
    epochs = len(log["train_losses"])
    for epoch in range(epochs):
        minutes = (log["epoch_end_timestamps"][epoch] - log["epoch_start_timestamps"][epoch]) / 60
        lines.append(
            f"| {first_epoch + epoch} | {log['train_losses'][epoch]:.4f} | "
            f"{log['val_losses'][epoch]:.4f} | "
            f"{log['mean_fg_dice'][epoch]:.3f} ({log['ema_fg_dice'][epoch]:.3f}) | "
            f"{log['lrs'][epoch]:.4g} | {minutes:.1f} |"
        )
    return "\n".join(lines) + "\n"


#: What a fold added to the shipped model must share with it: the network and what it is fed.
SHARED_PLAN_KEYS = (
    "patch_size",
    "spacing",
    "architecture",
    "normalization_schemes",
    "use_mask_for_norm",
)


def plan_differences(shipped: dict, candidate: dict) -> list[str]:
    """The 3d_fullres settings on which a candidate fold's plans differ from the shipped plans."""
    ours = shipped["configurations"]["3d_fullres"]
    theirs = candidate["configurations"]["3d_fullres"]
    return [key for key in SHARED_PLAN_KEYS if ours.get(key) != theirs.get(key)]


def add_fold(model: Path, source: Path, fold: int, first_epoch: int = 0) -> int:
    """Ship ``source`` as ``fold_<fold>`` of the default model, beside the folds already there
    (replacing that fold if it is there; ``first_epoch`` as for fold 0's log)."""
    if not (WEIGHTS / "fold_0" / "checkpoint_final.pth").exists():
        print(f"{WEIGHTS} has no fold 0 to add a fold to; ship one first", file=sys.stderr)
        return 1
    shipped = json.loads((WEIGHTS / "plans.json").read_text())
    differing = plan_differences(shipped, json.loads((model / "plans.json").read_text()))
    if differing:
        print(f"{model}'s plans differ from the shipped ones in {differing}", file=sys.stderr)
        return 1
    (WEIGHTS / f"fold_{fold}").mkdir(exist_ok=True)
    strip_checkpoint(source, WEIGHTS / f"fold_{fold}" / "checkpoint_final.pth")
    log_file = WEIGHTS / f"TRAINING_LOG_fold_{fold}.md"
    previous = log_file.read_text() if log_file.exists() else ""  # its hand-written notes stay
    title = f"Training log of fold {fold} of the shipped model"
    log_file.write_text(training_log(source, previous, first_epoch, title=title))
    sizes = [p.stat().st_size for p in WEIGHTS.glob("fold_*/checkpoint_final.pth")]
    print(
        f"shipped {source} -> {WEIGHTS}/fold_{fold} ({len(sizes)} folds, "
        f"{sum(sizes) / 2**20:.1f} MB in all); the post-processing and inference.json were kept"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--checkpoint", default="checkpoint_latest.pth")
    parser.add_argument(
        "--first-epoch",
        type=int,
        default=0,
        help="the run started from the shipped weights: keep the log's earlier rows, number on",
    )
    parser.add_argument(
        "--as-fold",
        type=int,
        default=0,
        help="N >= 1: add the checkpoint as fold N of the shipped model (an ensemble)",
    )
    args = parser.parse_args(argv)
    source = args.model / "fold_0" / args.checkpoint
    if not source.exists():
        print(f"{source} does not exist", file=sys.stderr)
        return 1
    if args.as_fold < 0:
        print("--as-fold must be 0 or more", file=sys.stderr)
        return 1
    if args.as_fold:
        return add_fold(args.model, source, args.as_fold, args.first_epoch)
    (WEIGHTS / "fold_0").mkdir(parents=True, exist_ok=True)
    for name in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
        shutil.copy2(args.model / name, WEIGHTS / name)
    strip_checkpoint(source, WEIGHTS / "fold_0" / "checkpoint_final.pth")
    log_file = WEIGHTS / "TRAINING_LOG.md"
    previous = log_file.read_text() if log_file.exists() else ""
    # Its hand-written notes are kept (and with --first-epoch its earlier rows).
    log_file.write_text(training_log(source, previous, args.first_epoch))
    size = (WEIGHTS / "fold_0" / "checkpoint_final.pth").stat().st_size / 2**20
    print(f"shipped {source} -> {WEIGHTS} ({size:.1f} MB)")
    # What belonged to the previous weights goes: their operating point, and an ensemble's
    # other folds with their logs and window step.
    for fold in WEIGHTS.glob("fold_*"):
        if fold.name != "fold_0":
            shutil.rmtree(fold)
    stale = ["postprocessing.json", "inference.json", *WEIGHTS.glob("TRAINING_LOG_fold_*.md")]
    for leftover in stale:
        (WEIGHTS / leftover).unlink(missing_ok=True)
    print(
        "choose its post-processing next: python benchmarks/postprocessing.py "
        "--dataset RAW_DATASET --write"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
