"""From the network's probability map to new lesions: threshold, size filter, lesion table, and the
mask on the follow-up's own (native) grid.

Lesions (:mod:`msnewlesions.lesions`) are found once, in MNI space (1 mm isotropic, where the
network works): the probability map is thresholded, lesions of ``min_lesion_mm3`` or less are
dropped, and so are those that reach less than ``min_depth_mm`` inside the brain's parenchyma
(:mod:`msnewlesions.preprocessing.parenchyma`: the brain mask without the fluid at its surface;
where the model's settings have such a rule), and the rest are numbered 1..n by decreasing
volume. The native mask is that label map carried onto the follow-up's grid through
``followup_to_mni`` by nearest neighbour, so a lesion keeps its number in both spaces; its native
centroid is the MNI centroid mapped through the same transform.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from msnewlesions.io import Volume
from msnewlesions.lesions import (
    MIN_LESION_MM3,
    drop_shallow_lesions,
    label_lesions,
    label_maxima,
)
from msnewlesions.location import lesion_locations
from msnewlesions.preprocessing import registration


@dataclass(frozen=True)
class Lesion:
    """One new lesion: its number, size and where it is, in MNI and in the follow-up's space."""

    lesion_id: int
    voxels_mni: int
    volume_mm3: float
    voxels_native: int
    centroid_mni_mm: tuple[float, float, float]
    centroid_native_mm: tuple[float, float, float]
    max_probability: float
    #: In the MAGNIMS sense (:mod:`msnewlesions.location`): periventricular, juxtacortical/cortical,
    #: infratentorial or deep white matter.
    location: str = ""

    def as_row(self) -> dict[str, float | int | str]:
        row = asdict(self)
        mni, native = row.pop("centroid_mni_mm"), row.pop("centroid_native_mm")
        for axis, name in enumerate("xyz"):
            row[f"mni_{name}_mm"] = round(float(mni[axis]), 2)
        for axis, name in enumerate("xyz"):
            row[f"native_{name}_mm"] = round(float(native[axis]), 2)
        row["volume_mm3"] = round(float(row["volume_mm3"]), 2)
        row["max_probability"] = round(float(row["max_probability"]), 4)
        return row


#: The columns of ``lesions.csv``, in order (:meth:`Lesion.as_row`'s keys).
LESION_TABLE_COLUMNS = (
    "lesion_id",
    "voxels_mni",
    "volume_mm3",
    "voxels_native",
    "max_probability",
    "mni_x_mm",
    "mni_y_mm",
    "mni_z_mm",
    "native_x_mm",
    "native_y_mm",
    "native_z_mm",
    "location",
)


def lesion_labels(
    probability: Volume,
    threshold: float = 0.5,
    min_lesion_mm3: float = MIN_LESION_MM3,
    parenchyma: Volume | None = None,
    min_depth_mm: float = 0.0,
) -> tuple[Volume, int]:
    """Lesions of ``probability >= threshold`` numbered 1..n by decreasing volume (uint16);
    those of ``min_lesion_mm3`` or less are removed, as MSSEG-2's evaluation ignores them, and
    with ``min_depth_mm`` those that reach less deep inside ``parenchyma`` (same grid; see
    :func:`~msnewlesions.preprocessing.parenchyma.parenchyma_mask`)."""
    labels, count = label_lesions(
        probability.array >= threshold, probability.voxel_volume_mm3, min_lesion_mm3, "volume"
    )
    if min_depth_mm > 0:
        if parenchyma is None:
            raise ValueError("a minimum lesion depth needs the brain's parenchyma")
        labels, count = drop_shallow_lesions(
            labels, count, parenchyma.array, probability.spacing.tolist(), min_depth_mm
        )
    return probability.with_array(labels.astype(np.uint16)), count


def to_native(labels_mni: Volume, followup_grid: Volume, followup_to_mni: sitk.Transform) -> Volume:
    """The MNI label map on the follow-up's native grid (nearest neighbour; numbers kept)."""
    mni_to_native = registration.invert(followup_to_mni)  # maps a native point to the MNI point
    resampled = registration.resample(labels_mni, followup_grid, mni_to_native, "nearest")
    return followup_grid.with_array(resampled.array.astype(np.uint16))


def _point(values: np.ndarray) -> tuple[float, float, float]:
    x, y, z = (float(v) for v in values)
    return x, y, z


def lesion_table(
    labels_mni: Volume,
    labels_native: Volume,
    probability: Volume,
    followup_to_mni: sitk.Transform,
) -> list[Lesion]:
    """One :class:`Lesion` per label of ``labels_mni``."""
    count = int(labels_mni.array.max())
    if count == 0:
        return []
    index = np.arange(1, count + 1)
    voxels = np.bincount(labels_mni.array.ravel(), minlength=count + 1)[1:]
    native_voxels = np.bincount(labels_native.array.ravel(), minlength=count + 1)[1 : count + 1]
    centres = np.array(ndimage.center_of_mass(np.ones(labels_mni.shape), labels_mni.array, index))
    centres_mni = labels_mni.index_to_world(centres.reshape(-1, 3))
    centres_native = registration.transform_points_ras(followup_to_mni, centres_mni)
    peaks = label_maxima(probability.array, labels_mni.array, count)
    locations = lesion_locations(labels_mni)
    return [
        Lesion(
            lesion_id=int(label),
            voxels_mni=int(voxels[i]),
            volume_mm3=float(voxels[i] * labels_mni.voxel_volume_mm3),
            voxels_native=int(native_voxels[i]),
            centroid_mni_mm=_point(centres_mni[i]),
            centroid_native_mm=_point(centres_native[i]),
            max_probability=float(peaks[i]),
            location=locations[int(label)],
        )
        for i, label in enumerate(index)
    ]
