"""Rigid (6-DOF) registration, transform composition and resampling, with SimpleITK.

Convention (ITK's, used by ANTs and ITK-SNAP too): a transform called ``X_to_Y`` maps a *point of
space Y* to the *point of image X*, so ``SimpleITK.Resample(X, Y_grid, X_to_Y)`` brings X into Y.
The registration of a moving image onto a fixed image therefore returns ``moving_to_fixed``.

Composition follows the same convention: ``compose(a_to_b, b_to_c)`` is ``a_to_c`` and maps a point
``p`` of C to ``a_to_b(b_to_c(p))``. It is computed as one matrix so that the result is a single
rigid transform that every tool reads, with no CompositeTransform ordering to get wrong.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from msnewlesions.io import RAS_TO_LPS, Volume

logger = logging.getLogger(__name__)

#: Seed for the metric's random sampling: results are repeatable run to run.
SAMPLING_SEED = 20240501
#: The metric is summed by one thread. With more, ITK adds the threads' partial sums in whatever
#: order they finish, and the optimizer can take another path: measured on patient01's baseline
#: against the template, two threads gave a different transform on each of 6 runs (up to 2e-5
#: mm), and one segment run of that pair a transform 0.09 degree away, enough to change which
#: of its small marks pass the threshold (4 or 6 marks). One thread: identical on every run, and
#: this registration takes 5.0 s instead of 2.6 s on the 2-core machine.
REGISTRATION_THREADS = 1


@dataclass(frozen=True)
class RigidSettings:
    """One multi-resolution rigid registration: levels, metric and optimizer settings."""

    shrink_factors: tuple[int, ...] = (8, 4)
    smoothing_sigmas_mm: tuple[float, ...] = (4.0, 2.0)
    sampling_fraction: float = 0.2
    histogram_bins: int = 32
    max_iterations: int = 200
    min_step: float = 1e-4
    #: Where the metric's derivative takes its image gradients. ITK's default (True): gradient
    #: images that a recursive Gaussian filter computes once per level. False: computed where the
    #: metric samples (ANTs' choice: antsRegistration turns both filters off). Measured on the 48
    #: native synthetic pairs of benchmarks/registration.py --native (seed 2026; 31 of them two
    #: 2-D visits with 3-6 mm slices at different head poses; poses known): with the filter the
    #: refinement inside the brain ended 1.16 mm off on average (median 0.52, 12 pairs over 1 mm,
    #: up to about 10), worse than the head stage it started from (0.35 mm); it climbed away from
    #: the optimum of its own metric (Mattes MI -0.53 -> -0.02 on the worst pair, and as far
    #: when started from the true transform). Without it: 0.08 mm (median 0.06, at most 0.23).
    image_gradient_filter: bool = False


#: Whole-head alignment: coarse levels only; the brain refinement gives the precision. It keeps
#: ITK's gradient filter: on the 48 native pairs of benchmarks/registration.py --native the head
#: stage erred at most 0.77 mm with it, and without it up to 8.7 mm (a sagittal against an axial
#: 2-D scan; 3 of 42 pairs over 1 mm, median 0.27 against 0.37). The refinement recovered either
#: way (0.08 mm), but the pair's brain mask is drawn on the head stage's alignment.
HEAD_SETTINGS = RigidSettings(image_gradient_filter=True)
#: Brain-only refinement at the native resolution, inside both scans' brain masks eroded by
#: BRAIN_EROSION_MM (see :func:`refine_in_brain` for the measurements that chose it).
BRAIN_SETTINGS = RigidSettings(
    shrink_factors=(2, 1),
    smoothing_sigmas_mm=(1.0, 0.0),
    sampling_fraction=0.25,
    histogram_bins=32,
    max_iterations=200,
    min_step=1e-4,
)


#: The refinement ignores the outer 4 mm of the brain mask: there the mask's own edge, CSF and
#: extra-cerebral tissue (which differ between protocols) dominate the metric.
BRAIN_EROSION_MM = 4.0


def erode_mm(mask: sitk.Image, radius_mm: float) -> sitk.Image:
    """Binary erosion by about ``radius_mm`` along each axis (at least one voxel)."""
    radius = [max(round(radius_mm / spacing), 1) for spacing in mask.GetSpacing()]
    return sitk.BinaryErode(sitk.Cast(mask > 0, sitk.sitkUInt8), radius)


@dataclass(frozen=True)
class RegistrationResult:
    transform: sitk.Euler3DTransform
    metric: float
    iterations: int


def center_of_mass_initializer(fixed: sitk.Image, moving: sitk.Image) -> sitk.Euler3DTransform:
    """Identity rotation with the intensity centres of mass on top of each other.

    The rotation starts from the scanner's own axes (headers give the orientation), which is the
    "orientation to MNI" step: every image is handled in physical space, whatever its storage order.
    """
    transform = sitk.CenteredTransformInitializer(
        fixed,
        moving,
        sitk.Euler3DTransform(),
        sitk.CenteredTransformInitializerFilter.MOMENTS,
    )
    return sitk.Euler3DTransform(transform)


def register_rigid(
    fixed: sitk.Image,
    moving: sitk.Image,
    settings: RigidSettings,
    initial: sitk.Euler3DTransform | None = None,
    fixed_mask: sitk.Image | None = None,
    moving_mask: sitk.Image | None = None,
) -> RegistrationResult:
    """Mattes mutual information rigid registration; returns ``moving_to_fixed``.

    The metric is sampled at the fixed image's voxels (inside ``fixed_mask``) and reads the moving
    image by interpolation (only where it falls inside ``moving_mask``)."""
    fixed = sitk.Cast(fixed, sitk.sitkFloat32)
    moving = sitk.Cast(moving, sitk.sitkFloat32)
    transform = sitk.Euler3DTransform(
        initial if initial is not None else center_of_mass_initializer(fixed, moving)
    )
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(settings.histogram_bins)
    if settings.sampling_fraction < 1.0:
        method.SetMetricSamplingStrategy(method.RANDOM)
        method.SetMetricSamplingPercentage(settings.sampling_fraction, SAMPLING_SEED)
    if fixed_mask is not None:
        method.SetMetricFixedMask(sitk.Cast(fixed_mask > 0, sitk.sitkUInt8))
    if moving_mask is not None:
        method.SetMetricMovingMask(sitk.Cast(moving_mask > 0, sitk.sitkUInt8))
    method.SetInterpolator(sitk.sitkLinear)
    method.SetMetricUseFixedImageGradientFilter(settings.image_gradient_filter)
    method.SetMetricUseMovingImageGradientFilter(settings.image_gradient_filter)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0,
        minStep=settings.min_step,
        numberOfIterations=settings.max_iterations,
        relaxationFactor=0.6,
        gradientMagnitudeTolerance=1e-8,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(settings.shrink_factors))
    method.SetSmoothingSigmasPerLevel(list(settings.smoothing_sigmas_mm))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(transform, inPlace=True)
    # The metric takes ITK's global default thread count (the method's own setting does not reach
    # it): set for this call, restored after.
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(REGISTRATION_THREADS)
    try:
        method.Execute(fixed, moving)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    return RegistrationResult(
        transform=transform,
        metric=float(method.GetMetricValue()),
        iterations=int(method.GetOptimizerIteration()),
    )


def slice_sampling(image: sitk.Image) -> tuple[float, float]:
    """(largest voxel side, voxel volume) in mm: which of two scans samples the head coarser."""
    spacing = image.GetSpacing()
    return (round(max(spacing), 2), round(float(np.prod(spacing)), 2))


def refine_in_brain(
    baseline: sitk.Image,
    followup: sitk.Image,
    baseline_brain: sitk.Image,
    followup_brain: sitk.Image,
    initial: sitk.Transform,
    settings: RigidSettings = BRAIN_SETTINGS,
) -> sitk.Euler3DTransform:
    """``followup_to_baseline`` refined inside both visits' brains (masks eroded by
    :data:`BRAIN_EROSION_MM`), from ``initial`` (the head registration).

    The visits are not ranked by time but by how they sample the head: the scan with the thicker
    slices (then the larger voxels; the baseline when both are alike) is the fixed image, sampled
    at its own voxels, and the other is interpolated. Interpolating across 3-5 mm slices is what
    biased the fit: on synthetic protocol changes with a known motion (benchmarks/registration.py,
    3-D vs 2-D FLAIR) the follow-up-onto-baseline fit erred 0.16-1.98 mm where this one errs
    0.01-0.02 mm; over all 6 cases 0.69 -> 0.16 mm mean. So whichever visit is called the
    baseline, the same fit is made (swapping them gives the inverse transform). Both masks:
    real pairs patient01 0.287 -> 0.262 mm (floor 0.114), patient03 0.477 -> 0.453 mm (floor
    0.360). Measured and not kept: the matrix mean of both directions (real 0.396 / 0.510 mm,
    synthetic 0.53 mm mean: it averages in the worse direction), B-spline interpolation,
    every voxel sampled, a third level, blurring the finer scan to the other's slice profile
    (0.253 / 0.456 real, 0.17 synthetic: no clear gain for its cost). The metric's image
    gradients computed where it samples instead of by ITK's gradient filter
    (:attr:`RigidSettings.image_gradient_filter`, 2026-12-03): real pairs 0.260 -> 0.139 mm and
    0.452 -> 0.429 mm; two 2-D visits with 3-6 mm slices, 0.72 -> 0.07 mm median (31 pairs).
    """
    baseline_mask = erode_mm(baseline_brain, BRAIN_EROSION_MM)
    followup_mask = erode_mm(followup_brain, BRAIN_EROSION_MM)
    if slice_sampling(followup) > slice_sampling(baseline):
        baseline_to_followup = register_rigid(
            followup, baseline, settings, invert(initial), followup_mask, baseline_mask
        ).transform
        return invert(baseline_to_followup)
    return register_rigid(
        baseline, followup, settings, sitk.Euler3DTransform(initial), baseline_mask, followup_mask
    ).transform


def rigid_matrix(transform: sitk.Transform) -> np.ndarray:
    """The 4x4 homogeneous LPS matrix of an affine-family ITK transform.

    Read off by mapping the origin and the three unit points, so that it works for any linear
    transform: Euler, versor, affine, generic ones read from file, and composites of them.
    """
    origin = np.array(transform.TransformPoint((0.0, 0.0, 0.0)))
    homogeneous = np.eye(4)
    for axis in range(3):
        unit = [0.0, 0.0, 0.0]
        unit[axis] = 1.0
        homogeneous[:3, axis] = np.array(transform.TransformPoint(tuple(unit))) - origin
    homogeneous[:3, 3] = origin
    return homogeneous


def transform_from_matrix(homogeneous: np.ndarray) -> sitk.Euler3DTransform:
    """An Euler3DTransform from a 4x4 LPS rigid matrix (rotation re-orthonormalized)."""
    u, _, vt = np.linalg.svd(homogeneous[:3, :3])
    rotation = u @ vt
    transform = sitk.Euler3DTransform()
    transform.SetMatrix(tuple(float(v) for v in rotation.ravel()))
    transform.SetTranslation(tuple(float(v) for v in homogeneous[:3, 3]))
    return transform


def compose(a_to_b: sitk.Transform, b_to_c: sitk.Transform) -> sitk.Euler3DTransform:
    """``a_to_c``: maps a point ``p`` of C to ``a_to_b(b_to_c(p))`` (a point of A)."""
    return transform_from_matrix(rigid_matrix(a_to_b) @ rigid_matrix(b_to_c))


def compose_exact(a_to_b: sitk.Transform, b_to_c: sitk.Transform) -> sitk.CompositeTransform:
    """:func:`compose` for any transforms (affine ones too), kept exact as an ITK composite."""
    composite = sitk.CompositeTransform(3)
    # SimpleITK applies the transform added LAST first: b_to_c, then a_to_b.
    composite.AddTransform(a_to_b)
    composite.AddTransform(b_to_c)
    return composite


def invert(a_to_b: sitk.Transform) -> sitk.Euler3DTransform:
    """``b_to_a``."""
    return transform_from_matrix(np.linalg.inv(rigid_matrix(a_to_b)))


def transform_points_ras(transform: sitk.Transform, points_ras: np.ndarray) -> np.ndarray:
    """Apply an ITK (LPS) transform to RAS+ points in mm (N x 3); returns RAS+ points."""
    homogeneous = rigid_matrix(transform)
    points_lps = np.atleast_2d(points_ras) @ RAS_TO_LPS.T
    mapped = points_lps @ homogeneous[:3, :3].T + homogeneous[:3, 3]
    return mapped @ RAS_TO_LPS.T


def resample(
    image: Volume,
    grid: Volume,
    image_to_grid: sitk.Transform,
    interpolation: str = "linear",
    default_value: float = 0.0,
) -> Volume:
    """Bring ``image`` onto ``grid`` through ``image_to_grid``, which maps grid points to the image.

    ``interpolation`` is ``"linear"``, ``"bspline"`` (cubic) or ``"nearest"`` (labels). The result
    has the grid's shape and affine and the image's values.
    """
    interpolators = {
        "linear": sitk.sitkLinear,
        "bspline": sitk.sitkBSpline,
        "nearest": sitk.sitkNearestNeighbor,
    }
    source = image.to_sitk()
    if interpolation != "nearest":
        source = sitk.Cast(source, sitk.sitkFloat32)
    reference = sitk.Image(list(grid.shape), sitk.sitkUInt8)
    reference.SetSpacing(tuple(float(s) for s in grid.spacing))
    reference.SetOrigin(tuple(float(v) for v in RAS_TO_LPS @ grid.origin))
    reference.SetDirection(tuple(float(v) for v in (RAS_TO_LPS @ grid.direction).ravel()))
    resampled = sitk.Resample(
        source, reference, image_to_grid, interpolators[interpolation], default_value
    )
    array = sitk.GetArrayFromImage(resampled).transpose(2, 1, 0)
    return Volume(np.ascontiguousarray(array), grid.affine)


def write_transform(transform: sitk.Transform, path: str | Path) -> None:
    sitk.WriteTransform(transform, str(path))


def read_transform(path: str | Path) -> sitk.Euler3DTransform:
    """Read a rigid transform file (any affine-family ITK transform; returned as Euler3D)."""
    transform = sitk.ReadTransform(str(path))
    return transform_from_matrix(rigid_matrix(transform))
