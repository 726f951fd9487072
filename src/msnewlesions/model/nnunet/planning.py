"""Raw datasets to nnU-Net's preprocessed data: ``dataset.json``, integrity check, plans.

Datasets have two input channels, ``0000`` = baseline and ``0001`` = follow-up (preprocessed, in
MNI space), and labels background (0) / new_lesion (1).

Configurations (``config``):

* ``paper``: nnU-Net's own 3d_fullres plans (``nnUNetPlans``), the paper's setting, for a GPU.
* ``cpu``: a plans variant ``nnUNetPlans_cpu`` that makes training and inference practical on a
  2-core machine: the same 3d_fullres data, a 5-stage U-Net with 16 base features on 64^3
  patches, batch size 2 (nnU-Net's default here is 6 stages, 32 features, 128^3 patches).
"""

from __future__ import annotations

import json
import logging
import shutil
from copy import deepcopy
from pathlib import Path
from typing import Any

from msnewlesions.atomic import write_json_atomically
from msnewlesions.errors import MSNewLesionsError
from msnewlesions.model.nnunet.environment import (
    CHANNEL_NAMES,
    CONFIGURATION,
    DATASET_NAME,
    LABELS,
    PLANS,
    dataset_id_of,
    dataset_name,
    in_fresh_process,
    nnunet_environment,
    quiet,
)

logger = logging.getLogger(__name__)

CPU_PATCH_SIZE = (64, 64, 64)
CPU_FEATURES = (16, 32, 64, 128, 256)
CPU_BATCH_SIZE = 2
#: Foreground voxels the fingerprint samples for its intensity statistics, over all cases
#: (nnU-Net's default is 10^8). Only CT normalization reads those statistics; both channels here
#: are z-scored, and 10^8 samples of two channels cost about 15 s per planning of any dataset.
FINGERPRINT_INTENSITY_SAMPLES = 10**6


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
    write_json_atomically(Path(dataset_folder, "dataset.json"), description)


def _verify_job(raw_root: str, dataset_id: int, num_processes: int) -> None:
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    folder = Path(raw_root) / dataset_name(dataset_id)
    with nnunet_environment(raw=raw_root), quiet():
        try:
            verify_dataset_integrity(str(folder), num_processes)
        except (AssertionError, RuntimeError) as error:
            raise MSNewLesionsError(f"{folder} fails nnU-Net's integrity check: {error}") from None


def verify_dataset(raw_root: str | Path, dataset_id: int, num_processes: int = 1) -> None:
    """nnU-Net's own integrity check of a raw dataset; raises MSNewLesionsError if it fails."""
    in_fresh_process(_verify_job, str(raw_root), dataset_id, num_processes)


def cpu_plans(plans: dict[str, Any]) -> dict[str, Any]:
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
    in_fresh_process(
        _plan_and_preprocess_job, str(raw_root), str(preprocessed_root), dataset_id, num_processes
    )


def _plan_and_preprocess_job(
    raw_root: str, preprocessed_root: str, dataset_id: int, num_processes: int
) -> None:
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import (
        DatasetFingerprintExtractor,
    )
    from nnunetv2.experiment_planning.plan_and_preprocess_api import plan_experiments, preprocess
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    with nnunet_environment(raw=raw_root, preprocessed=preprocessed_root), quiet():
        logger.info("nnU-Net: fingerprint and integrity check of %s", dataset_name(dataset_id))
        verify_dataset_integrity(str(Path(raw_root) / dataset_name(dataset_id)), num_processes)
        extractor = DatasetFingerprintExtractor(dataset_id, num_processes, verbose=False)
        extractor.num_foreground_voxels_for_intensitystats = FINGERPRINT_INTENSITY_SAMPLES
        extractor.show_progress_bar = False
        extractor.run(overwrite_existing=True)
        logger.info("nnU-Net: planning")
        plan_experiments([dataset_id])
        folder = Path(preprocessed_root) / dataset_name(dataset_id)
        plans = json.loads((folder / f"{PLANS['paper']}.json").read_text())
        write_json_atomically(folder / f"{PLANS['cpu']}.json", cpu_plans(plans))
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
    return in_fresh_process(
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
    with nnunet_environment(raw=raw_root, preprocessed=preprocessed_root), quiet():
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


def prepare_for_training(raw_dataset: str | Path, preprocessed_root: str | Path) -> list[str]:
    """Plan and preprocess a raw dataset once; later, preprocess only the cases added since.

    Returns the identifiers of the cases preprocessed now (all of them on the first call).
    """
    raw_dataset = Path(raw_dataset)
    dataset_id = dataset_id_of(raw_dataset)
    preprocessed = Path(preprocessed_root) / raw_dataset.name
    if not (preprocessed / f"{PLANS['cpu']}.json").exists():
        plan_and_preprocess(raw_dataset.parent, preprocessed_root, dataset_id)
        return sorted(p.name.removesuffix(".nii.gz") for p in (raw_dataset / "labelsTr").iterdir())
    added = preprocess_new_cases(raw_dataset.parent, preprocessed_root, dataset_id)
    if added:
        logger.info("preprocessed %d new case(s)", len(added))
    return added
