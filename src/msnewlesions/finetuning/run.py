"""``finetune``: reviewed pairs -> a model folder that ``segment --model`` takes, with its card.

The run lives in a work folder (default ``OUT.work`` beside ``OUT``) and every step in it is kept
when done: prepared pairs, datasets, nnU-Net checkpoints (every epoch), held-out probabilities.
Running the same command again after a kill goes on from there; a run with other pairs or
settings in the same work folder is refused. ``OUT`` is written last, whole, and the work folder
is kept (delete it when the model is what you want).

Steps: prepare the pairs (:mod:`.prepared`); the held-out folds (:mod:`.folds`), each trained
from the base model's weights and scored, with the base model, on the pairs it did not see; the
operating point chosen on those held-out probabilities (the base model's own setting unless
another is better by more than :data:`TIE_MARGIN` pooled lesion F1); the final training on every
pair; the model folder and its card.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from msnewlesions.atomic import atomic_output_folder, check_output_folder, write_json_atomically
from msnewlesions.errors import MSNewLesionsError
from msnewlesions.finetuning.card import write_card
from msnewlesions.finetuning.folds import (
    Fold,
    TrainingSettings,
    plan_folds,
    preprocess_with_base_plans,
    train_fold,
    write_fold_dataset,
)
from msnewlesions.finetuning.prepared import PreparedPair, prepare_pair
from msnewlesions.finetuning.references import ReviewedPair, read_reviewed_pairs
from msnewlesions.io import Volume, read_volume, sha256_of, write_volume_atomically
from msnewlesions.lesions import (
    model_postprocessing,
    write_model_postprocessing,
)
from msnewlesions.model import nnunet
from msnewlesions.model.default import default_model
from msnewlesions.operating_point import ScoredCase, choose_operating_point, grid, score_cases
from msnewlesions.preprocessing.pipeline import PreprocessOptions

logger = logging.getLogger(__name__)

#: Pooled lesion F1 by which another operating point must beat the base model's own to replace it.
TIE_MARGIN = 0.02


@dataclass(frozen=True)
class FinetuneOptions:
    """``base_model``: the model fine-tuned (default: the shipped one); ``work``: the run's
    folder (default: ``OUT.work``)."""

    base_model: Path | None = None
    training: TrainingSettings = field(default_factory=TrainingSettings)
    synthetic_per_pair: int = 8
    seed: int = 2026
    preprocess: PreprocessOptions = field(default_factory=PreprocessOptions)
    work: Path | None = None


@dataclass
class FinetuneResult:
    """The model written, what was measured on held-out pairs, and how long it took."""

    model: Path
    record: dict[str, Any]

    @property
    def seconds(self) -> float:
        return float(self.record["seconds"])


def _run_identity(
    pairs: list[ReviewedPair], base: Path, options: FinetuneOptions
) -> dict[str, Any]:
    """What makes a run: its pairs' files, the base model's weights and the settings."""
    return {
        "pairs": {
            p.pair_id: {
                "patient": p.patient,
                **{
                    role: sha256_of(getattr(p, role))
                    for role in ("baseline", "followup", "new_lesions")
                },
            }
            for p in pairs
        },
        "base_model": {f.parent.name: sha256_of(f) for f in sorted(base.glob("fold_*/*.pth"))},
        "training": asdict(options.training),
        "synthetic_per_pair": options.synthetic_per_pair,
        "seed": options.seed,
    }


def _open_work(work: Path, identity: dict[str, Any]) -> dict[str, Any]:
    """The run's state, new or the one a killed run left (refused if it was another run)."""
    work.mkdir(parents=True, exist_ok=True)
    state_file = work / "run.json"
    if state_file.exists():
        state = json.loads(state_file.read_text())
        if state.get("identity") != identity:
            raise MSNewLesionsError(
                f"{work} holds a fine-tuning run with other pairs, base model or settings; "
                "give another output folder (or --work), or delete that folder to start again."
            )
        logger.info("resuming the run in %s (%.0f s spent before)", work, state["seconds"])
        return dict(state)
    state = {"identity": identity, "seconds": 0.0, "steps": {}}
    write_json_atomically(state_file, state)
    return state


class _Clock:
    """Seconds spent on the run, across resumed runs, saved after every step."""

    def __init__(self, work: Path, state: dict[str, Any]) -> None:
        self.work, self.state = work, state
        self.start, self.before = time.monotonic(), float(state["seconds"])

    @property
    def seconds(self) -> float:
        return self.before + time.monotonic() - self.start

    def done(self, step: str, **facts: Any) -> None:
        self.state["steps"][step] = {"at_seconds": round(self.seconds, 1), **facts}
        self.state["seconds"] = round(self.seconds, 1)
        write_json_atomically(self.work / "run.json", self.state)


def _probability(predictor: Any, pair: PreparedPair, cache: Path) -> Volume:
    """A model's probability map of a prepared pair (computed once, cached as float16)."""
    if cache.exists():
        cached = read_volume(cache)
        return cached.with_array(cached.array.astype(np.float32))
    probability = predictor().probability(
        read_volume(pair.image("baseline")), read_volume(pair.image("followup"))
    )
    write_volume_atomically(probability, cache, np.float32)
    return probability


def _scored(pair: PreparedPair, probability: Volume) -> ScoredCase:
    return ScoredCase(
        pair.pair.pair_id, probability, read_volume(pair.label), read_volume(pair.parenchyma)
    )


