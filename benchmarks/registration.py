"""Follow-up -> baseline registration: the pipeline's and candidate settings, each beside its floor.

Two kinds of cases:

* **real pairs** (open_ms_data, ../shared): error of the follow-up -> baseline mapping against the
  database's reference mapping, mean and 95th percentile over the expert brain (mm), beside the
  floor (the best rigid fit to that reference mapping: no rigid registration does better);
* **synthetic protocol changes** (``--synthetic N``): a real brain-extracted 3D FLAIR
  (cross_sectional/MNI) seen by a second protocol through a known rigid motion: other in-plane
  voxels (0.5-1 mm), thick slices (3-5 mm, Gaussian slice profile) along a random axis, a
  monotone intensity remapping on the scan's quantiles (tissue contrasts change, not only a
  gamma), a smooth bias field, Rician noise and three new bright blobs; every other case the
  baseline is itself a 2D re-acquisition of another protocol. The floor is 0; the error is the
  mean over the brain.

* **native synthetic pairs** (``--native N``): N pairs per hold-out scan (patients 01 and 03), each
  visit acquired on a scanner's grid at a head pose of its own, as ``synthesize --realistic``
  draws them for training (mostly 2-D, 3-5.5 mm slices, 0.5-1 mm in plane, tilts of up to about
  20 degrees between the visits; brain-extracted scans). The poses are known: the error of the
  follow-up -> baseline mapping over the baseline's brain, after the head stage and after the
  refinement as the pipeline runs it and with ITK's gradient filter in its metric (the pipeline
  until 2026-12-03).

Every candidate starts from the pipeline's coarse head registration and refines inside the brain
mask (eroded by 4 mm), as the pipeline does; only the refinement differs.

    python benchmarks/registration.py [--data ../shared/data/open_ms_data] [--synthetic 2]
        [--native 12 [--seed 2026] [--anatomy-cache DIR]] [--skip-real]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from msnewlesions import template
from msnewlesions.example import _moved_affine
from msnewlesions.io import Volume, read_volume
from msnewlesions.preprocessing import registration
from msnewlesions.preprocessing.pipeline import bias_corrected_for_registration
from msnewlesions.preprocessing.skullstrip import pair_brain_mask
from msnewlesions.validation import (
    mapping_error_mm,
    open_ms_pairs,
    reference_correspondences,
    rigid_fit_residuals_mm,
)

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/open_ms_data"

#: (baseline, follow-up, baseline mask, follow-up mask, head transform) -> followup_to_baseline
Refinement = Callable[[Volume, Volume, Volume, Volume, sitk.Transform], sitk.Transform]


def refine(
    baseline: Volume,
    followup: Volume,
    baseline_mask: Volume,
    initial: sitk.Transform,
    settings: registration.RigidSettings = registration.BRAIN_SETTINGS,
) -> sitk.Transform:
    fixed_mask = registration.erode_mm(baseline_mask.to_sitk(), registration.BRAIN_EROSION_MM)
    return registration.register_rigid(
        baseline.to_sitk(), followup.to_sitk(), settings, initial, fixed_mask
    ).transform


RAW_SETTINGS = replace(registration.BRAIN_SETTINGS, min_step=1e-5)
FULL_SAMPLING = registration.RigidSettings(
    shrink_factors=(2, 1), smoothing_sigmas_mm=(1.0, 0.0), sampling_fraction=1.0, min_step=1e-5
)


def raw_scans(b: Volume, f: Volume, mb: Volume, mf: Volume, head: sitk.Transform) -> sitk.Transform:
    """The refinement on the scans as they are (the pipeline until 2026-12-01)."""
    return refine(b, f, mb, head, RAW_SETTINGS)


def followup_onto_baseline(
    b: Volume, f: Volume, mb: Volume, mf: Volume, head: sitk.Transform
) -> sitk.Transform:
    """Bias-corrected copies, the follow-up always the moving image (the pipeline of 156c627)."""
    fixed_mask = registration.erode_mm(mb.to_sitk(), registration.BRAIN_EROSION_MM)
    return registration.register_rigid(
        bias_corrected_for_registration(b, mb),
        bias_corrected_for_registration(f, mf),
        registration.BRAIN_SETTINGS,
        head,
        fixed_mask,
    ).transform


def pipeline(
    b: Volume,
    f: Volume,
    mb: Volume,
    mf: Volume,
    head: sitk.Transform,
    settings: registration.RigidSettings = registration.BRAIN_SETTINGS,
) -> sitk.Transform:
    """The pipeline's refinement: the thicker-sliced scan fixed, both brain masks."""
    return registration.refine_in_brain(
        bias_corrected_for_registration(b, mb),
        bias_corrected_for_registration(f, mf),
        mb.to_sitk(),
        mf.to_sitk(),
        head,
        settings,
    )


