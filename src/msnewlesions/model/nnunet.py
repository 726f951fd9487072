"""The one adapter to nnU-Net (nnunetv2 >= 2.8): planning, preprocessing, training, prediction.

nnU-Net finds its folders through environment variables (``nnUNet_raw``, ``nnUNet_preprocessed``,
``nnUNet_results``, ``nnUNet_extTrainer``); :func:`nnunet_environment` sets them from explicit
paths for the duration of one call and restores the previous values, so users never export them.

Datasets have two input channels, ``0000`` = baseline and ``0001`` = follow-up (preprocessed, in
MNI space), and labels background (0) / new_lesion (1).

Configurations (``config``):

* ``paper``: nnU-Net's own 3d_fullres plans (``nnUNetPlans``), the paper's setting, for a GPU.
* ``cpu``: a plans variant ``nnUNetPlans_cpu`` that makes training and inference practical on a
  2-core machine: the same 3d_fullres data, a 5-stage U-Net with 16 base features on 64^3
  patches, batch size 2 (nnU-Net's default here is 6 stages, 32 features, 128^3 patches).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from copy import deepcopy
from pathlib import Path
from typing import Any, Literal

from msnewlesions.errors import MSNewLesionsError
from msnewlesions.io import Volume

logger = logging.getLogger(__name__)

Config = Literal["paper", "cpu"]

TRAINER = "nnUNetTrainerMSNewLesions"
CONFIGURATION = "3d_fullres"
PLANS = {"paper": "nnUNetPlans", "cpu": "nnUNetPlans_cpu"}
CHANNEL_NAMES = {"0": "baseline", "1": "followup"}
LABELS = {"background": 0, "new_lesion": 1}
DATASET_NAME = "MSNewLesions"

CPU_PATCH_SIZE = (64, 64, 64)
CPU_FEATURES = (16, 32, 64, 128, 256)
CPU_BATCH_SIZE = 2


def dataset_name(dataset_id: int) -> str:
    return f"Dataset{dataset_id:03d}_{DATASET_NAME}"


def dataset_id_of(folder: str | Path) -> int:
    """The number of a raw dataset folder named ``DatasetNNN_<name>``."""
    name = Path(folder).name
    if not (Path(folder) / "dataset.json").exists():
        raise MSNewLesionsError(f"{folder} is not an nnU-Net raw dataset (no dataset.json).")
    try:
        return int(name.removeprefix("Dataset").split("_", 1)[0])
    except ValueError:
        raise MSNewLesionsError(
            f"{folder}: an nnU-Net dataset folder is named DatasetNNN_<name>."
        ) from None


@contextmanager
def nnunet_environment(
    raw: str | Path | None = None,
    preprocessed: str | Path | None = None,
    results: str | Path | None = None,
    data_workers: int | None = None,
) -> Iterator[None]:
    """nnU-Net's folder variables (and our trainer's folder) set for the duration of the block."""
    values = {
        "nnUNet_raw": raw,
        "nnUNet_preprocessed": preprocessed,
        "nnUNet_results": results,
        "nnUNet_extTrainer": Path(__file__).resolve().parent,
        "nnUNet_compile": "false",
        "nnUNet_n_proc_DA": data_workers,
    }
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = str(value)
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def _quiet() -> Iterator[None]:
    """nnU-Net prints; library code logs. Its output goes to the debug log."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            yield
    finally:
        for line in captured.getvalue().splitlines():
            if line.strip():
                logger.debug("nnU-Net: %s", line)


def write_dataset_json(dataset_folder: str | Path, num_training: int) -> None:
    """The raw dataset's ``dataset.json`` (two channels, background / new_lesion)."""
    description = {
        "channel_names": CHANNEL_NAMES,
        "labels": LABELS,
        "numTraining": num_training,
        "file_ending": ".nii.gz",
        "name": DATASET_NAME,
        "description": "Baseline (0000) and follow-up (0001) FLAIR in MNI space, preprocessed by "
        "msnewlesions (rigid registration, HD-BET, N4, crop, z-score); label: new lesions.",
    }
    Path(dataset_folder, "dataset.json").write_text(json.dumps(description, indent=2) + "\n")


