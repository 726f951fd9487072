"""From the network's probability map to new lesions: threshold, size filter, lesion table, and the
mask on the follow-up's own (native) grid.

Lesions are defined once, in MNI space (1 mm isotropic, where the network works): the probability
map is thresholded, 6-connected components (as MSSEG-2 counts lesions) of ``min_lesion_mm3`` or
less are dropped, and the rest are numbered 1..n by decreasing volume. The native mask is that
label map carried onto the follow-up's grid through ``followup_to_mni`` by nearest neighbour, so a
lesion keeps its number in both spaces; its native centroid is the MNI centroid mapped through the
same transform.

The threshold and minimum volume belong to the model they were chosen for: a model folder may hold
``postprocessing.json`` (written by ``benchmarks/postprocessing.py`` from that model's validation
split, as nnU-Net determines its own post-processing on cross-validation); without it,
:class:`PostprocessingSettings`' defaults apply (0.5, and MSSEG-2's 3 mm3).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from msnewlesions.errors import MSNewLesionsError
from msnewlesions.io import Volume
from msnewlesions.metrics import MIN_LESION_MM3
from msnewlesions.preprocessing import registration

_SIX_CONNECTED = ndimage.generate_binary_structure(3, 1)

#: The file in a model folder that holds the post-processing chosen for that model.
POSTPROCESSING_FILE = "postprocessing.json"


@dataclass(frozen=True)
class PostprocessingSettings:
    """Probability threshold and minimum lesion volume (components of that volume or less go)."""

    threshold: float = 0.5
    min_lesion_mm3: float = MIN_LESION_MM3  # MSSEG-2's smallest lesion


def model_postprocessing(model_folder: str | Path) -> PostprocessingSettings:
    """The settings saved in ``model_folder``'s ``postprocessing.json``, else the defaults."""
    path = Path(model_folder) / POSTPROCESSING_FILE
    if not path.exists():
        return PostprocessingSettings()
    try:
        saved = json.loads(path.read_text())
        names = {f.name for f in fields(PostprocessingSettings)}
        return PostprocessingSettings(**{k: float(v) for k, v in saved.items() if k in names})
    except (ValueError, TypeError, AttributeError) as error:
        raise MSNewLesionsError(f"{path} is not a valid post-processing file: {error}") from error


def write_model_postprocessing(
    model_folder: str | Path, settings: PostprocessingSettings, chosen_on: str
) -> Path:
    """Save ``settings`` in ``model_folder`` with a note of the data they were chosen on."""
    path = Path(model_folder) / POSTPROCESSING_FILE
    path.write_text(json.dumps(asdict(settings) | {"chosen_on": chosen_on}, indent=2) + "\n")
    return path


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

    def as_row(self) -> dict[str, float | int]:
        row = asdict(self)
        mni, native = row.pop("centroid_mni_mm"), row.pop("centroid_native_mm")
        for axis, name in enumerate("xyz"):
            row[f"mni_{name}_mm"] = round(float(mni[axis]), 2)
        for axis, name in enumerate("xyz"):
            row[f"native_{name}_mm"] = round(float(native[axis]), 2)
        row["volume_mm3"] = round(float(row["volume_mm3"]), 2)
        row["max_probability"] = round(float(row["max_probability"]), 4)
        return row


def lesion_labels(
    probability: Volume, threshold: float = 0.5, min_lesion_mm3: float = MIN_LESION_MM3
) -> tuple[Volume, int]:
    """Lesions numbered 1..n by decreasing volume (uint16); components of ``min_lesion_mm3``
    or less are removed, as MSSEG-2's evaluation ignores them."""
    components, count = ndimage.label(probability.array >= threshold, structure=_SIX_CONNECTED)
    if count == 0:
        return probability.with_array(np.zeros(probability.shape, np.uint16)), 0
    sizes = np.bincount(components.ravel(), minlength=count + 1)
    sizes[0] = 0
    min_voxels = int(np.floor(min_lesion_mm3 / probability.voxel_volume_mm3)) + 1
    kept = [label for label in np.argsort(-sizes, kind="stable") if sizes[label] >= min_voxels]
    renumber = np.zeros(count + 1, np.uint16)
    renumber[kept] = np.arange(1, len(kept) + 1, dtype=np.uint16)
    return probability.with_array(renumber[components]), len(kept)


def to_native(labels_mni: Volume, followup_grid: Volume, followup_to_mni: sitk.Transform) -> Volume:
    """The MNI label map on the follow-up's native grid (nearest neighbour; numbers kept)."""
    mni_to_native = registration.invert(followup_to_mni)  # maps a native point to the MNI point
    resampled = registration.resample(labels_mni, followup_grid, mni_to_native, "nearest")
    return followup_grid.with_array(resampled.array.astype(np.uint16))


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
    peaks = ndimage.maximum(probability.array, labels_mni.array, index)
    return [
        Lesion(
            lesion_id=int(label),
            voxels_mni=int(voxels[i]),
            volume_mm3=float(voxels[i] * labels_mni.voxel_volume_mm3),
            voxels_native=int(native_voxels[i]),
            centroid_mni_mm=tuple(float(v) for v in centres_mni[i]),
            centroid_native_mm=tuple(float(v) for v in centres_native[i]),
            max_probability=float(np.atleast_1d(peaks)[i]),
        )
        for i, label in enumerate(index)
    ]
