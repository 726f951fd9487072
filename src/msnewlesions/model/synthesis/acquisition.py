"""A second acquisition of the same brain: slices, blur, bias, contrast, noise, motion."""

from __future__ import annotations

from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

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


def acquire(
    image: np.ndarray,
    brain: np.ndarray,
    rng: np.random.Generator,
    settings: SynthesisSettings,
    info: dict[str, Any],
    tissues: np.ndarray | None = None,
) -> np.ndarray:
    """The same brain seen by another acquisition: slices, blur, bias, contrast and noise.

    ``tissues`` (white matter, grey matter, CSF probabilities, stacked on the first axis) turn
    on ``settings.tissue_contrast``: each tissue's signal scaled by its own factor, as another
    protocol's inversion and echo times change the contrast between tissues."""
    out = image.astype(np.float32)
    if tissues is not None and settings.tissue_contrast > 0:
        factors = rng.uniform(-settings.tissue_contrast, settings.tissue_contrast, len(tissues))
        out = out * (1.0 + np.tensordot(factors, tissues, axes=1)).astype(np.float32)
        info["tissue_factors"] = [round(1.0 + float(f), 3) for f in factors]
    if rng.random() < settings.reslice_probability:
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
    noise = float(rng.uniform(*settings.noise_range))
    real = out + rng.normal(0, noise, out.shape).astype(np.float32)
    imaginary = rng.normal(0, noise, out.shape).astype(np.float32)
    out = np.sqrt(real * real + imaginary * imaginary)  # magnitude images have Rician noise
    info.update(blur_mm=round(blur, 2), gamma=round(gamma, 3), noise=round(noise, 3))
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