def _in_fresh_process(function: Any, *arguments: Any) -> Any:
    """Run ``function`` in a newly spawned process and return its result (errors re-raised).

    Parts of nnU-Net open multiprocessing pools with the default *fork* start method. Forking a
    process that already runs threads (torch, SimpleITK: every preprocessing does) can copy a
    held lock into the child and hang it for ever - seen here, intermittently, in nnU-Net's
    dataset integrity check. A freshly spawned process has no such threads.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as executor:
        return executor.submit(function, *arguments).result()


def _verify_job(raw_root: str, dataset_id: int, num_processes: int) -> None:
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    folder = Path(raw_root) / dataset_name(dataset_id)
    with nnunet_environment(raw=raw_root), _quiet():
        try:
            verify_dataset_integrity(str(folder), num_processes)
        except (AssertionError, RuntimeError) as error:
            raise MSNewLesionsError(f"{folder} fails nnU-Net's integrity check: {error}") from None


def verify_dataset(raw_root: str | Path, dataset_id: int, num_processes: int = 1) -> None:
    """nnU-Net's own integrity check of a raw dataset; raises MSNewLesionsError if it fails."""
    _in_fresh_process(_verify_job, str(raw_root), dataset_id, num_processes)


def cpu_plans(plans: dict) -> dict:
    """The ``cpu`` plans variant derived from nnU-Net's default plans (same preprocessed data)."""
    variant = deepcopy(plans)
    variant["plans_name"] = PLANS["cpu"]
    configuration = variant["configurations"][CONFIGURATION]
    configuration["patch_size"] = list(CPU_PATCH_SIZE)
    configuration["batch_size"] = CPU_BATCH_SIZE
    # Dice over the whole batch, not per patch. Most random 64^3 patches hold no new lesion, and
    # a per-patch Dice scores such a patch ~1 when the network outputs exact zeros: trained that
    # way on the synthetic pairs, the network learned to mark nothing at all by epoch 6 (hold-out
    # pseudo-Dice 0.66 -> 0.0, training loss still falling). nnU-Net's sampler puts a lesion in
    # one patch of every batch, so the batch Dice always has one to find.
    configuration["batch_dice"] = True
    architecture = configuration["architecture"]["arch_kwargs"]
    stages = len(CPU_FEATURES)
    architecture["n_stages"] = stages
    architecture["features_per_stage"] = list(CPU_FEATURES)
    architecture["kernel_sizes"] = [[3, 3, 3]] * stages
    architecture["strides"] = [[1, 1, 1]] + [[2, 2, 2]] * (stages - 1)
    architecture["n_conv_per_stage"] = [2] * stages
    architecture["n_conv_per_stage_decoder"] = [2] * (stages - 1)
    # Same spacing and normalization: the 3d_fullres data preprocessed for the default plans
    # serve both plans.
    configuration["data_identifier"] = plans["configurations"][CONFIGURATION]["data_identifier"]
    return variant


def plan_and_preprocess(
    raw_root: str | Path,
    preprocessed_root: str | Path,
    dataset_id: int,
    num_processes: int = 1,
) -> None:
    """Fingerprint, plan (default and cpu plans) and preprocess a raw dataset for 3d_fullres.

    Runs in a freshly spawned process (see :func:`_in_fresh_process`).
    """
    logger.info(
        "nnU-Net: fingerprint, integrity check, plans and preprocessing of %s",
        dataset_name(dataset_id),
    )
    _in_fresh_process(
        _plan_and_preprocess_job, str(raw_root), str(preprocessed_root), dataset_id, num_processes
    )


