"""``crossval``: the paper's experiment end to end (Martinez-Heras et al., Tables 1 and 2).

1. The dataset (any layout ``dataset`` reads, or an nnU-Net raw dataset of preprocessed pairs)
   becomes an nnU-Net raw dataset in ``RUN/raw`` (preprocessed once, resumable). The cases of an
   nnU-Net raw dataset are grouped by patient as its ``patients.json`` says (``{case: patient}``;
   without it, each case is its own patient).
2. Its patients are split: a test split (``test_fraction`` of them, at least one), never trained
   on, and the rest in ``folds`` patient-level folds (:func:`~msnewlesions.model.datasets.
   folds_for`, written as nnU-Net's ``splits_final.json``).
3. Each fold is trained with the paper's trainer (:mod:`msnewlesions.model.trainers`), a checkpoint
   every ``checkpoint_every`` epochs; a run killed and started again goes on from the last one.
4. Each fold's model segments its validation cases as ``predict`` does (the model's threshold and
   minimum lesion size; nnU-Net's 0.5 and MSSEG-2's 3 mm3 for a new model): Table 1.
5. The folds' ensemble (nnU-Net's mean of their probabilities) segments the test split: Table 2,
   per case Dice, recall, lesion F1 and false lesions, mean +/- std; a case without new lesions
   scores Dice and recall 1 when nothing is marked, 0 otherwise, as the paper counts them
   (:mod:`msnewlesions.metrics`).

The tables are written as TSV and Markdown with a figure
(:mod:`msnewlesions.crossvalidation_tables`).
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from msnewlesions.atomic import link_or_copy, write_json_atomically
from msnewlesions.crossvalidation_tables import write_tables
from msnewlesions.errors import MSNewLesionsError
from msnewlesions.io import read_volume, write_volume_atomically
from msnewlesions.metrics import case_metrics
from msnewlesions.model import datasets, nnunet
from msnewlesions.segment import brain_of, predict_lesions

logger = logging.getLogger(__name__)

Layout = Literal["auto", "msseg2", "open_ms_data", "bids", "nnunet"]
#: An nnU-Net raw dataset's case -> patient map (cases of one patient stay on one side).
PATIENTS_FILE = "patients.json"


@dataclass(frozen=True)
class CrossValidationOptions:
    """The experiment's settings: the paper's schedule unless changed (300 epochs of 250
    iterations, a checkpoint every 25 epochs) on the ``cpu`` plans (``paper`` for a GPU)."""

    folds: int = 5
    test_fraction: float = 0.2
    layout: Layout = "auto"
    config: nnunet.Config = "cpu"
    device: str = "cpu"
    epochs: int = 300
    iterations_per_epoch: int = 250
    validation_iterations: int = 50
    checkpoint_every: int = 25
    seed: int = 12345
    dataset_id: int = 600


def detect_layout(folder: Path) -> Layout:
    """The layout of a dataset folder, from what it holds."""
    if (folder / "imagesTr").is_dir() and (folder / "dataset.json").exists():
        return "nnunet"
    if (folder / "longitudinal" / "raw").is_dir() or (folder / "raw").is_dir():
        return "open_ms_data"
    if any(folder.glob("sub-*")):
        return "bids"
    if any(folder.glob("*/flair_time01_on_middle_space.nii.gz")):
        return "msseg2"
    raise MSNewLesionsError(
        f"{folder}: not a dataset layout crossval knows (MSSEG-2, open_ms_data, BIDS or an "
        "nnU-Net raw dataset); say which with --layout."
    )


def raw_dataset(
    dataset: Path, run: Path, options: CrossValidationOptions
) -> tuple[Path, dict[str, str]]:
    """The run's nnU-Net raw dataset and each case's patient."""
    layout = detect_layout(dataset) if options.layout == "auto" else options.layout
    target = run / "raw" / nnunet.dataset_name(options.dataset_id)
    if layout == "nnunet":
        labels = sorted(
            p.name.removesuffix(".nii.gz") for p in (dataset / "labelsTr").glob("*.nii.gz")
        )
        if not labels:
            raise MSNewLesionsError(f"{dataset}/labelsTr holds no label.")
        for sub in ("imagesTr", "labelsTr"):
            (target / sub).mkdir(parents=True, exist_ok=True)
            for source in (dataset / sub).glob("*.nii.gz"):
                link_or_copy(source, target / sub / source.name)
        nnunet.write_dataset_json(target, len(labels))
        patients = {case: case for case in labels}
        if (dataset / PATIENTS_FILE).exists():
            named = json.loads((dataset / PATIENTS_FILE).read_text())
            unknown = sorted(set(labels) - set(named))
            if unknown:
                raise MSNewLesionsError(
                    f"{dataset / PATIENTS_FILE} names no patient for {', '.join(unknown[:5])}."
                )
            patients = {case: str(named[case]) for case in labels}
        return target, patients
    assert layout != "auto"
    cases = datasets.read_cases(layout, dataset)
    datasets.build_dataset(
        layout, dataset, run / "raw", datasets.DatasetOptions(dataset_id=options.dataset_id)
    )
    written = {p.name.removesuffix(".nii.gz") for p in (target / "labelsTr").glob("*.nii.gz")}
    return target, {case.case_id: case.patient for case in cases if case.case_id in written}


def split(
    patients: dict[str, str], options: CrossValidationOptions
) -> tuple[list[str], list[dict[str, list[str]]]]:
    """The test cases and the folds of the others, by patient."""
    names = sorted(set(patients.values()))
    if len(names) < 3:
        raise MSNewLesionsError(
            f"crossval needs at least 3 patients (a test split and two folds); this dataset has "
            f"{len(names)}."
        )
    random.Random(options.seed).shuffle(names)
    count = min(max(1, round(options.test_fraction * len(names))), len(names) - 2)
    test_patients = set(names[:count])
    test = sorted(c for c, p in patients.items() if p in test_patients)
    rest = {c: p for c, p in patients.items() if p not in test_patients}
    return test, datasets.folds_for(rest, options.folds, options.seed)


def _score(case: str, predicted: np.ndarray, label_path: Path) -> dict[str, Any]:
    label = read_volume(label_path)
    metrics = case_metrics(predicted > 0, label.array > 0, label.voxel_volume_mm3)
    true_marks = round((metrics.lesion_ppv or 0.0) * metrics.n_pred_lesions)
    return {"case": case, **metrics.as_dict(), "false_lesions": metrics.n_pred_lesions - true_marks}


def segment_cases(
    model: Path, folds: list[int], cases: list[str], raw: Path, out: Path, device: str
) -> list[dict[str, Any]]:
    """Segment preprocessed cases with ``model``'s ``folds`` (predictions kept) and score them."""
    predictor = None
    rows = []
    for case in cases:
        target = out / f"{case}.nii.gz"
        if not target.exists():
            if predictor is None:
                predictor = nnunet.NewLesionPredictor(model, folds=folds, device=device)
            baseline = read_volume(raw / "imagesTr" / f"{case}_0000.nii.gz")
            followup = read_volume(raw / "imagesTr" / f"{case}_0001.nii.gz")
            _, labels, _ = predict_lesions(
                baseline,
                followup,
                brain_of(baseline, followup),
                predictor,
                predictor.postprocessing,
            )
            write_volume_atomically(
                labels.with_array((labels.array > 0).astype(np.uint8)), target, np.uint8
            )
        rows.append(_score(case, read_volume(target).array, raw / "labelsTr" / f"{case}.nii.gz"))
    return rows


