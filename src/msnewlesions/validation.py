"""Checks of preprocessing against independent references (open_ms_data's transforms and masks).

The Ljubljana longitudinal database gives, per patient, ``studyY_FLAIR_to_common_space.txt``: ITK
affine transforms that map a point of the patient's common space to the point of study Y, and an
expert brain mask and change mask on the common grid. From them:

* :func:`mapping_error_mm` compares our follow-up -> baseline mapping with the reference one over
  the expert brain;
* :func:`common_to_mni` carries an expert mask into our MNI grid through the reference baseline
  transform and our ``baseline_to_mni``.

Reference transforms may be affine, not rigid: they are applied exactly, never orthonormalized.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from msnewlesions.io import RAS_TO_LPS, Volume, read_volume
from msnewlesions.lesions import components
from msnewlesions.metrics import dice
from msnewlesions.preprocessing import registration
from msnewlesions.preprocessing.pipeline import PreprocessedPair


@dataclass(frozen=True)
class OpenMSPair:
    """One complete longitudinal pair of open_ms_data, with its reference geometry."""

    patient: str
    baseline: Path
    followup: Path
    baseline_to_common: Path
    followup_to_common: Path
    brain_mask: Path
    change_mask: Path


def open_ms_pairs(root: str | Path) -> list[OpenMSPair]:
    """The patients of ``root/longitudinal`` that have both studies (others are skipped)."""
    longitudinal = Path(root) / "longitudinal"
    pairs = []
    for patient_dir in sorted((longitudinal / "raw").glob("patient*")):
        patient = patient_dir.name
        files = {
            "baseline": patient_dir / "study1_FLAIR.nii.gz",
            "followup": patient_dir / "study2_FLAIR.nii.gz",
            "baseline_to_common": patient_dir / "study1_FLAIR_to_common_space.txt",
            "followup_to_common": patient_dir / "study2_FLAIR_to_common_space.txt",
            "brain_mask": longitudinal / "coregistered" / patient / "brainmask.nii.gz",
            "change_mask": patient_dir / "gt.nii.gz",
        }
        if all(path.exists() for path in files.values()):
            pairs.append(OpenMSPair(patient=patient, **files))
    return pairs


def _apply_ras(transform: sitk.Transform, points_ras: np.ndarray) -> np.ndarray:
    """Apply any ITK transform (LPS) point by point to RAS+ points (N x 3)."""
    points_lps = np.atleast_2d(points_ras) @ RAS_TO_LPS.T
    mapped = np.array([transform.TransformPoint(tuple(float(v) for v in p)) for p in points_lps])
    return mapped @ RAS_TO_LPS.T


def reference_correspondences(
    baseline_to_common: sitk.Transform,
    followup_to_common: sitk.Transform,
    brain_mask_common: Volume,
    step: int = 5,
) -> tuple[np.ndarray, np.ndarray]:
    """Where the baseline and, by the reference, the follow-up see each expert-brain voxel.

    For a voxel centre ``p`` of the common grid inside the brain (every ``step``-th), the
    baseline point ``baseline_to_common(p)`` and the follow-up point ``followup_to_common(p)``
    (RAS mm, N x 3 each).
    """
    points = brain_mask_common.index_to_world(np.argwhere(brain_mask_common.array > 0)[::step])
    return _apply_ras(baseline_to_common, points), _apply_ras(followup_to_common, points)


def mapping_error_mm(
    followup_to_baseline: sitk.Transform,
    baseline_to_common: sitk.Transform,
    followup_to_common: sitk.Transform,
    brain_mask_common: Volume,
    step: int = 5,
) -> np.ndarray:
    """Distances (mm) between our and the reference follow-up point of each expert-brain voxel:
    ours is ``followup_to_baseline`` of the baseline point (:func:`reference_correspondences`)."""
    on_baseline, reference = reference_correspondences(
        baseline_to_common, followup_to_common, brain_mask_common, step
    )
    return np.linalg.norm(_apply_ras(followup_to_baseline, on_baseline) - reference, axis=1)


def rigid_fit_residuals_mm(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Distances left by the best rigid map of ``source`` points onto ``target`` points
    (least squares: Kabsch / Umeyama without scaling), point by point.

    Applied to :func:`reference_correspondences`, it is the floor of any rigid registration: the
    reference mapping may be affine (scaling, shear: scanner calibration, gradient drift), and
    no rigid transform follows it closer than this.
    """
    source_centre, target_centre = source.mean(axis=0), target.mean(axis=0)
    covariance = (source - source_centre).T @ (target - target_centre)
    u, _, vt = np.linalg.svd(covariance)
    reflection = np.sign(np.linalg.det(vt.T @ u.T))
    rotation = vt.T @ np.diag([1.0, 1.0, reflection]) @ u.T
    fitted = (source - source_centre) @ rotation.T + target_centre
    return np.asarray(np.linalg.norm(fitted - target, axis=1))


