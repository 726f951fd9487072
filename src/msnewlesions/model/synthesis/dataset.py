"""Synthetic pairs written as an nnU-Net raw dataset, resumably, with a hold-out split."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from msnewlesions.atomic import remove_partial_files, write_json_atomically
from msnewlesions.errors import MSNewLesionsError
from msnewlesions.io import write_volume_atomically
from msnewlesions.model import datasets, nnunet
from msnewlesions.model.datasets import Case
from msnewlesions.model.synthesis.anatomy import (
    Anatomy,
    LesionShape,
    lesion_library,
    open_ms_data_sources,
    prepare_anatomy,
)
from msnewlesions.model.synthesis.changes import change_library, open_ms_data_change_masks
from msnewlesions.model.synthesis.pairs import as_segment_sees_it, pair_rng, synthesize_pair
from msnewlesions.model.synthesis.settings import REALISTIC, SynthesisSettings
from msnewlesions.preprocessing.pipeline import PreprocessOptions

logger = logging.getLogger(__name__)


#: Patients whose scans are never used for training the default model: the two complete real
#: pairs, kept for honest real-pair figures; their four scans are the synthetic hold-out anatomy.
HOLDOUT_PATIENTS = ("longitudinal-patient01", "longitudinal-patient03")


def case_id(anatomy_name: str, pair_index: int, preprocessed: bool = False) -> str:
    kind = "preprocessed" if preprocessed else "synthetic"
    return f"{anatomy_name}-{kind}{pair_index:03d}"


#: The fourth seed component of the pairs that go through ``segment``'s preprocessing: a stream
#: of draws of its own, so that they are other pairs than the directly written ones.
PREPROCESSED_STREAM = 1


def write_synthetic_dataset(
    folder: str | Path,
    training: Sequence[tuple[int, Anatomy]],
    holdout: Sequence[tuple[int, Anatomy]],
    library: Sequence[LesionShape],
    pairs_per_anatomy: int,
    holdout_pairs_per_anatomy: int,
    seed: int,
    settings: SynthesisSettings | None = None,
    real_pairs: Sequence[Case] = (),
    preprocess: PreprocessOptions | None = None,
    preprocessed_pairs_per_anatomy: int = 0,
    real_pair_copies: int = 1,
) -> Path:
    """An nnU-Net raw dataset of synthetic pairs; fold 0 validates on the hold-out anatomy.

    ``training`` and ``holdout`` pair each anatomy with its fixed index (part of each pair's
    seed). Cases already written are kept (their label, written last, marks them complete), so an
    interrupted run resumes. ``splits_final.json`` holds one split: train on the training
    anatomy's pairs, validate on the hold-out anatomy's pairs.

    ``real_pairs`` (cases of :mod:`msnewlesions.model.datasets`) join the training side as they
    are, preprocessed with ``preprocess`` and labelled with only their components that gain FLAIR
    signal (:func:`~msnewlesions.model.datasets.keep_gaining_components`). Each is named
    ``real_pair_copies`` times in the training split (written and preprocessed once): nnU-Net
    draws its training cases uniformly from that list, so a real pair among a few hundred
    synthetic ones is sampled that many times as often.

    ``preprocessed_pairs_per_anatomy`` more pairs per training anatomy (``*-preprocessedNNN``,
    drawn from stream :data:`PREPROCESSED_STREAM`) are written as ``segment`` gives them to the
    network (:func:`as_segment_sees_it`): from the scans, through registration, HD-BET, N4 and
    slice matching, about half a minute each.
    """
    if real_pair_copies < 1:
        raise MSNewLesionsError("real_pair_copies must be at least 1.")
    folder = Path(folder)
    images, labels = folder / "imagesTr", folder / "labelsTr"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    remove_partial_files(folder)  # what a killed earlier run was writing
    records_file = folder / "msnewlesions_cases.json"
    records = json.loads(records_file.read_text()) if records_file.exists() else {}

    def save_records() -> None:
        write_json_atomically(records_file, records, indent=1)

    split: dict[str, list[str]] = {"train": [], "val": []}
    jobs = [(a, n, "train", pairs_per_anatomy, 0) for a, n in training]
    jobs += [(a, n, "val", holdout_pairs_per_anatomy, 0) for a, n in holdout]
    jobs += [
        (a, n, "train", preprocessed_pairs_per_anatomy, PREPROCESSED_STREAM) for a, n in training
    ]
    for anatomy_index, anatomy, role, count, stream in jobs:
        for pair_index in range(count):
            name = case_id(anatomy.name, pair_index, preprocessed=stream == PREPROCESSED_STREAM)
            if records.get(name, {}).get("role") == "skipped":
                continue
            split[role].append(name)
            if (labels / f"{name}.nii.gz").exists() and name in records:
                continue
            rng = pair_rng(seed, anatomy_index, pair_index, stream)
            native = bool(
                stream == PREPROCESSED_STREAM and settings and settings.native_acquisition
            )
            pair = synthesize_pair(anatomy, library, rng, settings, native=native)
            baseline, followup, label = pair.baseline, pair.followup, pair.new_lesions
            info = dict(pair.info)
            key = [seed, anatomy_index, pair_index] + ([stream] if stream else [])
            if stream == PREPROCESSED_STREAM:
                try:
                    baseline, followup, label, done = as_segment_sees_it(pair, preprocess)
                except MSNewLesionsError as error:
                    # segment would refuse these scans (its registration QC): not a pair that
                    # the network is ever given.
                    logger.warning("%s: skipped, preprocessing refused it: %s", name, error)
                    split[role].remove(name)
                    records[name] = {"role": "skipped", "reason": str(error), "seed": key}
                    save_records()
                    continue
                info["through_preprocessing"] = done
            write_volume_atomically(baseline, images / f"{name}_0000.nii.gz", np.float32)
            write_volume_atomically(followup, images / f"{name}_0001.nii.gz", np.float32)
            write_volume_atomically(label, labels / f"{name}.nii.gz", np.uint8)
            records[name] = info | {"role": role, "seed": key}
            save_records()
            logger.info(
                "%s (%s): %d new lesion(s), %d voxels",
                name,
                role,
                len(info["new_lesions"]),
                int(label.array.sum()),
            )
    for case in real_pairs:
        record = datasets.write_case(case, folder, True, preprocess or PreprocessOptions())
        if (labels / f"{case.case_id}.nii.gz").exists():
            split["train"] += [case.case_id] * real_pair_copies
            records[case.case_id] = records.get(case.case_id, {}) | record | {"role": "train"}
            save_records()
    nnunet.write_dataset_json(folder, len(set(split["train"])) + len(split["val"]))
    write_json_atomically(folder / "splits_final.json", [split])
    return folder


def chosen_real_pairs(open_ms_data: Path, patients: Sequence[str]) -> list[Case]:
    """open_ms_data's complete real pairs of ``patients`` (``("all",)``: every one)."""
    if not patients:
        return []
    cases = datasets.read_open_ms_data(open_ms_data)
    if tuple(patients) == ("all",):
        return cases
    known = {case.case_id: case for case in cases}
    unknown = [p for p in patients if p not in known]
    if unknown:
        raise MSNewLesionsError(
            f"{', '.join(unknown)}: not a complete real pair of {open_ms_data} "
            f"(those are {', '.join(known) or 'none'})."
        )
    return [known[p] for p in patients]


