"""An example FLAIR pair built only from data installed with the packages (no ../shared needed).

Anatomy: nilearn's MNI152 (ICBM 2009) tissue maps, turned into a FLAIR-like contrast (grey matter
a little brighter than white matter, CSF dark). Follow-up: the same head moved by a known small
rigid transform, resampled onto 1 x 1 x 3 mm slices, with its own noise and a few new hyperintense
lesions in the white matter. The true lesions are written beside the pair, so that a run of the
tool on the example can be checked against them.

Run ``python -m msnewlesions.example DIR`` to write ``baseline.nii.gz``, ``followup.nii.gz``,
``true_new_lesions.nii.gz`` (on the follow-up's grid) and ``truth.json``; ``python -m
msnewlesions.example --bids DIR`` writes the example cohort, a BIDS dataset of three subjects.
"""

from __future__ import annotations

import shutil
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


def _lesion_centres(
    white: np.ndarray, count: int, rng: np.random.Generator, taken: Sequence[np.ndarray] = ()
) -> list[np.ndarray]:
    deep_white = ndimage.binary_erosion(white > 0.9, iterations=4)
    candidates = np.argwhere(deep_white)
    centres: list[np.ndarray] = []
    while len(centres) < count:
        candidate = candidates[rng.integers(len(candidates))]
        if all(np.linalg.norm(candidate - c) > 20 for c in [*taken, *centres]):
            centres.append(candidate)
    return centres


def make_example_pair(seed: int = 0, lesion_count: int = 4) -> ExamplePair:
    """Build the example pair (deterministic for a seed)."""
    return make_example_visits(seed, (lesion_count,))[0]


