"""Training one fold with the paper's trainer: new runs, resumed runs, runs from given weights."""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path
from typing import Any

from msnewlesions.atomic import remove_partial_files
from msnewlesions.denormals import run_flushed
from msnewlesions.errors import MSNewLesionsError
from msnewlesions.model.nnunet.archives import load_checkpoint
from msnewlesions.model.nnunet.environment import (
    CONFIGURATION,
    PLANS,
    TRAINERS,
    Config,
    Network,
    check_device,
    dataset_name,
    nnunet_environment,
    quiet,
)
from msnewlesions.model.schedule import TrainingSchedule

logger = logging.getLogger(__name__)

#: Where earlier versions saved the schedule (nnU-Net's attribute names), beside the checkpoints.
LEGACY_SCHEDULE_FILE = "msnewlesions_schedule.json"


def model_folder(
    results_root: str | Path, dataset_id: int, config: Config, network: Network = "concatenation"
) -> Path:
    """Where nnU-Net puts (and we look for) a trained model."""
    return (
        Path(results_root)
        / dataset_name(dataset_id)
        / f"{TRAINERS[network]}__{PLANS[config]}__{CONFIGURATION}"
    )


def resume_checkpoint(fold_folder: str | Path) -> Path | None:
    """The checkpoint a resumed training continues from: the furthest trained of
    ``checkpoint_final.pth`` and ``checkpoint_latest.pth`` (else ``checkpoint_best.pth``).

    nnU-Net's own rule takes ``checkpoint_final.pth`` whenever it exists; after a run that was
    extended (more epochs) and interrupted, that final checkpoint is older than the latest one,
    and every resume would go back to it.
    """
    fold_folder = Path(fold_folder)
    candidates = []
    for rank, name in enumerate(("checkpoint_final.pth", "checkpoint_latest.pth")):
        path = fold_folder / name
        if path.exists():
            epoch = int(load_checkpoint(path)["current_epoch"])
            candidates.append((epoch, -rank, path))
    if candidates:
        return max(candidates)[2]
    best = fold_folder / "checkpoint_best.pth"
    return best if best.exists() else None


def saved_schedule(
    fold_folder: str | Path, checkpoint: Path | None = None
) -> TrainingSchedule | None:
    """The schedule saved with ``checkpoint`` (default: the one a resume would continue from,
    :func:`resume_checkpoint`); None when there is no checkpoint."""
    checkpoint = checkpoint or resume_checkpoint(fold_folder)
    if checkpoint is None:
        return None
    saved = load_checkpoint(checkpoint).get("msnewlesions_schedule")
    if saved is not None:
        return TrainingSchedule.from_dict(saved)
    legacy = Path(fold_folder) / LEGACY_SCHEDULE_FILE
    if legacy.exists():
        return TrainingSchedule.from_legacy(json.loads(legacy.read_text()))
    return TrainingSchedule()


def schedule_for(
    fold_folder: str | Path,
    resume: bool,
    changes: dict[str, int | None] | None = None,
    checkpoint: Path | None = None,
) -> TrainingSchedule:
    """A run's schedule: the paper's for a new run, the checkpoint's on ``resume``; ``changes``
    (field names, None values ignored) on top."""
    base = (saved_schedule(fold_folder, checkpoint) if resume else None) or TrainingSchedule()
    return base.updated(**(changes or {}))


def check_initial_weights(initial_weights: str | Path | None, resume: bool) -> None:
    """Refuse, before any work, initial weights that are not a file or that come with resume."""
    if initial_weights is None:
        return
    if resume:
        raise MSNewLesionsError(
            "--resume continues a run from its own checkpoint; --initial-weights starts a new "
            "one: give only one of them."
        )
    if not Path(initial_weights).is_file():
        raise MSNewLesionsError(f"--initial-weights: {initial_weights} is not a checkpoint file.")
    load_checkpoint(initial_weights)  # never code: refused here, before any work


