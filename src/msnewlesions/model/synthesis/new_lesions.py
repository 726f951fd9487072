"""New lesions: real shapes placed in white matter, drawn in, and old lesions that fade."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from msnewlesions import template
from msnewlesions.lesions import components
from msnewlesions.model.synthesis.anatomy import LesionShape
from msnewlesions.model.synthesis.settings import SynthesisSettings


@dataclass(frozen=True)
class Placement:
    """A lesion shape placed on a (cropped) grid: its mask and the index of its box corner."""

    mask: np.ndarray
    corner: tuple[int, int, int]
    source: str

    def box(self) -> tuple[slice, slice, slice]:
        return tuple(  # type: ignore[return-value]
            slice(c, c + n) for c, n in zip(self.corner, self.mask.shape, strict=True)
        )


def _sample_shape(
    library: Sequence[LesionShape], rng: np.random.Generator, sampling: str = "log-uniform"
) -> LesionShape:
    """A library lesion: ``"library"``: any of them alike (sizes as often as the library holds
    them); ``"log-uniform"``: uniformly over log-volume, so small and large ones both appear."""
    if sampling == "library":
        return library[int(rng.integers(len(library)))]
    log_volumes = np.log([shape.voxels for shape in library])
    low, high = log_volumes.min(), log_volumes.max()
    bins = np.minimum(((log_volumes - low) / max(high - low, 1e-9) * 8).astype(int), 7)
    chosen_bin = rng.choice(np.unique(bins))
    candidates = np.flatnonzero(bins == chosen_bin)
    return library[int(rng.choice(candidates))]


def _mark(occupied: np.ndarray, placement: Placement, grow: int) -> None:
    """Set the placement's voxels, dilated by ``grow``, in ``occupied`` (clipped at its edges)."""
    low = np.array(placement.corner) - grow
    grown = ndimage.binary_dilation(np.pad(placement.mask, grow), iterations=grow)
    start = np.maximum(low, 0)
    stop = np.minimum(low + grown.shape, occupied.shape)
    target = tuple(slice(a, b) for a, b in zip(start, stop, strict=True))
    source = tuple(slice(a - o, b - o) for a, b, o in zip(start, stop, low, strict=True))
    occupied[target] |= grown[source]


def place_lesions(
    count: int,
    library: Sequence[LesionShape],
    image: np.ndarray,
    brain: np.ndarray,
    white_matter: np.ndarray,
    occupied: np.ndarray,
    offset: np.ndarray,
    rng: np.random.Generator,
    settings: SynthesisSettings,
) -> list[Placement]:
    """Up to ``count`` lesions placed where this brain has white matter, away from others.

    ``offset`` is the index of the (cropped) arrays' first voxel on the template grid, where the
    library's shapes are positioned.
    """
    occupied = ndimage.binary_dilation(occupied, iterations=1)
    inner_brain = ndimage.binary_erosion(brain, iterations=1)
    midline = template.mni_t1().world_to_index(np.zeros((1, 3)))[0, 0]
    placements: list[Placement] = []
    for _ in range(count * 60):
        if len(placements) == count:
            break
        shape = _sample_shape(library, rng, settings.shape_sampling)
        mask, corner = shape.mask, np.array(shape.corner)
        if rng.random() < settings.mirror_probability:
            mask = mask[::-1]
            corner[0] = round(2 * midline - (corner[0] + mask.shape[0] - 1))
        corner = corner + rng.integers(-settings.max_shift_voxels, settings.max_shift_voxels + 1, 3)
        corner = corner - offset
        if np.any(corner < 0) or np.any(corner + mask.shape > np.array(brain.shape)):
            continue
        placement = Placement(
            np.ascontiguousarray(mask),
            (int(corner[0]), int(corner[1]), int(corner[2])),
            shape.source,
        )
        box = placement.box()
        if not inner_brain[box][mask].all() or occupied[box][mask].any():
            continue
        if white_matter[box][mask].mean() < settings.min_white_matter_probability:
            continue
        if (image[box][mask] < settings.csf_level).mean() > settings.max_csf_fraction:
            continue
        placements.append(placement)
        # Keep three voxels between new lesions so that each stays its own component.
        _mark(occupied, placement, grow=3)
    return placements


def insert_lesions(
    image: np.ndarray,
    placements: Sequence[Placement],
    lesion_ratio: float,
    rng: np.random.Generator,
    settings: SynthesisSettings,
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """The image with the lesions drawn in, their binary label, and each lesion's brightness."""
    image = image.copy()
    label = np.zeros(image.shape, dtype=np.uint8)
    brightness = []
    margin = 3
    for placement in placements:
        level = 1.0 + (lesion_ratio - 1.0) * rng.uniform(*settings.contrast_range)
        brightness.append(float(level))
        low = np.maximum(np.array(placement.corner) - margin, 0)
        high = np.minimum(np.array(placement.corner) + placement.mask.shape + margin, image.shape)
        box = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
        local = np.zeros(high - low, dtype=np.float32)
        start = np.array(placement.corner) - low
        local[tuple(slice(s, s + n) for s, n in zip(start, placement.mask.shape, strict=True))] = (
            placement.mask
        )
        weight = ndimage.gaussian_filter(local, settings.edge_sigma_mm)
        # Partial volume: voxels inside the shape's edge reach about 3/4 of the lesion's
        # brightness, the voxels just outside about half.
        weight = np.clip(1.4 * weight / max(float(weight[local > 0].max()), 1e-6), 0, 1)
        texture = (
            1.0
            + settings.texture
            * ndimage.gaussian_filter(np.asarray(rng.standard_normal(local.shape), np.float32), 1.0)
            / 0.2
        )
        target = level * texture
        region = image[box]
        image[box] = np.where(target > region, region + weight * (target - region), region)
        label[box] |= local.astype(bool)
    return image, label, brightness


def fade_old_lesions(
    image: np.ndarray,
    old_lesions: np.ndarray,
    rng: np.random.Generator,
    settings: SynthesisSettings,
) -> tuple[np.ndarray, np.ndarray]:
    """Some old lesions shrink (their rim fades) or fade as a whole; returns image and which."""
    labels, count = components(old_lesions)
    changed = np.zeros(image.shape, dtype=bool)
    if count == 0 or rng.random() >= settings.fade_pair_probability:
        return image, changed
    image = image.copy()
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None or rng.random() >= settings.fade_lesion_probability:
            continue
        box = tuple(slice(max(s.start - 2, 0), s.stop + 2) for s in box)
        lesion = labels[box] == index
        if rng.random() < 0.5:  # shrinks: the rim fades, the core stays
            core = ndimage.binary_erosion(lesion, iterations=1)
            amount = np.where(core, 0.0, 1.0).astype(np.float32) * lesion
        else:  # fades as a whole
            amount = lesion.astype(np.float32) * rng.uniform(0.4, 1.0)
        weight = np.clip(ndimage.gaussian_filter(amount, settings.edge_sigma_mm) * 1.5, 0, 1)
        weight = np.where(lesion, np.maximum(weight, amount), weight)
        normal = rng.uniform(0.95, 1.1)
        region = image[box]
        image[box] = np.where(region > normal, region - weight * (region - normal), region)
        changed[box] |= lesion & (amount > 0)
    return image, changed