def make_example_visits(seed: int = 0, lesion_counts: Sequence[int] = (4,)) -> list[ExamplePair]:
    """A baseline and one follow-up per entry of ``lesion_counts``, each with that many new
    lesions on top of the earlier ones, and its own head position (the first is the example
    pair's). Pair ``k``'s ``new_lesions`` are those new since the visit before."""
    rng = np.random.default_rng(seed)
    baseline = flair_like(seed)
    white = template.mni_white_matter().array
    grid_index = np.indices(baseline.shape).reshape(3, -1).T
    earlier = np.zeros(baseline.shape, dtype=np.float32)
    taken: list[np.ndarray] = []
    pairs = []
    for visit, lesion_count in enumerate(lesion_counts):
        lesions_mni = np.zeros(baseline.shape, dtype=np.float32)
        radii_mm = rng.uniform(2.5, 5.0, size=lesion_count)
        centres = _lesion_centres(white, lesion_count, rng, taken)
        taken += centres
        for centre, radius in zip(centres, radii_mm, strict=True):
            distance = np.linalg.norm(grid_index - centre, axis=1).reshape(baseline.shape)
            lesions_mni = np.maximum(lesions_mni, np.clip(radius + 0.5 - distance, 0, 1))
        every = np.maximum(earlier, lesions_mni)
        followup_mni = baseline.array * (1 - every) + 1300 * every
        earlier = every

        transform = registration.transform_from_matrix(np.eye(4))
        # Later visits: the head elsewhere (half the first move, the other way).
        scale = 1.0 if visit == 0 else -0.5 * visit
        transform.SetRotation(*(scale * r for r in EXAMPLE_ROTATION_RAD))
        transform.SetTranslation(tuple(scale * t for t in EXAMPLE_TRANSLATION_MM))
        # The follow-up's grid: the MNI grid moved by the transform, with 3 mm slices.
        followup_grid_affine = baseline.affine.copy()
        followup_grid_affine[:3, 2] *= 3.0
        shape = (baseline.shape[0], baseline.shape[1], int(np.ceil(baseline.shape[2] / 3)))
        moved = registration.invert(transform)
        grid = Volume(np.zeros(shape, np.float32), _moved_affine(followup_grid_affine, moved))
        # A follow-up grid point p is the baseline (MNI) point transform(p).
        followup = registration.resample(
            baseline.with_array(followup_mni), grid, transform, "linear"
        )
        followup_noisy = followup.array + rng.normal(0, 15, shape).astype(np.float32)
        followup_noisy[followup.array <= 0] = 0
        lesions = registration.resample(baseline.with_array(lesions_mni), grid, transform, "linear")
        pairs.append(
            ExamplePair(
                baseline=baseline,
                followup=grid.with_array(np.clip(followup_noisy, 0, None).astype(np.float32)),
                new_lesions=grid.with_array((lesions.array >= 0.5).astype(np.uint8)),
                baseline_to_followup=transform,
            )
        )
    return pairs


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
    new-lesion masks in derivatives. A seed given twice is made once and its files copied."""
    folder = Path(folder)
    written: dict[int, tuple[str, dict[str, Path]]] = {}  # seed -> (subject, its files)
    for number, seed in enumerate(range(subjects) if seeds is None else seeds, start=1):
        subject = f"sub-{number:02d}"
        targets = {
            key: folder / subject / session / "anat" / f"{subject}_{session}_FLAIR.nii.gz"
            for session, key in (("ses-01", "baseline"), ("ses-02", "followup"))
        }
        targets["true_new_lesions"] = (
            folder / "derivatives" / "truth" / subject / "ses-02" / "anat"
            / f"{subject}_ses-02_desc-newlesions_mask.nii.gz"
        )  # fmt: skip
        for target in targets.values():
            target.parent.mkdir(parents=True, exist_ok=True)
        if seed in written:
            earlier, files = written[seed]
            shutil.copytree(folder / "sourcedata" / earlier, folder / "sourcedata" / subject)
            for key, target in targets.items():
                shutil.copyfile(files[key], target)
        else:
            pair = write_example_pair(folder / "sourcedata" / subject, seed=seed)
            for key, target in targets.items():
                Path(pair[key]).replace(target)
            written[seed] = (subject, targets)
    return folder


#: The example cohort: subject -> (seed, new lesions at each follow-up). sub-01 has three visits.
EXAMPLE_COHORT = {"01": (0, (4, 2)), "02": (1, (3,)), "03": (2, (0,))}
EXAMPLE_DATES = ("2024-01-15T09:30:00", "2024-07-22T10:05:00", "2025-01-20T08:45:00")


def write_example_cohort(folder: str | Path) -> Path:
    """The example as a BIDS dataset of three subjects: ``sub-01`` with three sessions (4, then
    2 more new lesions), ``sub-02`` with two (3 new lesions), ``sub-03`` with two and no new
    lesion; ``sessions.tsv`` with acquisition times, and each follow-up's true new lesions (since
    the session before) in ``derivatives/truth``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomically(
        folder / "dataset_description.json",
        {"Name": "msnewlesions example cohort", "BIDSVersion": "1.10.0", "DatasetType": "raw"},
    )
    participants = ["participant_id"]
    for label, (seed, counts) in EXAMPLE_COHORT.items():
        subject = f"sub-{label}"
        participants.append(subject)
        visits = make_example_visits(seed, counts)
        scans = [visits[0].baseline] + [visit.followup for visit in visits]
        rows = ["session_id\tacq_time"]
        for number, scan in enumerate(scans, start=1):
            session = f"ses-{number:02d}"
            target = folder / subject / session / "anat" / f"{subject}_{session}_FLAIR.nii.gz"
            target.parent.mkdir(parents=True, exist_ok=True)
            write_volume(scan, target, np.float32)
            rows.append(f"{session}\t{EXAMPLE_DATES[number - 1]}")
            if number > 1:
                truth = folder / "derivatives" / "truth" / subject / session / "anat"
                truth.mkdir(parents=True, exist_ok=True)
                mask = visits[number - 2].new_lesions
                write_volume(mask, truth / f"{subject}_{session}_desc-newlesions_mask.nii.gz")
        (folder / subject / f"{subject}_sessions.tsv").write_text("\n".join(rows) + "\n")
    (folder / "participants.tsv").write_text("\n".join(participants) + "\n")
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m msnewlesions.example DIR``: the example pair; ``--bids DIR``: the cohort."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "--bids":
        target = Path(args[1] if len(args) > 1 else "example_bids")
        print(f"example cohort (BIDS): {write_example_cohort(target)}")
        return 0
    target = Path(args[0] if args else "example")
    written = write_example_pair(target)
    print("\n".join(f"{name}: {path}" for name, path in written.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
