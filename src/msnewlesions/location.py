"""Where a lesion is, in the MAGNIMS / McDonald sense: infratentorial, periventricular,
juxtacortical/cortical, or deep white matter.

Decided in MNI space, on the lesion's voxels (the network's grid is the template's, cropped), from
maps built once from nilearn's ICBM 2009a template files installed with the package (no atlas is
downloaded), in this order:

1. **infratentorial**: most of the lesion lies below the tentorium: in the brainstem (within
   12 mm of the midline, y from -45 to -12 mm, z below -8 mm) or in the cerebellum, behind
   ``y = -32 - 0.2|x|`` and below the tentorium, modelled from the template's anatomy as
   ``z = max(-12 - 0.3 max(|x| - 10, 0) + 0.25 min(y + 55, 0), 5 + 0.76 (y + 55) - 1.5|x|)`` mm
   (the midline rises to the straight sinus, the sides slope down to the transverse sinuses);
2. **periventricular**: a voxel of the lesion within ``PERIVENTRICULAR_MM`` (3 mm) of the lateral
   or third ventricles (the template's CSF, probability > 0.5, in the central region
   ``|x| <= 35, -50 <= y <= 35, -12 <= z <= 35`` mm, components of at least 500 mm3);
3. **juxtacortical/cortical**: a voxel within ``JUXTACORTICAL_MM`` (1.5 mm: touching) of the
   cortex (the template's grey matter, probability > 0.5, outside the deep grey matter's region
   ``|x| <= 30, -35 <= y <= 25, -12 <= z <= 28`` mm: basal ganglia, thalami, caudate);
4. **deep white matter**: any other lesion.

After a rigid registration only, a patient's anatomy departs from the template's by millimetres:
the class is a reader's aid, shown beside the images, not a measurement.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from msnewlesions import template
from msnewlesions.io import Volume

INFRATENTORIAL = "infratentorial"
PERIVENTRICULAR = "periventricular"
JUXTACORTICAL = "juxtacortical/cortical"
DEEP_WHITE_MATTER = "deep white matter"
#: In the order a clinician reports them (and the rule's order of precedence).
LOCATIONS = (PERIVENTRICULAR, JUXTACORTICAL, INFRATENTORIAL, DEEP_WHITE_MATTER)

PERIVENTRICULAR_MM = 3.0
JUXTACORTICAL_MM = 1.5


def below_tentorium(points_mm: np.ndarray) -> np.ndarray:
    """Whether each MNI point (N x 3, RAS mm) lies in the brainstem or the cerebellum."""
    x, y, z = (np.asarray(points_mm, dtype=float)[:, axis] for axis in range(3))
    side = np.abs(x)
    brainstem = (side <= 12) & (y >= -45) & (y <= -12) & (z <= -8)
    tentorium = np.maximum(
        -12 - 0.3 * np.maximum(side - 10, 0) + 0.25 * np.minimum(y + 55, 0),
        5 + 0.76 * (y + 55) - 1.5 * side,
    )
    cerebellum = (y <= -32 - 0.2 * side) & (z <= tentorium)
    return brainstem | cerebellum


def _coordinates(volume: Volume) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The RAS mm coordinates of every voxel, per axis, broadcastable to the volume's shape."""
    affine = volume.affine
    if not np.allclose(affine[:3, :3], np.diag(np.diag(affine[:3, :3]))):
        points = volume.index_to_world(np.indices(volume.shape).reshape(3, -1).T)
        return tuple(points[:, axis].reshape(volume.shape) for axis in range(3))  # type: ignore[return-value]
    axes = [
        affine[axis, axis] * np.arange(n) + affine[axis, 3] for axis, n in enumerate(volume.shape)
    ]
    return axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]


def _inside(
    volume: Volume, low: tuple[float, float, float], high: tuple[float, float, float]
) -> np.ndarray:
    x, y, z = _coordinates(volume)
    inside = (
        (x >= low[0]) & (x <= high[0]) & (y >= low[1]) & (y <= high[1])
        & (z >= low[2]) & (z <= high[2])
    )  # fmt: skip
    return np.broadcast_to(inside, volume.shape)


@dataclass(frozen=True)
class LocationMaps:
    """On the template's 1 mm grid: the ventricles and the cortex."""

    grid: Volume
    ventricles: np.ndarray
    cortex: np.ndarray


@functools.lru_cache(maxsize=1)
def location_maps() -> LocationMaps:
    grid = template.mni_brain_mask()
    csf = template.mni_csf().array > 0.5
    labels, count = ndimage.label(csf & _inside(grid, (-35, -50, -12), (35, 35, 35)))
    sizes = np.bincount(labels.ravel(), minlength=count + 1) * grid.voxel_volume_mm3
    ventricles = np.isin(labels, np.nonzero(sizes >= 500)[0]) & (labels > 0)
    grey = template.mni_grey_matter().array > 0.5
    cortex = grey & ~_inside(grid, (-30, -35, -12), (30, 25, 28))
    return LocationMaps(grid, ventricles, cortex)


def _near(mask: np.ndarray, index: np.ndarray, distance_mm: float, spacing: np.ndarray) -> bool:
    """Whether a voxel of ``mask`` lies within ``distance_mm`` of one of the voxels ``index``."""
    margin = np.ceil(distance_mm / spacing).astype(int) + 1
    low = np.maximum(index.min(axis=0) - margin, 0)
    high = np.minimum(index.max(axis=0) + margin + 1, mask.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))
    lesion = np.zeros([int(b - a) for a, b in zip(low, high, strict=True)], bool)
    lesion[tuple((index - low).T)] = True
    to_lesion = ndimage.distance_transform_edt(~lesion, sampling=spacing)
    return bool((mask[box] & (to_lesion <= distance_mm)).any())


def lesion_location(points_mm: np.ndarray) -> str:
    """The class of a lesion made of these MNI points (its voxels' centres, N x 3 RAS mm)."""
    points_mm = np.asarray(points_mm, dtype=float)
    if below_tentorium(points_mm).mean() >= 0.5:  # the lesion's own points: no map needed
        return INFRATENTORIAL
    maps = location_maps()
    index = np.round(maps.grid.world_to_index(points_mm)).astype(int)
    index = np.unique(np.clip(index, 0, np.array(maps.grid.shape) - 1), axis=0)
    spacing = np.asarray(maps.grid.spacing, dtype=float)
    if _near(maps.ventricles, index, PERIVENTRICULAR_MM, spacing):
        return PERIVENTRICULAR
    if _near(maps.cortex, index, JUXTACORTICAL_MM, spacing):
        return JUXTACORTICAL
    return DEEP_WHITE_MATTER


def lesion_locations(labels_mni: Volume) -> dict[int, str]:
    """The class of each numbered lesion of a label map on an MNI grid."""
    found = {}
    for number, box in enumerate(ndimage.find_objects(labels_mni.array), start=1):
        if box is None:
            continue
        voxels = np.argwhere(labels_mni.array[box] == number) + [s.start for s in box]
        found[number] = lesion_location(labels_mni.index_to_world(voxels))
    return found
