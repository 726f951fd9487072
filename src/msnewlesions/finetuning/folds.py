"""The trainings of a fine-tuning run: held-out folds for honest figures, then the final model.

With fewer than :data:`HELD_OUT_SPLIT_FROM` patients each fold leaves one patient's pairs out
(leave one pair out when every patient has one pair); with more, one fold holds out a fifth of
the patients. The final run trains on every pair. Each training is an nnU-Net dataset of its own
(``WORK/nnunet/raw/DatasetNNN_MSNewLesions``):

* the real pairs it trains on, each named ``real_copies`` times in the training split so that
  they make about :data:`REAL_SHARE` of the samples (nnU-Net draws training cases uniformly);
* synthetic pairs drawn on those pairs' baselines (real anatomy of the same patients) with the
  shapes of their reference lesions (fewer than :data:`MIN_SHAPES`: ellipsoids join them), model
  v2's realistic synthesis: a few real pairs are not overfitted, and the network keeps seeing
  pairs whose every label is exact;
* the held-out pairs as its validation split (nnU-Net's pseudo-Dice in the training log).

Every dataset is preprocessed with the base model's own plans (same network, same
normalisation), and trained from the base model's weights with the paper's trainer.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from msnewlesions import template
from msnewlesions.atomic import link_or_copy, remove_partial_files, write_json_atomically
from msnewlesions.finetuning.prepared import CHANNELS, PreparedPair
from msnewlesions.io import write_volume_atomically
from msnewlesions.model import nnunet
from msnewlesions.model.nnunet.planning import preprocess_new_cases
from msnewlesions.model.synthesis import LesionShape, pair_rng, synthesize_pair
from msnewlesions.model.synthesis.settings import REALISTIC

logger = logging.getLogger(__name__)

#: From this many patients on, one held-out split instead of leaving each patient out.
HELD_OUT_SPLIT_FROM = 10
#: The share of training samples drawn from real pairs.
REAL_SHARE = 1 / 3
#: Fewer real lesion shapes than this: ellipsoids of real lesions' sizes join the library.
MIN_SHAPES = 20
#: The first dataset id of a run's trainings (the final run; its folds follow).
FIRST_DATASET_ID = 900


@dataclass(frozen=True)
class Fold:
    """One training: its name, dataset id, the pairs it trains on and those it is scored on."""

    name: str
    dataset_id: int
    train: tuple[str, ...]
    held_out: tuple[str, ...] = ()

    @property
    def is_final(self) -> bool:
        return not self.held_out


def plan_folds(pairs: dict[str, str], seed: int = 12345) -> list[Fold]:
    """``pairs``: pair id -> patient. The held-out folds (none with one patient), then the final."""
    patients = sorted(set(pairs.values()))
    everything = tuple(sorted(pairs))
    folds: list[Fold] = []
    if len(patients) >= HELD_OUT_SPLIT_FROM:
        shuffled = patients[:]
        random.Random(seed).shuffle(shuffled)
        held = set(shuffled[: max(1, round(len(patients) / 5))])
        folds.append(
            Fold(
                "held-out split",
                FIRST_DATASET_ID + 1,
                tuple(p for p in everything if pairs[p] not in held),
                tuple(p for p in everything if pairs[p] in held),
            )
        )
    elif len(patients) > 1:
        for index, patient in enumerate(patients, start=1):
            held_out = tuple(p for p in everything if pairs[p] == patient)
            folds.append(
                Fold(
                    f"without {patient}",
                    FIRST_DATASET_ID + index,
                    tuple(p for p in everything if pairs[p] != patient),
                    held_out,
                )
            )
    return [*folds, Fold("final", FIRST_DATASET_ID, everything)]


def ellipsoid_shapes(count: int, seed: int) -> list[LesionShape]:
    """``count`` ellipsoidal lesions (radii 1-4 mm, 15-270 mm3) at random deep white-matter
    positions of the template: what joins a library of too few real shapes."""
    rng = np.random.default_rng(seed)
    white_matter = np.argwhere(template.mni_white_matter().array > 0.9)
    shapes = []
    for index in range(count):
        radii = rng.uniform(1.0, 4.0, size=3)
        extent = np.ceil(radii).astype(int)
        axes = [np.arange(-e, e + 1) / r for e, r in zip(extent, radii, strict=True)]
        grid = np.meshgrid(*axes, indexing="ij")
        mask = sum(axis**2 for axis in grid) <= 1.0
        centre = white_matter[int(rng.integers(len(white_matter)))]
        corner = tuple(int(c - e) for c, e in zip(centre, extent, strict=True))
        shapes.append(LesionShape(np.ascontiguousarray(mask), corner, f"ellipsoid:{index}"))  # type: ignore[arg-type]
    return shapes


def write_fold_dataset(
    fold: Fold,
    prepared: dict[str, PreparedPair],
    raw_root: Path,
    synthetic_per_pair: int,
    seed: int,
) -> Path:
    """The fold's raw nnU-Net dataset (resumable: a case whose label exists is kept)."""
    folder = raw_root / nnunet.dataset_name(fold.dataset_id)
    images, labels = folder / "imagesTr", folder / "labelsTr"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    remove_partial_files(folder)
    everything = sorted(prepared)
    library = [shape for key in fold.train for shape in prepared[key].lesion_shapes()]
    real_shapes = len(library)
    if real_shapes < MIN_SHAPES:
        library += ellipsoid_shapes(MIN_SHAPES - real_shapes, seed)
    synthetic: list[str] = []
    for key in fold.train:
        anatomy = prepared[key].anatomy()
        for index in range(synthetic_per_pair):
            name = f"{key}-synthetic{index:03d}"
            synthetic.append(name)
            if (labels / f"{name}.nii.gz").exists():
                continue
            rng = pair_rng(seed, everything.index(key), index)
            pair = synthesize_pair(anatomy, library, rng, REALISTIC)
            write_volume_atomically(pair.baseline, images / f"{name}_0000.nii.gz", np.float32)
            write_volume_atomically(pair.followup, images / f"{name}_0001.nii.gz", np.float32)
            write_volume_atomically(pair.new_lesions, labels / f"{name}.nii.gz", np.uint8)
    for key in (*fold.train, *fold.held_out):
        for channel_index, channel in enumerate(CHANNELS):
            link_or_copy(prepared[key].image(channel), images / f"{key}_{channel_index:04d}.nii.gz")
        link_or_copy(prepared[key].label, labels / f"{key}.nii.gz")
    copies = max(1, round(REAL_SHARE * len(synthetic) / ((1 - REAL_SHARE) * len(fold.train))))
    train = [key for key in fold.train for _ in range(copies)] + synthetic
    validation = list(fold.held_out) or list(fold.train)
    nnunet.write_dataset_json(folder, len(fold.train) + len(fold.held_out) + len(synthetic))
    write_json_atomically(folder / "splits_final.json", [{"train": train, "val": validation}])
    write_json_atomically(
        folder / "msnewlesions_fold.json",
        {
            "fold": fold.name,
            "train": list(fold.train),
            "held_out": list(fold.held_out),
            "real_copies": copies,
            "synthetic_pairs": len(synthetic),
            "real_lesion_shapes": real_shapes,
        },
    )
    return folder


