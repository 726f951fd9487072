"""``msnewlesions finetune``: a manifest of reviewed pairs -> a fine-tuned model folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msnewlesions.finetuning import FinetuneOptions, finetune
from msnewlesions.finetuning.folds import TrainingSettings
from msnewlesions.finetuning.run import TIE_MARGIN
from msnewlesions.preprocessing.pipeline import PreprocessOptions


@dataclass
class FinetuneSummary:
    model: Path
    record: dict[str, Any]

    def summary(self) -> str:
        """What the user reads: held-out figures beside the base model's, and the time."""
        lines = [f"{self.model}: fine-tuned on {len(self.record['pairs'])} pair(s)"]
        held = self.record.get("held_out")
        if held:
            lines.append(f"held-out pairs ({held['scheme']}):")
            lines.append(
                f"  {'pair':<24} {'Dice base':>9} {'Dice new':>9} {'F1 base':>8} {'F1 new':>8}"
            )
            base, tuned = held["base"]["cases"], held["finetuned"]["cases"]
            for name, metrics in tuned.items():
                lines.append(
                    f"  {name:<24} {base[name]['dice']:>9.3f} {metrics['dice']:>9.3f} "
                    f"{_f(base[name]['lesion_f1']):>8} {_f(metrics['lesion_f1']):>8}"
                )
            lines.append(
                f"  pooled lesion F1: base {held['base']['pooled_lesion_f1']:.3f}, "
                f"fine-tuned {held['finetuned']['pooled_lesion_f1']:.3f}"
            )
            if held.get("pooled_lesion_f1_gain", 0.0) < -TIE_MARGIN:
                lines.append(
                    "  warning: below the base model on the pairs it did not see; keep the base "
                    "model, or review more pairs and fine-tune again"
                )
        else:
            lines.append("no held-out figures (one patient): see the model's card")
        settings = self.record["postprocessing"]
        lines.append(
            f"operating point: threshold {settings['threshold']:g}, minimum lesion "
            f"{settings['min_lesion_mm3']:g} mm3"
        )
        seconds = float(self.record["seconds"])
        lines.append(f"time: {seconds / 60:.1f} min ({seconds / 3600:.2f} h)")
        return "\n".join(lines)


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def finetune_model(
    manifest: str | Path,
    out: str | Path,
    model: Path | None = None,
    device: str = "cpu",
    epochs: int = 4,
    iterations: int = 150,
    learning_rate: float = 0.002,
    synthetic_pairs: int = 8,
    work: Path | None = None,
    overwrite: bool = False,
) -> FinetuneSummary:
    """Fine-tune ``model`` (default: the shipped one) on the manifest's pairs into ``out``."""
    options = FinetuneOptions(
        base_model=model,
        training=TrainingSettings(
            epochs=epochs,
            iterations_per_epoch=iterations,
            learning_rate=learning_rate,
            device=device,
        ),
        synthetic_per_pair=synthetic_pairs,
        preprocess=PreprocessOptions(device=device),
        work=work,
    )
    result = finetune(manifest, out, options, overwrite)
    return FinetuneSummary(result.model, result.record)