def _plan_and_preprocess_job(
    raw_root: str, preprocessed_root: str, dataset_id: int, num_processes: int
) -> None:
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )

    with nnunet_environment(raw=raw_root, preprocessed=preprocessed_root), _quiet():
        logger.info("nnU-Net: fingerprint and integrity check of %s", dataset_name(dataset_id))
        extract_fingerprints(
            [dataset_id],
            num_processes=num_processes,
            check_dataset_integrity=True,
            verbose=False,
            show_progress_bar=False,
        )
        logger.info("nnU-Net: planning")
        plan_experiments([dataset_id])
        folder = Path(preprocessed_root) / dataset_name(dataset_id)
        plans = json.loads((folder / f"{PLANS['paper']}.json").read_text())
        (folder / f"{PLANS['cpu']}.json").write_text(json.dumps(cpu_plans(plans), indent=2))
        splits = Path(raw_root) / dataset_name(dataset_id) / "splits_final.json"
        if splits.exists():  # patient-level folds written with the raw dataset
            shutil.copy2(splits, folder / "splits_final.json")
        logger.info("nnU-Net: preprocessing (3d_fullres)")
        preprocess(
            [dataset_id],
            plans_identifier=PLANS["paper"],
            configurations=(CONFIGURATION,),
            num_processes=(num_processes,),
            verbose=False,
            show_progress_bar=False,
        )


def preprocess_new_cases(
    raw_root: str | Path, preprocessed_root: str | Path, dataset_id: int
) -> list[str]:
    """Preprocess the raw cases that the preprocessed folder lacks, with the existing plans.

    For a dataset that grew after :func:`plan_and_preprocess` (``synthesize --pairs`` raised, a
    resumed ``dataset`` run): planning again could change the network and orphan the
    checkpoints, so the plans stay as they are and only the missing cases go through nnU-Net's
    own preprocessor. The raw ``splits_final.json`` and ``dataset.json`` are then copied over
    where they differ, so a resumed training samples the new cases. Returns the new cases'
    identifiers.
    """
    return _in_fresh_process(
        _preprocess_new_cases_job, str(raw_root), str(preprocessed_root), dataset_id
    )


def _preprocess_new_cases_job(raw_root: str, preprocessed_root: str, dataset_id: int) -> list[str]:
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    raw = Path(raw_root) / dataset_name(dataset_id)
    folder = Path(preprocessed_root) / dataset_name(dataset_id)
    plans = PlansManager(json.loads((folder / f"{PLANS['paper']}.json").read_text()))
    configuration = plans.get_configuration(CONFIGURATION)
    output = folder / configuration.data_identifier
    dataset_json = json.loads((raw / "dataset.json").read_text())
    with nnunet_environment(raw=raw_root, preprocessed=preprocessed_root), _quiet():
        cases = get_filenames_of_train_images_and_targets(str(raw), dataset_json)
        new = sorted(str(case) for case in cases if not (output / f"{case}.pkl").exists())
        preprocessor = configuration.preprocessor_class(verbose=False)
        for case in new:
            # The pickle is written last: files without it are the remains of an interrupted run.
            for leftover in (output / f"{case}.b2nd", output / f"{case}_seg.b2nd"):
                leftover.unlink(missing_ok=True)
            label = Path(cases[case]["label"])
            preprocessor.run_case_save(
                str(output / case),
                cases[case]["images"],
                str(label),
                plans,
                configuration,
                dataset_json,
            )
            shutil.copy2(label, folder / "gt_segmentations" / label.name)
    # Only now that every case is there may the split name the new ones.
    for name in ("dataset.json", "splits_final.json"):
        source, target = raw / name, folder / name
        if source.exists() and (not target.exists() or source.read_bytes() != target.read_bytes()):
            shutil.copy2(source, target)
    return new


def model_folder(results_root: str | Path, dataset_id: int, config: Config) -> Path:
    """Where nnU-Net puts (and we look for) a trained model."""
    return (
        Path(results_root)
        / dataset_name(dataset_id)
        / f"{TRAINER}__{PLANS[config]}__{CONFIGURATION}"
    )