def full_sampling(
    b: Volume, f: Volume, mb: Volume, mf: Volume, head: sitk.Transform
) -> sitk.Transform:
    return refine(b, f, mb, head, FULL_SAMPLING)


def with_gradient_filter(
    b: Volume, f: Volume, mb: Volume, mf: Volume, head: sitk.Transform
) -> sitk.Transform:
    """The pipeline's refinement with ITK's gradient filter in the metric (until 2026-12-03)."""
    return pipeline(b, f, mb, mf, head, GRADIENT_FILTER_BRAIN)


GRADIENT_FILTER_BRAIN = replace(registration.BRAIN_SETTINGS, image_gradient_filter=True)

CANDIDATES: dict[str, Refinement] = {
    "scans as they are (MI, 25 %)": raw_scans,
    "as they are, MI on every voxel": full_sampling,
    "bias-corrected, follow-up moving": followup_onto_baseline,
    "pipeline, ITK's gradient filter": with_gradient_filter,
    "pipeline (thicker slices fixed)": pipeline,
}


def head_registration(
    baseline: Volume,
    followup: Volume,
    settings: registration.RigidSettings = registration.HEAD_SETTINGS,
) -> sitk.Transform:
    return registration.register_rigid(baseline.to_sitk(), followup.to_sitk(), settings).transform


def head_stage(
    baseline: Volume, followup: Volume, skull_stripped: bool | None = None
) -> tuple[sitk.Transform, tuple[Volume, Volume]]:
    """The pipeline's head registration of the follow-up and the pair's brain mask on each scan
    (drawn in MNI space as the pipeline draws it), where every refinement starts."""
    mni = template.mni_t1()
    head = head_registration(baseline, followup)
    b2m = registration.register_rigid(
        mni.to_sitk(), baseline.to_sitk(), registration.HEAD_SETTINGS
    ).transform
    f2m = registration.compose(head, b2m)
    brain = pair_brain_mask(
        registration.resample(baseline, mni, b2m),
        registration.resample(followup, mni, f2m),
        skull_stripped,
    ).mask
    on_baseline, on_followup = (
        registration.resample(brain, scan, registration.invert(to_mni), "nearest")
        for scan, to_mni in ((baseline, b2m), (followup, f2m))
    )
    return head, (on_baseline, on_followup)


def real_pairs(data: Path) -> None:
    for pair in open_ms_pairs(data):
        baseline, followup = read_volume(pair.baseline), read_volume(pair.followup)
        b2c = sitk.ReadTransform(str(pair.baseline_to_common))
        f2c = sitk.ReadTransform(str(pair.followup_to_common))
        brain_common = read_volume(pair.brain_mask)
        floor = rigid_fit_residuals_mm(*reference_correspondences(b2c, f2c, brain_common))
        head, masks = head_stage(baseline, followup)
        print(
            f"\n{pair.patient}: floor {floor.mean():.3f} / {np.percentile(floor, 95):.3f} mm "
            "(mean / p95)"
        )
        errors = mapping_error_mm(head, b2c, f2c, brain_common)
        print(f"  {'head stage':<32} {errors.mean():.3f} / {np.percentile(errors, 95):.3f} mm")
        for name, candidate in CANDIDATES.items():
            start = time.perf_counter()
            transform = candidate(baseline, followup, masks[0], masks[1], head)
            seconds = time.perf_counter() - start
            errors = mapping_error_mm(transform, b2c, f2c, brain_common)
            print(
                f"  {name:<32} {errors.mean():.3f} / {np.percentile(errors, 95):.3f} mm"
                f"  ({seconds:.1f} s)"
            )


def rotation(degrees: np.ndarray, translation: np.ndarray) -> sitk.Euler3DTransform:
    transform = sitk.Euler3DTransform()
    transform.SetRotation(*[float(a) for a in np.deg2rad(degrees)])
    transform.SetTranslation(tuple(float(t) for t in translation))
    return transform


