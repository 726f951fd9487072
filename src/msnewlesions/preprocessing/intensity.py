"""Crop to the brain and z-score: small pure functions on Volumes."""

from __future__ import annotations

import numpy as np

from msnewlesions.io import Volume

Box = tuple[slice, slice, slice]


def brain_bounding_box(brain_mask: Volume, margin_mm: float = 5.0) -> Box:
    """The index box around the mask's non-zero voxels, widened by ``margin_mm`` on every side."""
    inside = np.argwhere(brain_mask.array > 0)
    if inside.size == 0:
        raise ValueError("the brain mask is empty")
    margin = np.ceil(margin_mm / brain_mask.spacing).astype(int)
    low = np.maximum(inside.min(axis=0) - margin, 0)
    high = np.minimum(inside.max(axis=0) + margin + 1, brain_mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))  # type: ignore[return-value]


def crop(volume: Volume, box: Box) -> Volume:
    """The volume restricted to ``box``; the affine moves so each voxel keeps its world point."""
    start = np.array([s.start for s in box], dtype=np.float64)
    affine = volume.affine.copy()
    affine[:3, 3] = volume.affine[:3, :3] @ start + volume.affine[:3, 3]
    return Volume(np.ascontiguousarray(volume.array[box]), affine, volume.header)


def zscore(volume: Volume, brain_mask: Volume) -> Volume:
    """(value - mean) / standard deviation over the brain; zero outside the brain (float32)."""
    inside = brain_mask.array > 0
    values = volume.array[inside].astype(np.float64)
    mean = values.mean()
    std = values.std()
    if std == 0:
        raise ValueError("the image is constant inside the brain mask")
    normalized = np.zeros(volume.shape, dtype=np.float32)
    normalized[inside] = ((values - mean) / std).astype(np.float32)
    return volume.with_array(normalized)