def resume_checkpoint(fold_folder: str | Path) -> Path | None:
    """The checkpoint a resumed training continues from: the furthest trained of
    ``checkpoint_final.pth`` and ``checkpoint_latest.pth`` (else ``checkpoint_best.pth``).

    nnU-Net's own rule takes ``checkpoint_final.pth`` whenever it exists; after a run that was
    extended (more epochs) and interrupted, that final checkpoint is older than the latest one,
    and every resume would go back to it.
    """
    import torch

    fold_folder = Path(fold_folder)
    candidates = []
    for rank, name in enumerate(("checkpoint_final.pth", "checkpoint_latest.pth")):
        path = fold_folder / name
        if path.exists():
            saved = torch.load(str(path), map_location="cpu", weights_only=False)
            candidates.append((int(saved["current_epoch"]), -rank, path))
    if candidates:
        return max(candidates)[2]
    best = fold_folder / "checkpoint_best.pth"
    return best if best.exists() else None


def train(
    preprocessed_root: str | Path,
    results_root: str | Path,
    dataset_id: int,
    fold: int | str,
    config: Config = "cpu",
    device: str = "cpu",
    resume: bool = False,
    epochs: int | None = None,
    iterations_per_epoch: int | None = None,
    validation_iterations: int | None = None,
    checkpoint_every: int | None = None,
    anneal_epochs: int | None = None,
    learning_rate: float | None = None,
    initial_weights: str | Path | None = None,
    data_workers: int | None = None,
    validate: bool = True,
) -> Path:
    """Train one fold (0-4 or "all") with the paper's trainer; return the fold's folder.

    ``epochs``, ``iterations_per_epoch``, ``validation_iterations``, ``checkpoint_every``
    (epochs between two ``checkpoint_latest.pth``) and ``anneal_epochs`` (the last epochs at the
    learning rate / 5) override the paper's schedule (for CPU runs and tests); they are saved
    beside the checkpoints and re-applied on ``resume``, which continues from the furthest
    checkpoint (:func:`resume_checkpoint`: epoch counter, optimizer, learning-rate rule and
    annealing).

    ``learning_rate`` replaces the paper's initial 0.01; with ``resume`` it replaces the
    checkpoint's current rate from the next epoch on (fine-tuning a plateaued run at a lower rate).
    It is a one-time change, not saved with the schedule: the checkpoints written afterwards carry
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
    if data_workers is None and device == "cpu":
        data_workers = 0
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    if device == "cuda" and not torch.cuda.is_available():
        raise MSNewLesionsError("--device cuda was asked for, but no CUDA GPU is available.")
    check_initial_weights(initial_weights, resume)
    fold_value: int | str = fold if fold == "all" else int(fold)
    folder = model_folder(results_root, dataset_id, config) / f"fold_{fold}"
    overrides_file = folder / "msnewlesions_schedule.json"
    overrides = {
        "num_epochs": epochs,
        "num_iterations_per_epoch": iterations_per_epoch,
        "num_val_iterations_per_epoch": validation_iterations,
        "save_every": checkpoint_every,
        "anneal_epochs": anneal_epochs,
    }
    if resume and overrides_file.exists():
        saved = json.loads(overrides_file.read_text())
        overrides = {k: (v if v is not None else saved.get(k)) for k, v in overrides.items()}
    with (
        nnunet_environment(
            preprocessed=preprocessed_root, results=results_root, data_workers=data_workers
        ),
        _quiet(),
    ):
        trainer = get_trainer_from_args(
            str(dataset_id),
            CONFIGURATION,
            fold_value,
            TRAINER,
            PLANS[config],
            continue_training=resume,
            device=torch.device(device),
        )
        for name, value in overrides.items():
            if value is not None:
                setattr(trainer, name, int(value))
        folder.mkdir(parents=True, exist_ok=True)
        overrides_file.write_text(json.dumps(overrides, indent=2) + "\n")
        if learning_rate is not None:
            trainer.initial_lr = float(learning_rate)
        if resume and (checkpoint := resume_checkpoint(folder)) is not None:
            trainer.load_checkpoint(str(checkpoint))
            if learning_rate is not None:
                for group in trainer.optimizer.param_groups:
                    group["lr"] = float(learning_rate)
                # A new rate starts a new phase: its own last epochs are annealed again (the
                # checkpoint's flag says only that the previous phase's were).
                trainer.annealed = False
        if initial_weights is not None:
            _load_initial_weights(trainer, Path(initial_weights))
        logger.info(
            "training fold %s from epoch %d to %d (%d iterations each) on %s",
            fold,
            trainer.current_epoch,
            trainer.num_epochs,
            trainer.num_iterations_per_epoch,
            device,
        )
        trainer.run_training()
        if validate:
            trainer.perform_actual_validation(False)
    return folder


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


def _load_initial_weights(trainer: Any, checkpoint: Path) -> None:
    """Every weight of ``checkpoint``'s network into the trainer's (same plans), strictly."""
    import pickle

    import torch

    trainer.initialize()
    try:
        saved = torch.load(str(checkpoint), map_location="cpu", weights_only=False)
        trainer.network.load_state_dict(saved["network_weights"])
    except (RuntimeError, KeyError, TypeError, OSError, EOFError, pickle.UnpicklingError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise MSNewLesionsError(
            f"--initial-weights: {checkpoint} does not hold weights of this dataset's network "
            f"(a model trained with other plans?): {first_line}"
        ) from None
    logger.info("starting from the weights of %s", checkpoint)


def predict(
    model: str | Path,
    input_folder: str | Path,
    output_folder: str | Path,
    folds: Sequence[int | str] | None = None,
    device: str = "cpu",
    test_time_augmentation: bool = False,
    save_probabilities: bool = False,
    checkpoint: str = "checkpoint_final.pth",
) -> None:
    """Segment every case of ``input_folder`` (``<case>_0000.nii.gz``, ``<case>_0001.nii.gz``).

    ``model`` is a trained model folder (holding ``plans.json``, ``dataset.json`` and
    ``fold_*``) or a zip of one; its available folds are ensembled unless ``folds`` names some.
    """
    with open_model(model) as folder:
        _predict(
            folder,
            input_folder,
            output_folder,
            folds,
            device,
            test_time_augmentation,
            save_probabilities,
            checkpoint,
        )


def _load_predictor(
    model: Path,
    folds: Sequence[int | str] | None,
    device: str,
    test_time_augmentation: bool,
    checkpoint: str,
) -> tuple[Any, list[str]]:
    """nnU-Net's predictor with the model's weights loaded (the chosen folds, all by default)."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    if device == "cuda" and not torch.cuda.is_available():
        raise MSNewLesionsError("--device cuda was asked for, but no CUDA GPU is available.")
    available = [p.name.removeprefix("fold_") for p in sorted(model.glob("fold_*"))]
    chosen = [str(f) for f in folds] if folds else available
    missing = [f for f in chosen if not (model / f"fold_{f}" / checkpoint).exists()]
    if not chosen or missing:
        raise MSNewLesionsError(
            f"{model} has no {checkpoint} for fold(s) {', '.join(missing) or '(none)'}; "
            "train them first."
        )
    with nnunet_environment(), _quiet():
        predictor = nnUNetPredictor(
            tile_step_size=0.5,
            use_gaussian=True,
            use_mirroring=test_time_augmentation,
            perform_everything_on_device=device == "cuda",
            device=torch.device(device),
            verbose=False,
            verbose_preprocessing=False,
            allow_tqdm=False,
        )
        predictor.initialize_from_trained_model_folder(
            str(model),
            use_folds=tuple(f if f == "all" else int(f) for f in chosen),
            checkpoint_name=checkpoint,
        )
    return predictor, chosen


