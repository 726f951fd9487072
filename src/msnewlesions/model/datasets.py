"""Training data: read three folder layouts into cases, and write them as an nnU-Net raw dataset.

Layouts (``--layout``):

* ``msseg2``: ``<case>/flair_time01_on_middle_space.nii.gz`` (baseline),
  ``flair_time02_on_middle_space.nii.gz`` (follow-up), ``ground_truth.nii.gz`` (consensus), all
  on one grid. Not skull-stripped.
* ``open_ms_data`` (the Ljubljana longitudinal set): ``raw/patientNN/study1_FLAIR.nii.gz``,
  ``study2_FLAIR.nii.gz``, ``gt.nii.gz`` on the grid of ``coregistered/patientNN/brainmask.nii.gz``,
  placed by ``study1_FLAIR_to_common_space.txt`` (maps a common point to the study-1 point).
  Patients missing a timepoint are skipped with a message. Its masks mark lesion change in both
  directions; with ``new_only`` a component is kept only when it gains FLAIR signal: the median of
  (follow-up - baseline) over its voxels exceeds ``GAIN_THRESHOLD`` (0.5 standard deviations of
  the brain's intensities). That is decided on the mask's own grid, where the experts drew it
  (both FLAIRs carried there by the database's transforms, z-scored in its brain mask), before
  the kept part is carried to the preprocessed grid: :func:`gaining_on_label_grid`, the one
  definition that training and the accuracy benchmark share.
* ``bids``: ``sub-*/ses-*/anat/*_FLAIR.nii.gz``; every two consecutive sessions of a subject (in
  session order) make a case; its label is the derivative
  ``derivatives/*/sub-*/ses-<later>/anat/*_desc-newlesions_mask.nii.gz`` on the follow-up's grid.

Every label reaches the preprocessed grid through the same transforms as the images, by one
nearest-neighbour resampling.
"""

from __future__ import annotations

import itertools
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from msnewlesions.atomic import remove_partial_files, write_json_atomically
from msnewlesions.errors import MSNewLesionsError
from msnewlesions.io import Volume, read_volume, write_volume_atomically
from msnewlesions.lesions import components
from msnewlesions.model import nnunet
from msnewlesions.preprocessing import registration
from msnewlesions.preprocessing.intensity import zscore
from msnewlesions.preprocessing.pipeline import PreprocessedPair, PreprocessOptions, preprocess_pair

logger = logging.getLogger(__name__)

Layout = Literal["msseg2", "open_ms_data", "bids"]
LabelSpace = Literal["baseline", "followup", "common"]

#: Components of an open_ms_data change mask whose median z-scored FLAIR difference (follow-up
#: minus baseline) exceeds this are new or enlarging lesions; the others shrink, fade or are
#: ambiguous (the data's README counts 19 gaining and 16 losing of 48 in patient03).
GAIN_THRESHOLD = 0.5


@dataclass(frozen=True)
class Case:
    """One training case: a baseline / follow-up pair of one patient and its new-lesion mask."""

    case_id: str
    patient: str
    baseline: Path
    followup: Path
    label: Path | None = None
    label_space: LabelSpace = "baseline"
    #: For labels on a third grid: the ITK transform that maps a label-grid point to the baseline.
    baseline_to_label_space: Path | None = None
    #: ... and the one that maps it to the follow-up, with a brain mask on that grid: what
    #: :func:`gaining_on_label_grid` needs to tell a label's new and enlarging lesions apart.
    followup_to_label_space: Path | None = None
    label_brain_mask: Path | None = None


def _both_scans(folder: Path, baseline: str, followup: str) -> tuple[Path, Path] | None:
    """The two scans of a case folder, or None (with a warning) when one is missing."""
    paths = folder / baseline, folder / followup
    if all(path.exists() for path in paths):
        return paths
    logger.warning("%s: skipped, it lacks %s", folder.name, " or ".join(p.name for p in paths))
    return None


def read_msseg2(root: Path) -> list[Case]:
    cases = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        scans = _both_scans(
            folder, "flair_time01_on_middle_space.nii.gz", "flair_time02_on_middle_space.nii.gz"
        )
        if scans is None:
            continue
        baseline, followup = scans
        label = folder / "ground_truth.nii.gz"
        cases.append(
            Case(folder.name, folder.name, baseline, followup, label if label.exists() else None)
        )
    return cases


def read_open_ms_data(root: Path) -> list[Case]:
    raw = root / "longitudinal" / "raw" if (root / "longitudinal").is_dir() else root / "raw"
    if not raw.is_dir():
        raise MSNewLesionsError(f"{root} has no raw/ (or longitudinal/raw/) folder of patients.")
    cases = []
    for folder in sorted(raw.glob("patient*")):
        scans = _both_scans(folder, "study1_FLAIR.nii.gz", "study2_FLAIR.nii.gz")
        if scans is None:
            continue
        baseline, followup = scans
        found = {
            "baseline_to_label_space": folder / "study1_FLAIR_to_common_space.txt",
            "followup_to_label_space": folder / "study2_FLAIR_to_common_space.txt",
            "label_brain_mask": raw.parent / "coregistered" / folder.name / "brainmask.nii.gz",
        }
        label = folder / "gt.nii.gz"
        cases.append(
            Case(
                folder.name,
                folder.name,
                baseline,
                followup,
                label if label.exists() else None,
                "common",
                **{name: path if path.exists() else None for name, path in found.items()},
            )
        )
    return cases