@dataclass(frozen=True)
class SyntheticDatasetPlan:
    """How many pairs ``synthesize`` makes, from what seed, and what joins them."""

    dataset_id: int = 510
    pairs_per_anatomy: int = 12
    holdout_pairs_per_anatomy: int = 4
    seed: int = 2026
    preprocessed_pairs_per_anatomy: int = 0
    #: open_ms_data patients (``"patient03"``) whose complete real pair joins the training side,
    #: or ``"all"`` for every complete pair. A model trained with one real pair is scored on the
    #: other: leave-one-out real-pair figures.
    real_pairs: tuple[str, ...] = ()
    #: How many times each real pair is named in the training split (its sampling weight).
    real_pair_copies: int = 1
    #: Model v2's synthesis (:data:`~msnewlesions.model.synthesis.settings.REALISTIC`) with the
    #: shapes of real changes (:func:`~msnewlesions.model.synthesis.changes.change_library`)
    #: instead of whole lesions.
    realistic: bool = False


def synthesize_dataset(
    open_ms_data: str | Path,
    raw_root: str | Path,
    plan: SyntheticDatasetPlan,
    cache: str | Path | None = None,
) -> tuple[Path, dict[str, list[str]]]:
    """open_ms_data's scans as anatomy and lesion shapes -> ``raw_root/DatasetNNN_MSNewLesions``.

    Scans of :data:`HOLDOUT_PATIENTS` become validation pairs only (fold 0's split); every other
    FLAIR becomes training pairs; the complete real pairs named in ``plan.real_pairs`` join
    training.
    The anatomy is prepared once into ``cache`` (default: ``raw_root/../anatomy``). Returns the
    dataset folder and its split.
    """
    real_pairs = chosen_real_pairs(Path(open_ms_data), plan.real_pairs)  # before any long step
    sources, masks = open_ms_data_sources(open_ms_data)
    cache = Path(cache) if cache is not None else Path(raw_root).parent / "anatomy"
    if plan.realistic:
        library = change_library(open_ms_data_change_masks(open_ms_data))
    else:
        library = lesion_library(masks)
    training: list[tuple[int, Anatomy]] = []
    holdout: list[tuple[int, Anatomy]] = []
    for index, source in enumerate(sources):
        anatomy = prepare_anatomy(source, cache)
        role = holdout if source.patient in HOLDOUT_PATIENTS else training
        role.append((index, anatomy))
    folder = write_synthetic_dataset(
        Path(raw_root) / nnunet.dataset_name(plan.dataset_id),
        training,
        holdout,
        library,
        plan.pairs_per_anatomy,
        plan.holdout_pairs_per_anatomy,
        plan.seed,
        real_pairs=real_pairs,
        settings=REALISTIC if plan.realistic else None,
        preprocessed_pairs_per_anatomy=plan.preprocessed_pairs_per_anatomy,
        real_pair_copies=plan.real_pair_copies,
    )
    split: dict[str, list[str]] = json.loads((folder / "splits_final.json").read_text())[0]
    return folder, split