def _predict(
    model: Path,
    input_folder: str | Path,
    output_folder: str | Path,
    folds: Sequence[int | str] | None,
    device: str,
    test_time_augmentation: bool,
    save_probabilities: bool,
    checkpoint: str,
) -> None:
    predictor, _ = _load_predictor(model, folds, device, test_time_augmentation, checkpoint)
    # In this process: nnU-Net's worker processes are forked from a threaded parent, and one of
    # them once hung for good on a lock it inherited (tests, 2026-11-25); on a few CPU cores
    # they save little.
    Path(output_folder).mkdir(parents=True, exist_ok=True)  # the sequential path does not
    with nnunet_environment(), _quiet():
        predictor.predict_from_files_sequential(
            str(input_folder),
            str(output_folder),
            save_probabilities=save_probabilities,
            overwrite=True,
        )


class NewLesionPredictor:
    """nnU-Net's predictor for one pair at a time, in process (construct, load, predict).

    Arrays are handed over exactly as nnU-Net's SimpleITK reader saw the training images
    (axes k, j, i and spacing reversed), so the network sees what it learned on.
    """

    def __init__(
        self,
        model: str | Path,
        folds: Sequence[int | str] | None = None,
        device: str = "cpu",
        test_time_augmentation: bool = False,
        checkpoint: str = "checkpoint_final.pth",
        mirror_axes: Sequence[int] | None = None,
    ) -> None:
        """``mirror_axes``: with ``test_time_augmentation``, mirror along these axes of the
        volumes only (0, 1, 2 as in ``Volume.array``; 0 is left-right in MNI space), one more
        network pass per combination; None: every axis the model allows (8 passes in 3-D)."""
        from msnewlesions.postprocessing import model_postprocessing

        with open_model(model) as folder:  # a zip is unpacked only while the weights load
            self._predictor, self.folds = _load_predictor(
                folder, folds, device, test_time_augmentation, checkpoint
            )
            if mirror_axes is not None:
                if not set(mirror_axes) <= {0, 1, 2}:
                    raise ValueError(f"mirror axes must be 0, 1 or 2, not {mirror_axes}")
                # nnU-Net sees the arrays transposed (k, j, i): volume axis a is its axis 2 - a.
                self._predictor.allowed_mirroring_axes = tuple(sorted(2 - a for a in mirror_axes))
            #: The threshold and minimum lesion volume chosen for this model (or the defaults).
            self.postprocessing = model_postprocessing(folder)

    def probability(self, baseline: Volume, followup: Volume) -> Volume:
        """The new-lesion probability map (float32) on the pair's (preprocessed) grid."""
        import numpy as np

        if not baseline.same_grid(followup):
            raise ValueError("baseline and follow-up must share the preprocessed grid")
        data = np.stack([baseline.array.transpose(2, 1, 0), followup.array.transpose(2, 1, 0)])
        properties = {"spacing": [float(s) for s in baseline.spacing[::-1]]}
        with nnunet_environment(), _quiet():
            _, probabilities = self._predictor.predict_single_npy_array(
                data.astype(np.float32), properties, None, None, True
            )
        foreground = np.asarray(probabilities[1], dtype=np.float32).transpose(2, 1, 0)
        return baseline.with_array(np.ascontiguousarray(foreground))


