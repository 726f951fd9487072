"""An example FLAIR pair built only from data installed with the packages (no ../shared needed).

Anatomy: nilearn's MNI152 (ICBM 2009) tissue maps, turned into a FLAIR-like contrast (grey matter
a little brighter than white matter, CSF dark). Follow-up: the same head moved by a known small
rigid transform, resampled onto 1 x 1 x 3 mm slices, with its own noise and a few new hyperintense
lesions in the white matter. The true lesions are written beside the pair, so that a run of the
tool on the example can be checked against them.

Run ``python -m msnewlesions.example DIR`` to write ``baseline.nii.gz``, ``followup.nii.gz``,
``true_new_lesions.nii.gz`` (on the follow-up's grid) and ``truth.json``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from msnewlesions import template
from msnewlesions.atomic import write_json_atomically
from msnewlesions.io import Volume, write_volume
from msnewlesions.preprocessing import registration

#: The example's baseline_to_followup (maps a follow-up point to the baseline point it shows):
#: rotations (rad) about the LPS x, y, z axes and translation (mm, LPS).
EXAMPLE_ROTATION_RAD = (0.05, -0.03, 0.04)
EXAMPLE_TRANSLATION_MM = (3.0, -4.0, 2.5)


@dataclass(frozen=True)
class ExamplePair:
    baseline: Volume
    followup: Volume
    new_lesions: Volume  # on the follow-up's grid
    baseline_to_followup: object  # sitk.Euler3DTransform: follow-up point -> baseline point


def flair_like(seed: int = 0) -> Volume:
    """A FLAIR-like image on the MNI 1 mm grid from the template's tissue maps."""
    rng = np.random.default_rng(seed)
    brain = template.mni_brain_mask().array > 0
    white = template.mni_white_matter().array
    grey_matter = template.mni_grey_matter().array
    csf = np.clip(brain - white - grey_matter, 0, 1)
    image = 600 * white + 750 * grey_matter + 150 * csf
    image = ndimage.gaussian_filter(image, 0.7)
    image += rng.normal(0, 15, image.shape)
    image[~ndimage.binary_dilation(brain, iterations=3)] = 0
    return template.mni_t1().with_array(np.clip(image, 0, None).astype(np.float32))


def _lesion_centres(white: np.ndarray, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    deep_white = ndimage.binary_erosion(white > 0.9, iterations=4)
    candidates = np.argwhere(deep_white)
    centres: list[np.ndarray] = []
    while len(centres) < count:
        candidate = candidates[rng.integers(len(candidates))]
        if all(np.linalg.norm(candidate - c) > 20 for c in centres):
            centres.append(candidate)
    return centres


def make_example_pair(seed: int = 0, lesion_count: int = 4) -> ExamplePair:
    """Build the example pair (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    baseline = flair_like(seed)
    white = template.mni_white_matter().array
    grid_index = np.indices(baseline.shape).reshape(3, -1).T
    lesions_mni = np.zeros(baseline.shape, dtype=np.float32)
    radii_mm = rng.uniform(2.5, 5.0, size=lesion_count)
    for centre, radius in zip(_lesion_centres(white, lesion_count, rng), radii_mm, strict=True):
        distance = np.linalg.norm(grid_index - centre, axis=1).reshape(baseline.shape)
        lesions_mni = np.maximum(lesions_mni, np.clip(radius + 0.5 - distance, 0, 1))
    followup_mni = baseline.array * (1 - lesions_mni) + 1300 * lesions_mni

    transform = registration.transform_from_matrix(np.eye(4))
    transform.SetRotation(*EXAMPLE_ROTATION_RAD)
    transform.SetTranslation(EXAMPLE_TRANSLATION_MM)
    # The follow-up's grid: the MNI grid moved by the transform, with 3 mm slices.
    followup_grid_affine = baseline.affine.copy()
    followup_grid_affine[:3, 2] *= 3.0
    shape = (baseline.shape[0], baseline.shape[1], int(np.ceil(baseline.shape[2] / 3)))
    moved = registration.invert(transform)
    grid = Volume(np.zeros(shape, np.float32), _moved_affine(followup_grid_affine, moved))
    # A follow-up grid point p is the baseline (MNI) point transform(p).
    followup = registration.resample(baseline.with_array(followup_mni), grid, transform, "linear")
    followup_noisy = followup.array + rng.normal(0, 15, shape).astype(np.float32)
    followup_noisy[followup.array <= 0] = 0
    lesions = registration.resample(baseline.with_array(lesions_mni), grid, transform, "linear")
    return ExamplePair(
        baseline=baseline,
        followup=grid.with_array(np.clip(followup_noisy, 0, None).astype(np.float32)),
        new_lesions=grid.with_array((lesions.array >= 0.5).astype(np.uint8)),
        baseline_to_followup=transform,
    )


def _moved_affine(affine: np.ndarray, moving: object) -> np.ndarray:
    """The voxel-to-RAS affine of a grid carried by a rigid ITK (LPS) transform."""
    lps = registration.rigid_matrix(moving)  # type: ignore[arg-type]
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    return flip @ lps @ flip @ affine


def write_example_pair(folder: str | Path, seed: int = 0) -> dict[str, str]:
    """Write the example pair and its truth into ``folder``; return the file paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pair = make_example_pair(seed)
    paths = {
        "baseline": folder / "baseline.nii.gz",
        "followup": folder / "followup.nii.gz",
        "true_new_lesions": folder / "true_new_lesions.nii.gz",
    }
    write_volume(pair.baseline, paths["baseline"], np.float32)
    write_volume(pair.followup, paths["followup"], np.float32)
    write_volume(pair.new_lesions, paths["true_new_lesions"], np.uint8)
    _, count = ndimage.label(pair.new_lesions.array)
    truth = {
        "new_lesion_count": int(count),
        "new_lesion_volume_mm3": float(
            pair.new_lesions.array.sum() * pair.new_lesions.voxel_volume_mm3
        ),
        "baseline_to_followup_rotation_rad": list(EXAMPLE_ROTATION_RAD),
        "baseline_to_followup_translation_mm_lps": list(EXAMPLE_TRANSLATION_MM),
        "seed": seed,
    }
    write_json_atomically(folder / "truth.json", truth)
    return {name: str(path) for name, path in paths.items()}


def write_example_bids(
    folder: str | Path, subjects: int = 3, seeds: Sequence[int] | None = None
) -> Path:
    """Example pairs (seeds 0..n-1, or ``seeds``: one subject each) as a BIDS dataset with
    new-lesion masks in derivatives."""
    folder = Path(folder)
    for number, seed in enumerate(range(subjects) if seeds is None else seeds, start=1):
        subject = f"sub-{number:02d}"
        pair = write_example_pair(folder / "sourcedata" / subject, seed=seed)
        for session, key in (("ses-01", "baseline"), ("ses-02", "followup")):
            target = folder / subject / session / "anat" / f"{subject}_{session}_FLAIR.nii.gz"
            target.parent.mkdir(parents=True, exist_ok=True)
            Path(pair[key]).replace(target)
        mask = folder / "derivatives" / "truth" / subject / "ses-02" / "anat"
        mask.mkdir(parents=True, exist_ok=True)
        Path(pair["true_new_lesions"]).replace(
            mask / f"{subject}_ses-02_desc-newlesions_mask.nii.gz"
        )
    return folder


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "example")
    written = write_example_pair(target)
    print("\n".join(f"{name}: {path}" for name, path in written.items()))