def crossvalidate(
    dataset: str | Path, run: str | Path, options: CrossValidationOptions | None = None
) -> dict[str, Any]:
    """Run (or resume) the experiment in ``run``; return its record (also ``RUN/results.json``)."""
    options = options or CrossValidationOptions()
    dataset, run = Path(dataset), Path(run)
    if not dataset.is_dir():
        raise MSNewLesionsError(f"{dataset} is not a folder.")
    if not 0 < options.test_fraction < 1:
        raise MSNewLesionsError("--test-fraction must be between 0 and 1.")
    run.mkdir(parents=True, exist_ok=True)
    identity = {"dataset": str(dataset.resolve()), "options": asdict(options)}
    state = run / "crossval.json"
    if state.exists() and json.loads(state.read_text()) != identity:
        raise MSNewLesionsError(
            f"{run} holds a crossval run of another dataset or with other settings; give "
            "another --out, or delete that folder to start again."
        )
    write_json_atomically(state, identity)
    raw, patients = raw_dataset(dataset, run, options)
    test, folds = split(patients, options)
    write_json_atomically(raw / "splits_final.json", folds)
    write_json_atomically(run / "split.json", {"test": test, "folds": folds, "patients": patients})
    preprocessed, results = run / "nnunet" / "preprocessed", run / "nnunet" / "results"
    nnunet.prepare_for_training(raw, preprocessed)
    shutil.copy2(raw / "splits_final.json", preprocessed / raw.name / "splits_final.json")
    schedule = nnunet.TrainingSchedule(
        epochs=options.epochs,
        iterations_per_epoch=options.iterations_per_epoch,
        validation_iterations=options.validation_iterations,
        checkpoint_every=min(options.checkpoint_every, options.epochs),
    )
    model = nnunet.model_folder(results, options.dataset_id, options.config)
    validation = []
    for index, fold in enumerate(folds):
        folder = model / f"fold_{index}"
        logger.info(
            "fold %d of %d: %d training, %d validation case(s)",
            index + 1,
            len(folds),
            len(fold["train"]),
            len(fold["val"]),
        )
        if not (folder / "checkpoint_final.pth").exists():
            resume = folder.is_dir() and nnunet.resume_checkpoint(folder) is not None
            nnunet.train(
                preprocessed,
                results,
                options.dataset_id,
                index,
                options.config,
                options.device,
                schedule=schedule,
                resume=resume,
                validate=False,
            )
        rows = segment_cases(
            model, [index], fold["val"], raw, run / "validation" / f"fold_{index}", options.device
        )
        validation.append({"fold": index, "train": len(fold["train"]), "cases": rows})
    logger.info("test split: %d case(s), the ensemble of %d folds", len(test), len(folds))
    test_rows = segment_cases(
        model, list(range(len(folds))), test, raw, run / "test", options.device
    )
    record = {
        "dataset": str(dataset),
        "options": asdict(options),
        "model": str(model),
        "validation": validation,
        "test": test_rows,
    }
    write_json_atomically(run / "results.json", record)
    write_tables(record, run)
    return record