def check_model(model: str | Path) -> Path:
    """A model folder with nnU-Net's files and two input channels, else one clear error."""
    model = Path(model)
    if not model.is_dir():
        raise MSNewLesionsError(f"model {model} does not exist or is not a folder.")
    for name in ("plans.json", "dataset.json"):
        if not (model / name).exists():
            raise MSNewLesionsError(f"{model} is not an nnU-Net model folder (no {name}).")
    channels = json.loads((model / "dataset.json").read_text()).get("channel_names", {})
    if len(channels) != len(CHANNEL_NAMES):
        raise MSNewLesionsError(
            f"model {model} takes {len(channels)} input channel(s); a new-lesion model takes 2 "
            "(baseline, follow-up)."
        )
    return model


def strip_checkpoint(source: str | Path, destination: str | Path) -> None:
    """Copy a checkpoint without its optimizer state (for shipping: about a third of the size)."""
    import torch

    checkpoint = torch.load(str(source), map_location="cpu", weights_only=False)
    checkpoint["optimizer_state"] = None
    checkpoint.pop("lr_scheduler_state", None)
    checkpoint["grad_scaler_state"] = None
    torch.save(checkpoint, str(destination))


_MODEL_FILES = ("plans.json", "dataset.json", "dataset_fingerprint.json", "postprocessing.json")


