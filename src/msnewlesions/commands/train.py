"""``msnewlesions train``: plan and preprocess a raw dataset (once) and train one fold."""

from __future__ import annotations

from pathlib import Path

from msnewlesions.errors import MSNewLesionsError
from msnewlesions.model import nnunet


def train_dataset(
    dataset: str | Path,
    fold: int | str,
    work: str | Path | None = None,
    config: nnunet.Config = "cpu",
    device: str = "cpu",
    schedule_changes: dict[str, int | None] | None = None,
    learning_rate: float | None = None,
    initial_weights: str | Path | None = None,
    resume: bool = False,
    network: nnunet.Network = "concatenation",
) -> Path:
    """Train one fold of the raw dataset folder ``dataset``; return the fold's folder.

    ``work`` holds nnU-Net's ``preprocessed/`` and ``results/`` (default: ``nnunet/`` beside the
    raw folder). The dataset is planned once; cases added later are preprocessed with the same
    plans. ``schedule_changes`` (``TrainingSchedule`` field names; None values ignored) change the
    paper's schedule for a new run, or the checkpoint's on ``resume``. ``network`` chooses the
    trainer (:data:`~msnewlesions.model.nnunet.TRAINERS`); each has its own results folder.
    """
    if learning_rate is not None and not learning_rate > 0:
        raise MSNewLesionsError(f"--learning-rate must be above 0 (got {learning_rate}).")
    nnunet.check_initial_weights(initial_weights, resume)
    dataset = Path(dataset)
    dataset_id = nnunet.dataset_id_of(dataset)
    work = Path(work) if work is not None else dataset.parent.parent / "nnunet"
    preprocessed, results = work / "preprocessed", work / "results"
    fold_folder = nnunet.model_folder(results, dataset_id, config, network) / f"fold_{fold}"
    try:
        schedule = nnunet.schedule_for(fold_folder, resume, schedule_changes)
    except ValueError as error:
        raise MSNewLesionsError(f"{error}.") from None
    nnunet.prepare_for_training(dataset, preprocessed)
    return nnunet.train(
        preprocessed,
        results,
        dataset_id,
        fold,
        config,
        device,
        schedule=schedule,
        resume=resume,
        learning_rate=learning_rate,
        initial_weights=initial_weights,
        network=network,
    )