def base_configuration(base_model: Path) -> tuple[nnunet.Config, nnunet.Network]:
    """The base model's plans (``cpu`` or ``paper``) and network, from its files."""
    plans = json.loads((base_model / "plans.json").read_text())
    config: nnunet.Config = "paper" if plans.get("plans_name") == nnunet.PLANS["paper"] else "cpu"
    checkpoint = nnunet.load_checkpoint(
        next(iter(sorted(base_model.glob("fold_*/checkpoint_final.pth"))))
    )
    trainer = checkpoint.get("trainer_name")
    network: nnunet.Network = "concatenation"
    for name, trainer_name in nnunet.TRAINERS.items():
        if trainer_name == trainer:
            network = name  # type: ignore[assignment]
    return config, network


def preprocess_with_base_plans(raw_folder: Path, preprocessed_root: Path, base_model: Path) -> None:
    """nnU-Net's preprocessing of a fold's dataset with the base model's plans, not new ones."""
    target = preprocessed_root / raw_folder.name
    if not (target / f"{nnunet.PLANS['cpu']}.json").exists():
        target.mkdir(parents=True, exist_ok=True)
        (target / "gt_segmentations").mkdir(exist_ok=True)
        plans = json.loads((base_model / "plans.json").read_text())
        plans["dataset_name"] = raw_folder.name
        for name in ("dataset_fingerprint.json",):
            if (base_model / name).exists():
                shutil.copy2(base_model / name, target / name)
        shutil.copy2(raw_folder / "dataset.json", target / "dataset.json")
        write_json_atomically(target / f"{nnunet.PLANS['paper']}.json", plans)
        write_json_atomically(target / f"{nnunet.PLANS['cpu']}.json", plans)
    plans = json.loads((target / f"{nnunet.PLANS['paper']}.json").read_text())
    identifier = plans["configurations"][nnunet.CONFIGURATION]["data_identifier"]
    (target / identifier).mkdir(exist_ok=True)
    preprocess_new_cases(raw_folder.parent, preprocessed_root, nnunet.dataset_id_of(raw_folder))


@dataclass(frozen=True)
class TrainingSettings:
    """How each training of a fine-tuning run goes."""

    epochs: int = 4
    iterations_per_epoch: int = 150
    learning_rate: float = 0.002
    anneal_epochs: int = 1
    validation_iterations: int = 5
    device: str = "cpu"
    base_fold: str = "0"

    def schedule(self) -> nnunet.TrainingSchedule:
        return nnunet.TrainingSchedule(
            epochs=self.epochs,
            iterations_per_epoch=self.iterations_per_epoch,
            validation_iterations=self.validation_iterations,
            checkpoint_every=1,
            anneal_epochs=min(self.anneal_epochs, self.epochs - 1),
        )


def train_fold(fold: Fold, work: Path, base_model: Path, settings: TrainingSettings) -> Path:
    """Train (or resume, or find trained) the fold; return its nnU-Net model folder."""
    config, network = base_configuration(base_model)
    results = work / "nnunet" / "results"
    model = nnunet.model_folder(results, fold.dataset_id, config, network)
    fold_folder = model / "fold_0"
    if (fold_folder / "checkpoint_final.pth").exists():
        return model
    resume = nnunet.resume_checkpoint(fold_folder) is not None if fold_folder.is_dir() else False
    nnunet.train(
        work / "nnunet" / "preprocessed",
        results,
        fold.dataset_id,
        0,
        config,
        settings.device,
        schedule=settings.schedule(),
        resume=resume,
        learning_rate=None if resume else settings.learning_rate,
        initial_weights=None
        if resume
        else base_model / f"fold_{settings.base_fold}" / "checkpoint_final.pth",
        validate=False,
        network=network,
    )
    return model