def read_bids(root: Path) -> list[Case]:
    cases = []
    for subject in sorted(root.glob("sub-*")):
        sessions = []
        for session in sorted(subject.glob("ses-*")):
            flairs = sorted((session / "anat").glob("*_FLAIR.nii.gz"))
            if flairs:
                sessions.append((session.name, flairs[0]))
        if len(sessions) < 2:
            logger.warning("%s: skipped, it has fewer than two sessions with a FLAIR", subject.name)
            continue
        for (first, baseline), (second, followup) in itertools.pairwise(sessions):
            masks = sorted(
                root.glob(
                    f"derivatives/*/{subject.name}/{second}/anat/*_desc-newlesions_mask.nii.gz"
                )
            )
            cases.append(
                Case(
                    f"{subject.name}_{first}_{second}",
                    subject.name,
                    baseline,
                    followup,
                    masks[0] if masks else None,
                    "followup",
                )
            )
    return cases


READERS = {"msseg2": read_msseg2, "open_ms_data": read_open_ms_data, "bids": read_bids}


def read_cases(layout: Layout, root: str | Path) -> list[Case]:
    """The cases of a folder in one of the supported layouts."""
    root = Path(root)
    if not root.is_dir():
        raise MSNewLesionsError(f"{root} is not a folder.")
    if layout not in READERS:
        raise MSNewLesionsError(f"unknown layout {layout!r}; use one of {', '.join(READERS)}.")
    cases = READERS[layout](root)
    if not cases:
        raise MSNewLesionsError(f"no case found in {root} for the {layout} layout.")
    return cases


def label_on_grid(case: Case, label: Volume, pair: PreprocessedPair) -> Volume:
    """The case's label resampled (nearest neighbour, once) onto the preprocessed grid."""
    if case.label_space == "baseline":
        grid_to_label: sitk.Transform = pair.baseline_to_mni
    elif case.label_space == "followup":
        grid_to_label = pair.followup_to_mni
    else:
        if case.baseline_to_label_space is None:
            raise MSNewLesionsError(f"{case.case_id}: no transform places its label's grid.")
        baseline_to_label = sitk.ReadTransform(str(case.baseline_to_label_space))
        grid_to_label = registration.compose_exact(
            baseline_to_label.GetInverse(), pair.baseline_to_mni
        )
    binary = label.with_array((label.array > 0).astype(np.uint8))
    return registration.resample(binary, pair.brain_mask, grid_to_label, "nearest")


def keep_gaining_components(
    label: Volume, baseline: Volume, followup: Volume, threshold: float = GAIN_THRESHOLD
) -> tuple[Volume, int, int]:
    """Only the label components whose median (follow-up - baseline) exceeds ``threshold``.

    Returns the filtered label and the numbers of components kept and dropped.
    """
    labels, count = components(label.array)
    if count == 0:
        return label, 0, 0
    difference = followup.array - baseline.array
    medians = ndimage.median(difference, labels, index=np.arange(1, count + 1))
    keep = np.zeros(count + 1, dtype=bool)
    keep[1:] = np.asarray(medians) > threshold
    return (
        label.with_array(keep[labels].astype(np.uint8)),
        int(keep.sum()),
        int(count - keep.sum()),
    )


def gaining_on_label_grid(case: Case, change: Volume) -> tuple[Volume, int, int]:
    """The components of ``change`` (a label on a third grid) that gain FLAIR signal, on that grid.

    Both visits are carried onto the label's grid by the case's transforms (linear, once) and
    z-scored inside its brain mask; then :func:`keep_gaining_components`. Returns the kept label
    and the numbers of components kept and dropped. Deciding here, where the label was drawn,
    rather than after our preprocessing, keeps one answer per component whatever grid the label
    travels to next (on patient03 the two grids had kept 14 and 21 of its components).
    """
    needed = {
        "baseline transform": case.baseline_to_label_space,
        "follow-up transform": case.followup_to_label_space,
        "brain mask": case.label_brain_mask,
    }
    missing = [name for name, path in needed.items() if path is None]
    if missing:
        raise MSNewLesionsError(
            f"{case.case_id}: its label's grid has no {' or '.join(missing)}, so its new and "
            "enlarging lesions cannot be told from the others."
        )
    assert case.label_brain_mask and case.baseline_to_label_space and case.followup_to_label_space
    brain = read_volume(case.label_brain_mask)
    brain = brain.with_array((brain.array > 0).astype(np.uint8))
    visits = [
        zscore(
            registration.resample(
                read_volume(scan), brain, sitk.ReadTransform(str(transform)), "linear"
            ),
            brain,
        )
        for scan, transform in (
            (case.baseline, case.baseline_to_label_space),
            (case.followup, case.followup_to_label_space),
        )
    ]
    binary = change.with_array((change.array > 0).astype(np.uint8))
    return keep_gaining_components(binary, visits[0], visits[1])


