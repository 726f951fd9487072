"""A second acquisition of the same brain: slices, blur, bias, contrast, noise, motion."""

from __future__ import annotations

from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from msnewlesions.io import Volume
from msnewlesions.model.synthesis.settings import SynthesisSettings
from msnewlesions.preprocessing.resolution import reslice


def bias_field(shape: tuple[int, ...], amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative field: exp of a random quadratic polynomial, about +-amplitude."""
    axes = [np.linspace(-1, 1, n, dtype=np.float32) for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    terms = [x, y, z, x * x, y * y, z * z, x * y, x * z, y * z]
    coefficients = rng.normal(0, 1, len(terms))
    coefficients /= np.linalg.norm(coefficients)
    log_field = sum(c * t for c, t in zip(coefficients, terms, strict=True))
    return np.exp(amplitude * log_field).astype(np.float32)


def csf_signal(
    image: np.ndarray, brain: np.ndarray, rng: np.random.Generator, settings: SynthesisSettings
) -> tuple[np.ndarray, float]:
    """Signal a protocol leaves in the CSF: what it adds to ``image``, and its level.

    Each CSF-dark voxel (below ``settings.csf_level`` x white matter, inside ``brain``) gains
    level x darkness x field: the level U(0.25, 1) x ``settings.csf_signal``, the darkness 0 at
    ``csf_level`` and 1 at zero signal, the field a smooth random pattern (Gaussian-filtered
    noise of ``settings.csf_signal_smoothness_mm``, mean about 0.5, clipped to 0..2), so that
    some cisterns and sulci brighten as much as tissue and others stay dark, as inflow and an
    inversion time set for another protocol leave them.
    """
    level = float(rng.uniform(0.25, 1.0)) * settings.csf_signal
    darkness = np.clip(1.0 - image / settings.csf_level, 0.0, 1.0) * brain
    noise = ndimage.gaussian_filter(
        rng.standard_normal(image.shape).astype(np.float32), settings.csf_signal_smoothness_mm
    )
    noise /= max(float(noise.std()), 1e-6)
    field = np.clip(0.5 + 0.5 * noise, 0.0, 2.0)
    return (level * darkness * field).astype(np.float32), level


def acquire(
    image: np.ndarray,
    brain: np.ndarray,
    rng: np.random.Generator,
    settings: SynthesisSettings,
    info: dict[str, Any],
    tissues: np.ndarray | None = None,
    native: bool = False,
) -> np.ndarray:
    """The same brain seen by another acquisition: slices, blur, bias, contrast and noise.

    ``tissues`` (white matter, grey matter, CSF probabilities, stacked on the first axis) turn
    on ``settings.tissue_contrast``: each tissue's signal scaled by its own factor, as another
    protocol's inversion and echo times change the contrast between tissues;
    ``settings.csf_signal_probability`` leaves signal in the CSF (:func:`csf_signal`).
    ``native``: slices and noise are left to :func:`acquire_natively`, which samples the result
    on a scanner's grid.
    """
    out = image.astype(np.float32)
    if tissues is not None and settings.tissue_contrast > 0:
        factors = rng.uniform(-settings.tissue_contrast, settings.tissue_contrast, len(tissues))
        out = out * (1.0 + np.tensordot(factors, tissues, axes=1)).astype(np.float32)
        info["tissue_factors"] = [round(1.0 + float(f), 3) for f in factors]
    # The draw is made only when the setting is on, so that other settings' draws stay the same.
    if settings.csf_signal_probability > 0 and rng.random() < settings.csf_signal_probability:
        added, level = csf_signal(out, brain, rng, settings)
        out = out + added
        info["csf_signal"] = round(level, 3)
    if not native and rng.random() < settings.reslice_probability:
        axis = int(rng.choice(3, p=[0.15, 0.15, 0.7]))
        thickness = float(rng.uniform(*settings.slice_thickness_mm))
        out = reslice(out, axis, thickness)
        info["reslice"] = {"axis": axis, "thickness_mm": round(thickness, 2)}
    blur = float(rng.uniform(*settings.blur_sigma_mm))
    if blur > 0.05:
        out = ndimage.gaussian_filter(out, blur)
    out = out * bias_field(out.shape, settings.bias_amplitude, rng)
    gamma = float(rng.uniform(*settings.gamma_range))
    out = np.power(np.maximum(out, 0), gamma)
    info.update(blur_mm=round(blur, 2), gamma=round(gamma, 3))
    if native:
        return np.where(brain, out, 0).astype(np.float32)
    noise = float(rng.uniform(*settings.noise_range))
    real = out + rng.normal(0, noise, out.shape).astype(np.float32)
    imaginary = rng.normal(0, noise, out.shape).astype(np.float32)
    out = np.sqrt(real * real + imaginary * imaginary)  # magnitude images have Rician noise
    info.update(noise=round(noise, 3))
    return np.where(brain, out, 0).astype(np.float32)


def misalign(
    image: np.ndarray, label: np.ndarray, rng: np.random.Generator, settings: SynthesisSettings
) -> tuple[np.ndarray, np.ndarray, dict]:
    """A small rigid motion about the volume centre (1 mm voxels); the label moves with it."""
    direction = rng.normal(size=3)
    translation = direction / np.linalg.norm(direction) * rng.uniform(0, settings.misalignment_mm)
    angles = np.deg2rad(rng.uniform(-1, 1, 3) * settings.misalignment_degrees)
    rotation = sitk.Euler3DTransform()
    rotation.SetRotation(*[float(a) for a in angles])
    matrix = np.array(rotation.GetMatrix()).reshape(3, 3)
    centre = (np.array(image.shape) - 1) / 2
    offset = centre - matrix @ centre + translation
    moved = ndimage.affine_transform(image, matrix, offset, order=3, mode="constant")
    moved_label = ndimage.affine_transform(label.astype(np.float32), matrix, offset, order=1) > 0.5
    info = {
        "translation_mm": round(float(np.linalg.norm(translation)), 3),
        "rotation_degrees": [round(float(a), 3) for a in np.rad2deg(angles)],
    }
    return moved.astype(np.float32), moved_label.astype(np.uint8), info


#: Sampling along the slice direction before a slice profile is applied (mm).
FINE_SLICE_MM = 0.5


def head_pose(
    rng: np.random.Generator, settings: SynthesisSettings, centre_ras: np.ndarray
) -> sitk.Euler3DTransform:
    """A head position in the scanner: maps a scanner point (LPS) to the MNI point it shows.

    A rotation about the brain's centre, mostly a nod (about the left-right axis) as heads lie
    in a coil, and a shift; the scanner's axes are the acquisition's."""
    pose = sitk.Euler3DTransform()
    centre_lps = (float(-centre_ras[0]), float(-centre_ras[1]), float(centre_ras[2]))
    pose.SetCenter(centre_lps)
    angles = np.deg2rad(rng.uniform(-1, 1, 3) * np.asarray(settings.pose_degrees))
    pose.SetRotation(*[float(a) for a in angles])
    shift = rng.uniform(-1, 1, 3) * settings.pose_mm
    pose.SetTranslation(tuple(float(s) for s in shift))
    return pose


def acquire_natively(
    image: Volume,
    brain: Volume,
    rng: np.random.Generator,
    settings: SynthesisSettings,
    info: dict[str, Any],
) -> tuple[Volume, sitk.Euler3DTransform]:
    """The brain as a scanner records it: on its own grid, at a head pose, through its slices.

    ``image`` (MNI grid, 1 mm, contrast and bias applied, no noise yet) is sampled on a grid of
    the scanner's axes with the head at :func:`head_pose`: in-plane voxels of
    ``settings.in_plane_mm``, slices ``settings.slice_thickness_mm`` thick (Gaussian profile,
    full width at half maximum = the thickness) every thickness + ``settings.slice_gap_mm``,
    along one axis (axial mostly, by ``settings.slice_axis_probabilities``), or a 3-D acquisition
    (``settings.three_d_probability``: 1 mm slices, no gap); then Rician noise, and zero outside
    the brain (the scans stay brain-extracted). Returns the scan and the pose (which maps a
    point of the scan's space to the MNI point it shows).
    """
    from msnewlesions.preprocessing import registration

    inside = np.argwhere(brain.array > 0)
    centre = brain.index_to_world((inside.min(0) + inside.max(0)) / 2)[0]
    pose = head_pose(rng, settings, centre)
    axis = int(rng.choice(3, p=list(settings.slice_axis_probabilities)))
    in_plane = float(rng.uniform(*settings.in_plane_mm))
    if rng.random() < settings.three_d_probability:
        thickness, gap = 1.0, 0.0
    else:
        thickness = float(rng.uniform(*settings.slice_thickness_mm))
        gap = float(rng.uniform(*settings.slice_gap_mm))
    fine = np.full(3, in_plane)
    fine[axis] = FINE_SLICE_MM
    lows = inside.min(0) - 4
    highs = inside.max(0) + 4
    corners = brain.index_to_world(
        np.array(
            [
                [a, b, c]
                for a in (lows[0], highs[0])
                for b in (lows[1], highs[1])
                for c in (lows[2], highs[2])
            ]
        )
    )
    scanner_corners = registration.transform_points_ras(registration.invert(pose), corners)
    start, stop = scanner_corners.min(0), scanner_corners.max(0)
    shape = np.ceil((stop - start) / fine).astype(int) + 1
    affine = np.eye(4)
    affine[:3, :3] = np.diag(fine)
    affine[:3, 3] = start
    fine_grid = Volume(np.zeros(tuple(int(n) for n in shape), np.float32), affine)
    seen = registration.resample(image, fine_grid, pose, "linear").array
    seen_brain = registration.resample(
        brain.with_array(brain.array.astype(np.float32)), fine_grid, pose, "linear"
    ).array
    sigma = np.zeros(3)
    sigma[axis] = thickness / 2.355 / FINE_SLICE_MM
    for other in range(3):
        if other != axis and in_plane > 1.0:
            sigma[other] = np.sqrt(in_plane**2 - 1.0) / 2.355 / in_plane
    seen = ndimage.gaussian_filter(seen, sigma)
    step = max(round((thickness + gap) / FINE_SLICE_MM), 1)
    offset = int(rng.integers(step))
    take = [slice(None)] * 3
    take[axis] = slice(offset, None, step)
    scan = seen[tuple(take)]
    scan_brain = seen_brain[tuple(take)] > 0.5
    native_affine = affine.copy()
    native_affine[axis, axis] = FINE_SLICE_MM * step
    native_affine[axis, 3] = start[axis] + offset * FINE_SLICE_MM
    noise = float(rng.uniform(*settings.noise_range))
    real = scan + rng.normal(0, noise, scan.shape).astype(np.float32)
    imaginary = rng.normal(0, noise, scan.shape).astype(np.float32)
    scan = np.where(scan_brain, np.sqrt(real * real + imaginary * imaginary), 0).astype(np.float32)
    info.update(
        native={
            "slice_axis": axis,
            "in_plane_mm": round(in_plane, 2),
            "thickness_mm": round(thickness, 2),
            "slice_spacing_mm": round(FINE_SLICE_MM * step, 2),
            "pose_degrees": [
                round(float(np.rad2deg(a)), 2)
                for a in (pose.GetAngleX(), pose.GetAngleY(), pose.GetAngleZ())
            ],
            "pose_mm": [round(float(t), 2) for t in pose.GetTranslation()],
        },
        noise=round(noise, 3),
    )
    return Volume(scan, native_affine), pose