def reacquire(
    source: Volume,
    source_to_new: sitk.Transform,
    spacing: np.ndarray,
    slice_axis: int,
    rng: np.random.Generator,
    blobs: int,
) -> Volume:
    """``source`` seen by another protocol; a new grid point p shows ``source_to_new(p)``."""
    array = source.array.astype(np.float32)
    inside = array > 0
    indices = np.argwhere(inside)
    for _ in range(blobs):
        centre = indices[rng.integers(len(indices))]
        radius = rng.uniform(2.0, 4.0) / source.spacing
        offsets = (np.indices(array.shape) - centre[:, None, None, None]) / radius[
            :, None, None, None
        ]
        array = np.where(inside & ((offsets**2).sum(0) <= 1), array * 1.6, array)
    levels = np.percentile(array[inside], np.linspace(0, 100, 7))
    steps = np.diff(levels) * rng.uniform(0.6, 1.5, len(levels) - 1)
    remapped = np.interp(array, levels, np.concatenate([[levels[0]], levels[0] + np.cumsum(steps)]))
    array = np.where(inside, remapped, 0).astype(np.float32)
    fwhm = np.sqrt(np.maximum(spacing**2 - source.spacing**2, 0))
    array = ndimage.gaussian_filter(array, fwhm / 2.355 / source.spacing)
    shape = tuple(int(np.ceil(e)) for e in np.array(source.shape) * source.spacing / spacing)
    affine = source.affine.copy()
    affine[:3, :3] = source.direction @ np.diag(spacing)
    centre = source.index_to_world((np.array(source.shape) - 1) / 2)[0]
    affine[:3, 3] = centre - affine[:3, :3] @ ((np.array(shape) - 1) / 2)
    grid = Volume(
        np.zeros(shape, np.float32), _moved_affine(affine, registration.invert(source_to_new))
    )
    seen = registration.resample(source.with_array(array), grid, source_to_new, "bspline")
    out = np.maximum(seen.array, 0)
    x = np.linspace(-1, 1, shape[0])[:, None, None]
    y = np.linspace(-1, 1, shape[1])[None, :, None]
    out = out * np.exp(0.15 * (rng.normal() * x + rng.normal() * y))
    noise = 0.03 * float(np.percentile(out[out > 0], 99))
    out = np.hypot(out + rng.normal(0, noise, shape), rng.normal(0, noise, shape))
    out[seen.array <= 0] = 0
    return grid.with_array(out.astype(np.float32))


def synthetic_cases(
    sources: list[tuple[str, Volume]], per_source: int, seed: int = 0
) -> Iterator[tuple[str, Volume, Volume, sitk.Transform, Volume]]:
    """(name, baseline, follow-up, baseline_to_followup truth, baseline brain mask)."""
    rng = np.random.default_rng(seed)
    identity = rotation(np.zeros(3), np.zeros(3))

    def protocol() -> tuple[np.ndarray, int]:
        axis = int(rng.integers(0, 3))
        spacing = np.full(3, rng.uniform(0.5, 1.0))
        spacing[axis] = rng.uniform(3.0, 5.0)
        return spacing, axis

    for name, source in sources:
        brain = source.with_array((source.array > 0).astype(np.uint8))
        for index in range(per_source):
            truth = rotation(rng.uniform(-3, 3, 3), rng.uniform(-5, 5, 3))
            baseline = source
            if index % 2:  # a 2D baseline of another protocol
                baseline = reacquire(source, identity, *protocol(), rng, blobs=0)
            followup = reacquire(source, truth, *protocol(), rng, blobs=3)
            mask = registration.resample(brain, baseline, identity, "nearest")
            yield f"{name}-{index}", baseline, followup, truth, mask


def synthetic(data: Path, per_source: int) -> None:
    root = data / "cross_sectional" / "MNI"
    sources = [
        (flair.parent.name, read_volume(flair))
        for flair in sorted(root.glob("patient*/FLAIR_*.nii.gz"))
    ]
    errors: dict[str, list[float]] = {name: [] for name in ("head", *CANDIDATES)}
    for name, baseline, followup, truth, mask in synthetic_cases(sources, per_source):
        points = mask.index_to_world(np.argwhere(mask.array > 0)[::10])
        true_points = registration.transform_points_ras(registration.invert(truth), points)
        followup_mask = registration.resample(mask, followup, truth, "nearest")
        head = head_registration(baseline, followup)
        found = {"head": head}
        for candidate, refinement in CANDIDATES.items():
            found[candidate] = refinement(baseline, followup, mask, followup_mask, head)
        line = [f"{name} (baseline {np.round(baseline.spacing, 2)}, follow-up "]
        line.append(f"{np.round(followup.spacing, 2)})")
        for candidate, transform in found.items():
            moved = registration.transform_points_ras(transform, points)
            error = float(np.linalg.norm(moved - true_points, axis=1).mean())
            errors[candidate].append(error)
            line.append(f"  {candidate}: {error:.3f}")
        print("".join(line))
    print("\nsynthetic protocol changes, mean error over the brain (mm): mean / max of the cases")
    for candidate, values in errors.items():
        print(f"  {candidate:<32} {np.mean(values):.3f} / {np.max(values):.3f}")