def _load_initial_weights(trainer: Any, checkpoint: Path) -> None:
    """Every weight of ``checkpoint``'s network into the trainer's (same plans), strictly; a
    two-channel U-Net's weights into a difference-weighting network as
    :func:`~msnewlesions.model.networks.difference_weighting.from_two_channel_weights` says."""
    from msnewlesions.model.networks.difference_weighting import (
        DifferenceWeightingUNet,
        from_two_channel_weights,
    )

    trainer.initialize()
    try:
        weights = load_checkpoint(checkpoint)["network_weights"]
        if isinstance(trainer.network, DifferenceWeightingUNet) and not any(
            name.startswith("weighting.") for name in weights
        ):
            weights, fresh = from_two_channel_weights(weights, trainer.network.state_dict())
            logger.info("two-channel weights adapted; left as initialised: %s", ", ".join(fresh))
        trainer.network.load_state_dict(weights)
    except (RuntimeError, KeyError, TypeError, OSError, EOFError, pickle.UnpicklingError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise MSNewLesionsError(
            f"--initial-weights: {checkpoint} does not hold weights of this dataset's network "
            f"(a model trained with other plans?): {first_line}"
        ) from None
    logger.info("starting from the weights of %s", checkpoint)


def train(
    preprocessed_root: str | Path,
    results_root: str | Path,
    dataset_id: int,
    fold: int | str,
    config: Config = "cpu",
    device: str = "cpu",
    schedule: TrainingSchedule | None = None,
    resume: bool = False,
    learning_rate: float | None = None,
    initial_weights: str | Path | None = None,
    data_workers: int | None = None,
    validate: bool = True,
    network: Network = "concatenation",
) -> Path:
    """Train one fold (0-4 or "all") with the paper's trainer; return the fold's folder.

    ``network``: the paper's two-channel U-Net (``"concatenation"``) or the difference-weighting
    one (:class:`~msnewlesions.model.trainers.nnUNetTrainerMSNewLesionsDifferenceWeighting`).

    ``schedule``: the run's :class:`TrainingSchedule`; None takes, on ``resume``, the schedule
    saved in the checkpoint it continues from, else the paper's. ``resume`` continues from the
    furthest checkpoint (:func:`resume_checkpoint`: epoch counter, optimizer, learning-rate rule,
    annealing and schedule).

    ``learning_rate`` replaces the paper's initial 0.01; with ``resume`` it replaces the
    checkpoint's current rate from the next epoch on (fine-tuning a plateaued run at a lower rate).
    It is a one-time change, not part of the schedule: the checkpoints written afterwards carry
    the new rate in their optimizer state, and the learning-rate rules go on from it. It starts a
    new phase: the last ``anneal_epochs`` of the run are annealed again, from the new rate.

    ``initial_weights`` (a checkpoint of a network with the same plans, e.g. a shipped model's
    ``fold_0/checkpoint_final.pth``, optimizer stripped) starts a new run from those weights:
    every layer, the output layers included (nnU-Net's own ``-pretrained_weights`` leaves those
    out, as it transfers to a new task; this continues the same one), with a new optimizer at
    epoch 0. It is how a model is trained further when its training checkpoints are gone.

    ``data_workers`` is the number of augmentation processes; by default none on a CPU (measured
    on 2 cores: 1.10 s per iteration in-process, 1.34 s with one worker competing for the cores)
    and nnU-Net's own choice on a GPU.
    """
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    if data_workers is None and device == "cpu":
        data_workers = 0
    check_device(device)
    check_initial_weights(initial_weights, resume)
    fold_value: int | str = fold if fold == "all" else int(fold)
    folder = model_folder(results_root, dataset_id, config, network) / f"fold_{fold}"
    if folder.is_dir():
        remove_partial_files(folder)  # a checkpoint a killed run was saving
    checkpoint = resume_checkpoint(folder) if resume else None
    if schedule is None:
        schedule = schedule_for(folder, checkpoint is not None, checkpoint=checkpoint)
    environment = nnunet_environment(
        preprocessed=preprocessed_root, results=results_root, data_workers=data_workers
    )
    with environment, quiet():
        trainer = get_trainer_from_args(
            str(dataset_id),
            CONFIGURATION,
            fold_value,
            TRAINERS[network],
            PLANS[config],
            continue_training=resume,
            device=torch.device(device),
        )
        if learning_rate is not None:
            trainer.initial_lr = float(learning_rate)
        if checkpoint is not None:
            trainer.load_checkpoint(str(checkpoint))
            if learning_rate is not None:
                for group in trainer.optimizer.param_groups:
                    group["lr"] = float(learning_rate)
                # A new rate starts a new phase: its own last epochs are annealed again (the
                # checkpoint's flag says only that the previous phase's were).
                trainer.annealed = False
        trainer.apply_schedule(schedule)
        if initial_weights is not None:
            _load_initial_weights(trainer, Path(initial_weights))
        logger.info(
            "training fold %s from epoch %d to %d (%d iterations each) on %s",
            fold,
            trainer.current_epoch,
            schedule.epochs,
            schedule.iterations_per_epoch,
            device,
        )
        if device == "cpu":
            # Subnormal activations and gradients slowed training steps 2.3-6 times on this
            # project's CPU (msnewlesions.denormals); a GPU does not compute with them.
            run_flushed(lambda: _run(trainer, validate))
        else:
            _run(trainer, validate)
    return folder


def _run(trainer: Any, validate: bool) -> None:
    trainer.run_training()
    if validate:
        trainer.perform_actual_validation(False)