def common_to_mni(
    mask_common: Volume,
    mni_grid: Volume,
    baseline_to_mni: sitk.Transform,
    baseline_to_common: sitk.Transform,
) -> Volume:
    """A binary mask of the common grid carried into an MNI grid (nearest neighbour, uint8).

    An MNI point ``x`` is the baseline point ``baseline_to_mni(x)``, which is the common point
    ``inverse(baseline_to_common)(baseline_to_mni(x))``.
    """
    common_to_mni = registration.compose_exact(baseline_to_common.GetInverse(), baseline_to_mni)
    binary = mask_common.with_array((mask_common.array > 0).astype(np.uint8))
    return registration.resample(binary, mni_grid, common_to_mni, "nearest")


@dataclass(frozen=True)
class PairCheck:
    patient: str
    error_mean_mm: float
    error_p95_mm: float
    brain_mask_dice: float
    change_voxels_in_mask: float
    #: The best any rigid registration can do here (:func:`rigid_fit_residuals_mm`).
    floor_mean_mm: float
    floor_p95_mm: float


def check_against_reference(pair: OpenMSPair, preprocessed: PreprocessedPair) -> PairCheck:
    """Registration error, brain-mask Dice and change-mask coverage of a preprocessed pair."""
    baseline_to_common = sitk.ReadTransform(str(pair.baseline_to_common))
    followup_to_common = sitk.ReadTransform(str(pair.followup_to_common))
    brain_common = read_volume(pair.brain_mask)
    errors = mapping_error_mm(
        preprocessed.followup_to_baseline, baseline_to_common, followup_to_common, brain_common
    )
    floor = rigid_fit_residuals_mm(
        *reference_correspondences(baseline_to_common, followup_to_common, brain_common)
    )
    grid = preprocessed.brain_mask
    expert_brain = common_to_mni(
        brain_common, grid, preprocessed.baseline_to_mni, baseline_to_common
    )
    change = common_to_mni(
        read_volume(pair.change_mask), grid, preprocessed.baseline_to_mni, baseline_to_common
    )
    ours = grid.array > 0
    change_voxels = change.array > 0
    coverage = float((change_voxels & ours).sum() / max(int(change_voxels.sum()), 1))
    return PairCheck(
        patient=pair.patient,
        error_mean_mm=float(errors.mean()),
        error_p95_mm=float(np.percentile(errors, 95)),
        brain_mask_dice=dice(ours, expert_brain.array),
        change_voxels_in_mask=coverage,
        floor_mean_mm=float(floor.mean()),
        floor_p95_mm=float(np.percentile(floor, 95)),
    )


@dataclass(frozen=True)
class MaskAgreement:
    """How a native-grid mask agrees with the MNI mask it was carried from."""

    #: Per MNI lesion (6-connected): distance (mm) between its centroid and the centroid of the
    #: native voxels that fall in it, carried into MNI space; NaN when no native voxel does.
    centroid_distance_mm: dict[int, float]
    #: Volume (mm3) of each MNI lesion.
    volume_mm3: dict[int, float]
    #: Fraction of the native mask's voxels whose centre lands in an MNI lesion.
    native_voxels_in_mni_lesions: float


def mask_agreement(
    native_mask: Volume, mni_mask: Volume, followup_to_mni: sitk.Transform
) -> MaskAgreement:
    """Check a native mask against the MNI mask through ``followup_to_mni`` (MNI -> follow-up).

    Each native voxel centre is carried into MNI space (the inverse transform) and looked up in
    the MNI mask's nearest voxel, which is how a nearest-neighbour resampling decides it.
    """
    mni_labels, mni_count = components(mni_mask.array)
    native_points = native_mask.index_to_world(np.argwhere(native_mask.array > 0))
    in_mni = _apply_ras(followup_to_mni.GetInverse(), native_points).reshape(-1, 3)
    indices = np.round(mni_mask.world_to_index(in_mni)).astype(int).reshape(-1, 3)
    inside = np.all((indices >= 0) & (indices < np.array(mni_mask.shape)), axis=1)
    holders = np.zeros(len(indices), dtype=int)
    holders[inside] = mni_labels[tuple(indices[inside].T)]
    distances, volumes = {}, {}
    for lesion in range(1, mni_count + 1):
        voxels = np.argwhere(mni_labels == lesion)
        centroid = mni_mask.index_to_world(voxels.mean(axis=0)[None])[0]
        volumes[lesion] = float(len(voxels) * mni_mask.voxel_volume_mm3)
        mine = in_mni[holders == lesion]
        distances[lesion] = (
            float(np.linalg.norm(mine.mean(axis=0) - centroid)) if len(mine) else float("nan")
        )
    fraction = float((holders > 0).mean()) if len(holders) else 1.0
    return MaskAgreement(distances, volumes, fraction)