def _train(
    fold: Fold,
    prepared: dict[str, PreparedPair],
    work: Path,
    base: Path,
    options: FinetuneOptions,
) -> Path:
    """The fold's dataset written and preprocessed with the base's plans, then trained (or
    resumed, or found trained); its nnU-Net model folder."""
    raw = write_fold_dataset(
        fold, prepared, work / "nnunet" / "raw", options.synthetic_per_pair, options.seed
    )
    preprocess_with_base_plans(raw, work / "nnunet" / "preprocessed", base)
    return train_fold(fold, work, base, options.training)


def _held_out_probabilities(
    folds: list[Fold],
    prepared: dict[str, PreparedPair],
    work: Path,
    base: Path,
    options: FinetuneOptions,
    clock: _Clock,
) -> tuple[list[ScoredCase], list[ScoredCase]]:
    """Each held-out fold trained and its pairs predicted; the base model on the same pairs."""
    tuned: list[ScoredCase] = []
    for index, fold in enumerate(folds, start=1):
        logger.info(
            "training %d of %d (%s): %d pair(s) trained on, %s held out",
            index,
            len(folds) + 1,
            fold.name,
            len(fold.train),
            ", ".join(fold.held_out),
        )
        model = _train(fold, prepared, work, base, options)
        fold_predictor = functools.cache(
            functools.partial(
                nnunet.NewLesionPredictor, model, folds=[0], device=options.training.device
            )
        )

        for key in fold.held_out:
            cache = work / "probabilities" / f"fold{fold.dataset_id}" / f"{key}.nii.gz"
            tuned.append(_scored(prepared[key], _probability(fold_predictor, prepared[key], cache)))
        clock.done(f"fold {fold.name}")
    base_predictor = functools.cache(
        functools.partial(nnunet.NewLesionPredictor, base, device=options.training.device)
    )

    before = [
        _scored(
            prepared[c.name],
            _probability(
                base_predictor,
                prepared[c.name],
                work / "probabilities" / "base" / f"{c.name}.nii.gz",
            ),
        )
        for c in tuned
    ]
    return tuned, before


def finetune(
    manifest: str | Path,
    out: str | Path,
    options: FinetuneOptions | None = None,
    overwrite: bool = False,
) -> FinetuneResult:
    """Fine-tune ``options.base_model`` on the manifest's reviewed pairs into the model ``out``."""
    options = options or FinetuneOptions()
    out = Path(out)
    pairs = read_reviewed_pairs(manifest)
    base = nnunet.check_model(options.base_model or default_model())
    check_output_folder(out, overwrite, [p.followup for p in pairs])
    work = options.work or out.with_name(out.name + ".work")
    state = _open_work(work, _run_identity(pairs, base, options))
    clock = _Clock(work, state)
    prepared = {}
    for index, pair in enumerate(pairs, start=1):
        logger.info("pair %d of %d (%s): preparing", index, len(pairs), pair.pair_id)
        prepared[pair.pair_id] = prepare_pair(pair, work, options.preprocess)
    clock.done("pairs prepared")
    folds = plan_folds({p.pair_id: p.patient for p in pairs})
    held_out_folds = [fold for fold in folds if not fold.is_final]
    base_settings = model_postprocessing(base)
    record: dict[str, Any] = {
        "pairs": [p.pair_id for p in pairs],
        "patients": sorted({p.patient for p in pairs}),
        "folds": [asdict(fold) for fold in folds],
        "base_model": str(base),
        "base_postprocessing": asdict(base_settings),
        "training": asdict(options.training),
        "synthetic_per_pair": options.synthetic_per_pair,
    }
    chosen = base_settings
    if held_out_folds:
        tuned, before = _held_out_probabilities(
            held_out_folds, prepared, work, base, options, clock
        )
        choice, _ = choose_operating_point(
            tuned, grid(base_settings.min_depth_mm), prefer=base_settings, tie_margin=TIE_MARGIN
        )
        chosen = choice.settings
        record["held_out"] = {
            "scheme": "leave one patient out"
            if len(held_out_folds) > 1
            else held_out_folds[0].name,
            "base": score_cases(before, base_settings).as_dict(),
            "finetuned": choice.as_dict(),
            "finetuned_at_base_setting": score_cases(tuned, base_settings).as_dict(),
        }
        gain = choice.pooled_lesion_f1 - record["held_out"]["base"]["pooled_lesion_f1"]
        record["held_out"]["pooled_lesion_f1_gain"] = round(gain, 4)
        if gain < -TIE_MARGIN:
            logger.warning(
                "on the pairs it did not see, the fine-tuned model found new lesions less well "
                "than the base model (pooled lesion F1 %.3f against %.3f): keep the base model "
                "for now, or review more pairs and fine-tune again",
                choice.pooled_lesion_f1,
                choice.pooled_lesion_f1 - gain,
            )
    else:
        logger.warning(
            "one patient only: no pair is left to score the fine-tuned model on; the base "
            "model's operating point is kept and the card has no held-out figures"
        )
    final = folds[-1]
    logger.info("training %d of %d (final): every pair", len(folds), len(folds))
    final_model = _train(final, prepared, work, base, options)
    clock.done("final training")
    record["postprocessing"] = asdict(chosen)
    record["seconds"] = round(clock.seconds, 1)
    with atomic_output_folder(out, overwrite) as folder:
        nnunet.copy_model(final_model, folder)
        for name in ("dataset_fingerprint.json", "inference.json"):
            if (base / name).exists():
                shutil.copy2(base / name, folder / name)
        note = (
            f"finetune: chosen on the held-out probabilities of {len(held_out_folds)} fold(s)"
            if held_out_folds
            else "finetune: the base model's, kept (one patient: nothing held out)"
        )
        write_model_postprocessing(folder, chosen, note)
        write_json_atomically(folder / "finetune.json", record)
        write_card(folder / "MODEL_CARD.md", record)
    clock.done("model written")
    return FinetuneResult(out, record)