#: The refinements ``--native`` compares, from the same head stage.
NATIVE_REFINEMENTS: dict[str, Refinement] = {
    "pipeline": pipeline,
    "ITK's gradient filter": with_gradient_filter,
}


def native(data: Path, per_scan: int, seed: int, anatomy_cache: Path) -> None:
    from msnewlesions.model import synthesis

    sources, _ = synthesis.open_ms_data_sources(data)
    library = synthesis.change_library(synthesis.open_ms_data_change_masks(data))
    errors: dict[str, list[float]] = {name: [] for name in ("head", *NATIVE_REFINEMENTS)}
    thick_pairs: list[bool] = []
    print("\nnative synthetic pairs: follow-up -> baseline error over the baseline's brain (mm)")
    for index, source in enumerate(sources):
        if source.patient not in synthesis.HOLDOUT_PATIENTS:
            continue
        anatomy = synthesis.prepare_anatomy(source, anatomy_cache)
        for pair_index in range(per_scan):
            rng = synthesis.pair_rng(seed, index, pair_index)
            pair = synthesis.synthesize_pair(
                anatomy, library, rng, synthesis.REALISTIC, native=True
            )
            baseline, followup = pair.baseline_scan, pair.followup_scan
            assert pair.baseline_pose is not None and pair.followup_pose is not None
            acquisitions = [
                pair.info[f"{v}_acquisition"]["native"] for v in ("baseline", "followup")
            ]
            slices = [a["slice_spacing_mm"] for a in acquisitions]
            thick_pairs.append(min(slices) >= 3.0)
            head, (mb, mf) = head_stage(baseline, followup, skull_stripped=True)
            found = {"head": head}
            for name, refinement in NATIVE_REFINEMENTS.items():
                found[name] = refinement(baseline, followup, mb, mf, head)
            # Each pose maps its scan's points to the anatomy's: a baseline point and the
            # follow-up point the registration pairs with it should show the same anatomy.
            points = baseline.index_to_world(np.argwhere(mb.array > 0)[::20])
            truth = registration.transform_points_ras(pair.baseline_pose, points)
            line = [f"{synthesis.case_id(anatomy.name, pair_index)} (slices {slices[0]} / "]
            line.append(f"{slices[1]} mm, axes {[a['slice_axis'] for a in acquisitions]})")
            for name, transform in found.items():
                seen = registration.transform_points_ras(
                    pair.followup_pose, registration.transform_points_ras(transform, points)
                )
                error = float(np.linalg.norm(seen - truth, axis=1).mean())
                errors[name].append(error)
                line.append(f"  {name}: {error:.2f}")
            print("".join(line), flush=True)
    thick = np.array(thick_pairs)
    print(
        f"\n{len(thick)} pairs, {int(thick.sum())} with 3 mm slices or more at both visits: "
        "mean / median / max error (mm), pairs over 1 mm"
    )
    for name, values in errors.items():
        for which, chosen in (("all", np.ones_like(thick)), ("both thick", thick)):
            v = np.array(values)[chosen]
            if len(v):
                print(
                    f"  {name:<22} {which:<11} {v.mean():.2f} / {np.median(v):.2f} / "
                    f"{v.max():.2f}, {int((v > 1).sum())} over 1 mm"
                )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--synthetic", type=int, default=0, help="cases per source scan")
    parser.add_argument("--native", type=int, default=0, help="native pairs per hold-out scan")
    parser.add_argument("--seed", type=int, default=2026, help="the native pairs' seed")
    parser.add_argument(
        "--anatomy-cache",
        type=Path,
        default=Path("benchmark_output/registration/anatomy"),
        help="prepared hold-out anatomy for --native (HD-BET once per scan)",
    )
    parser.add_argument("--skip-real", action="store_true", help="no real pairs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if not open_ms_pairs(args.data):
        print(f"no complete pair under {args.data}; nothing to measure", file=sys.stderr)
        return 1
    if not args.skip_real:
        real_pairs(args.data)
    if args.synthetic:
        synthetic(args.data, args.synthetic)
    if args.native:
        native(args.data, args.native, args.seed, args.anatomy_cache)
    return 0


if __name__ == "__main__":
    sys.exit(main())