def training_label(
    case: Case, pair: PreprocessedPair, new_only: bool
) -> tuple[Volume, dict[str, Any]]:
    """The case's label on the preprocessed grid (with ``new_only``, a third grid's label keeps
    only its gaining components, decided on its own grid), and what was measured of it."""
    assert case.label is not None
    label = read_volume(case.label)
    full = label_on_grid(case, label, pair)
    record: dict[str, Any] = {"change_volume_mm3": float(full.array.sum() * full.voxel_volume_mm3)}
    if not (new_only and case.label_space == "common"):
        return full, record
    gaining, kept, dropped = gaining_on_label_grid(case, label)
    record.update(components_kept=kept, components_dropped=dropped)
    logger.info("%s: kept %d gaining lesion components, dropped %d", case.case_id, kept, dropped)
    return label_on_grid(case, gaining, pair), record


def folds_for(
    case_patients: dict[str, str], folds: int = 5, seed: int = 12345
) -> list[dict[str, list[str]]]:
    """``[{"train": [...], "val": [...]}, ...]``: 80 / 20 by patient, no patient on both sides.

    With fewer than ``folds`` patients there are as many folds as patients (a warning says so);
    with one patient, its cases serve for both training and validation.
    """
    patients = sorted(set(case_patients.values()))
    random.Random(seed).shuffle(patients)
    if len(patients) < folds:
        logger.warning(
            "%d patient(s): %d fold(s) instead of %d", len(patients), max(len(patients), 1), folds
        )
        folds = max(len(patients), 1)
    groups = [patients[i::folds] for i in range(folds)]
    splits = []
    for group in groups:
        validation = sorted(c for c, p in case_patients.items() if p in group)
        training = sorted(c for c, p in case_patients.items() if p not in group) or validation
        splits.append({"train": training, "val": validation})
    return splits


@dataclass(frozen=True)
class DatasetOptions:
    dataset_id: int = 501
    new_only: bool = True
    preprocess: PreprocessOptions = field(default_factory=PreprocessOptions)


def write_case(
    case: Case, dataset_folder: Path, new_only: bool, options: PreprocessOptions
) -> dict[str, Any]:
    """Preprocess one case and write its two channels and label; return what was done."""
    images, labels = dataset_folder / "imagesTr", dataset_folder / "labelsTr"
    targets = [images / f"{case.case_id}_0000.nii.gz", images / f"{case.case_id}_0001.nii.gz"]
    label_path = labels / f"{case.case_id}.nii.gz"
    if all(p.exists() for p in [*targets, label_path]):
        return {"case": case.case_id, "status": "already written"}
    if case.label is None:
        logger.warning("%s: skipped, it has no new-lesion mask", case.case_id)
        return {"case": case.case_id, "status": "skipped: no label"}
    pair = preprocess_pair(read_volume(case.baseline), read_volume(case.followup), options)
    label, measured = training_label(case, pair, new_only)
    record: dict[str, Any] = {"case": case.case_id, "status": "written", "qc": pair.qc.as_dict()}
    record |= measured
    record["label_volume_mm3"] = float(label.array.sum() * label.voxel_volume_mm3)
    # The label last: its presence marks a complete case for a resumed run.
    write_volume_atomically(pair.baseline, targets[0], np.float32)
    write_volume_atomically(pair.followup, targets[1], np.float32)
    write_volume_atomically(label, label_path, np.uint8)
    return record


def build_dataset(
    layout: Layout, input_root: str | Path, raw_root: str | Path, options: DatasetOptions
) -> Path:
    """Preprocess every case of a folder into ``raw_root/DatasetNNN_MSNewLesions`` (resumable)."""
    cases = read_cases(layout, input_root)
    folder = Path(raw_root) / nnunet.dataset_name(options.dataset_id)
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    remove_partial_files(folder)  # what a killed earlier run was writing
    records = []
    for index, case in enumerate(cases, start=1):
        logger.info("case %d/%d: %s", index, len(cases), case.case_id)
        records.append(write_case(case, folder, options.new_only, options.preprocess))
    written = {p.name.removesuffix(".nii.gz") for p in (folder / "labelsTr").glob("*.nii.gz")}
    if not written:
        raise MSNewLesionsError(f"no case of {input_root} could be written (none has a label).")
    nnunet.write_dataset_json(folder, len(written))
    patients = {case.case_id: case.patient for case in cases if case.case_id in written}
    write_json_atomically(folder / "splits_final.json", folds_for(patients))
    write_json_atomically(folder / "msnewlesions_cases.json", records)
    return folder