def copy_model(source: str | Path, destination: str | Path) -> None:
    """Copy a model folder's inference files (plans, dataset, post-processing, final checkpoints)
    elsewhere."""
    source, destination = check_model(source), Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    for name in _MODEL_FILES:
        if (source / name).exists():
            shutil.copy2(source / name, destination / name)
    for fold in sorted(source.glob("fold_*")):
        if (fold / "checkpoint_final.pth").exists():
            (destination / fold.name).mkdir(exist_ok=True)
            strip_checkpoint(
                fold / "checkpoint_final.pth", destination / fold.name / "checkpoint_final.pth"
            )


_FOLD_FILES = ("checkpoint_final.pth", "debug.json", "progress.png")


def export_model(model: str | Path, zip_path: str | Path, strip_optimizer: bool = True) -> Path:
    """Zip a model's inference files in nnU-Net's layout (``DatasetNNN_x/Trainer__Plans__cfg/``).

    nnU-Net's own ``nnUNetv2_install_pretrained_model_from_zip`` reads the result; with
    ``strip_optimizer`` the checkpoints lose their optimizer state (about a third of the size).
    """
    model = check_model(model)
    zip_path = Path(zip_path)
    prefix = (
        Path(model.parent.name, model.name)
        if model.parent.name.startswith("Dataset")
        else Path(model.name)
    )
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{zip_path.name}.", dir=zip_path.parent)
    os.close(handle)
    try:
        with (
            zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as archive,
            tempfile.TemporaryDirectory() as scratch,
        ):
            for name in _MODEL_FILES:
                if (model / name).exists():
                    archive.write(model / name, str(prefix / name))
            for fold in sorted(model.glob("fold_*")):
                for name in _FOLD_FILES:
                    source = fold / name
                    if not source.exists():
                        continue
                    if name.endswith(".pth") and strip_optimizer:
                        stripped = Path(scratch) / f"{fold.name}_{name}"
                        strip_checkpoint(source, stripped)
                        source = stripped
                    archive.write(source, str(prefix / fold.name / name))
        os.chmod(temporary, 0o644)
        os.replace(temporary, zip_path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return zip_path


def _model_folder_in(root: Path) -> Path:
    candidates = sorted(
        p.parent for p in root.rglob("plans.json") if (p.parent / "dataset.json").exists()
    )
    if len(candidates) != 1:
        raise MSNewLesionsError(
            f"expected one nnU-Net model in the archive, found {len(candidates)}."
        )
    return check_model(candidates[0])


def _extract(zip_path: Path, destination: Path) -> None:
    try:
        with zipfile.ZipFile(zip_path) as archive:
            for member in archive.namelist():
                if Path(member).is_absolute() or ".." in Path(member).parts:
                    raise MSNewLesionsError(f"{zip_path} holds an unsafe path: {member}")
            archive.extractall(destination)
    except zipfile.BadZipFile as error:
        raise MSNewLesionsError(f"{zip_path} is not a zip archive.") from error


def import_model(zip_path: str | Path, destination: str | Path) -> Path:
    """Unpack a model zip (ours or nnU-Net's export) under ``destination``; return its folder."""
    zip_path, destination = Path(zip_path), Path(destination)
    if not zip_path.is_file():
        raise MSNewLesionsError(f"{zip_path} does not exist.")
    destination.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=destination) as scratch:
        _extract(zip_path, Path(scratch))
        found = _model_folder_in(Path(scratch))
        relative = found.relative_to(scratch)
        target = destination / relative
        if target.exists():
            raise MSNewLesionsError(f"{target} already exists; remove it first.")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(found, target)
    return target


@contextmanager
def open_model(model: str | Path) -> Iterator[Path]:
    """A model folder for the duration of the block: the folder itself, or a zip unpacked."""
    model = Path(model)
    if model.is_file() and zipfile.is_zipfile(model):
        with tempfile.TemporaryDirectory(prefix="msnewlesions-model-") as scratch:
            _extract(model, Path(scratch))
            yield _model_folder_in(Path(scratch))
    else:
        yield check_model(model)
