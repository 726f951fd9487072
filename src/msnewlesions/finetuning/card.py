"""A fine-tuned model's card: what it was trained on, how long, and what held-out pairs show."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from msnewlesions.atomic import write_text_atomically


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _per_pair(score: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(score.get("cases", {}))


def _setting(settings: dict[str, Any]) -> str:
    depth = settings.get("min_depth_mm", 0) or 0
    return (
        f"threshold {settings['threshold']:g}, lesions above {settings['min_lesion_mm3']:g} mm3"
        + (f", at least {depth:g} mm inside the brain" if depth else "")
    )


def held_out_table(record: dict[str, Any]) -> str:
    """Markdown: Dice and lesion F1 of each held-out pair, base model beside the fine-tuned one."""
    held = record["held_out"]
    base, tuned = _per_pair(held["base"]), _per_pair(held["finetuned"])
    lines = [
        "| held-out pair | Dice, base | Dice, fine-tuned | lesion F1, base | lesion F1, fine-tuned "
        "| lesions (reference / base / fine-tuned) |",
        "| --- | :---: | :---: | :---: | :---: | :---: |",
    ]
    for name in tuned:
        b, t = base[name], tuned[name]
        lines.append(
            f"| {name} | {_figure(b['dice'])} | {_figure(t['dice'])} | {_figure(b['lesion_f1'])} "
            f"| {_figure(t['lesion_f1'])} | {t['n_ref_lesions']} / {b['n_pred_lesions']} / "
            f"{t['n_pred_lesions']} |"
        )
    lines.append(
        f"| **mean** | {_figure(held['base']['dice'])} | {_figure(held['finetuned']['dice'])} | "
        f"{_figure(held['base']['lesion_f1'])} | {_figure(held['finetuned']['lesion_f1'])} | |"
    )
    return "\n".join(lines)


def write_card(path: Path, record: dict[str, Any]) -> Path:
    """Write the fine-tuned model's card (Markdown) from the run's record."""
    training = record["training"]
    pairs, patients = record["pairs"], record["patients"]
    hours = record["seconds"] / 3600
    sections = [
        "# Fine-tuned new-lesion model",
        "",
        f"Made by `msnewlesions finetune` on {datetime.date.today().isoformat()} from the model in "
        f"`{record['base_model']}`. It is a research tool: every finding needs an expert's review.",
        "",
        "## Training data",
        "",
        f"{len(pairs)} reviewed pair(s) of {len(patients)} patient(s): {', '.join(pairs)}. Each "
        f"trained with {record['synthetic_per_pair']} synthetic pairs drawn on its own baseline "
        "(real anatomy, the shapes of its reference lesions), so that a few real pairs are not "
        "learnt by heart; the real pairs make about a third of the training samples.",
        "",
        "## Training",
        "",
        f"From the base model's fold {training['base_fold']} with the paper's trainer: "
        f"{training['epochs']} epochs of {training['iterations_per_epoch']} iterations, learning "
        f"rate {training['learning_rate']:g} (divided by 5 for the last "
        f"{training['anneal_epochs']} epoch(s)), on {training['device']}. The whole run took "
        f"{hours:.2f} hours ({record['seconds'] / 60:.0f} min), every training included.",
        "",
        "## Operating point",
        "",
        f"{_setting(record['postprocessing'])} (the base model's: "
        f"{_setting(record['base_postprocessing'])}).",
        "",
        "## Held-out figures",
        "",
    ]
    if "held_out" in record:
        held = record["held_out"]
        sections += [
            f"Scheme: {held['scheme']}. Each pair was scored by a model fine-tuned without it "
            "(the model of this folder saw every pair; these figures are those of its "
            "held-out folds), against its reference mask on the model's grid (MNI, 1 mm), with "
            "MSSEG-2's lesion-wise detection; the base model at its own operating point.",
            "",
            held_out_table(record),
            "",
            f"Pooled lesion F1: base {held['base']['pooled_lesion_f1']:.3f}, fine-tuned "
            f"{held['finetuned']['pooled_lesion_f1']:.3f}.",
            "",
            "With few pairs these figures are noisy: one lesion more or less found moves a "
            "pair's lesion F1 by 0.1 or more.",
        ]
        if held.get("pooled_lesion_f1_gain", 0.0) < -0.02:
            sections += [
                "",
                "**On the pairs it did not see, this model found new lesions less well than the "
                "base model.** Keep the base model for now, or review more pairs and fine-tune "
                "again.",
            ]
    else:
        sections.append(
            "None: the pairs are of one patient, and no pair was left to score the model on."
        )
    write_text_atomically(path, "\n".join(sections) + "\n")
    return path
