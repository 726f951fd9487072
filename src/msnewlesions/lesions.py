"""What a lesion is, defined once for segment, evaluate, synthesis and the datasets.

A lesion is a 6-connected component of a binary mask (face neighbours only, as MSSEG-2 and its
evaluation tool animaSegPerfAnalyzer count lesions) whose volume is *strictly larger* than a
minimum volume: anima keeps components of more than ``floor(min_lesion_mm3 / voxel_mm3)`` voxels.
Smaller components are background.

The parameters that turn a network's probability map into lesions, the threshold, the minimum
volume and the minimum depth (:class:`PostprocessingSettings`), belong to the model they were
chosen for: a model folder may hold ``postprocessing.json`` (written by
``benchmarks/postprocessing.py`` from that model's validation split, as nnU-Net determines its own
post-processing on cross-validation); without it, the defaults apply (0.5, MSSEG-2's 3 mm3, no
depth rule).

The depth of a lesion (:func:`lesion_depths_mm`) is how far its deepest voxel lies inside a
mask (``segment`` gives the brain's parenchyma, :mod:`msnewlesions.preprocessing.parenchyma`):
the distance from that voxel's centre to the nearest voxel outside the mask (1 mm for a voxel on
the mask's surface of a 1 mm grid).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import ndimage

from msnewlesions.atomic import write_json_atomically
from msnewlesions.errors import MSNewLesionsError

#: Face neighbours only: how MSSEG-2 counts lesions.
SIX_CONNECTED = ndimage.generate_binary_structure(3, 1)
#: MSSEG-2's smallest lesion (mm3): components of this volume or less are not lesions.
MIN_LESION_MM3 = 3.0

#: The file in a model folder that holds the post-processing chosen for that model.
POSTPROCESSING_FILE = "postprocessing.json"


def components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The 6-connected components of ``mask > 0``, numbered 1..n in scan order (no size rule)."""
    labels, count = ndimage.label(np.asarray(mask) > 0, structure=SIX_CONNECTED)
    return labels, int(count)


def min_lesion_voxels(min_lesion_mm3: float, voxel_mm3: float) -> int:
    """The fewest voxels a lesion has: strictly more than ``min_lesion_mm3`` (anima's rule)."""
    return int(np.floor(min_lesion_mm3 / voxel_mm3)) + 1


def label_lesions(
    mask: np.ndarray,
    voxel_mm3: float,
    min_lesion_mm3: float = MIN_LESION_MM3,
    order: Literal["scan", "volume"] = "scan",
) -> tuple[np.ndarray, int]:
    """Lesions numbered 1..n; components of ``min_lesion_mm3`` or less become background.

    ``order``: ``"scan"`` numbers them in array order, ``"volume"`` by decreasing volume (ties in
    scan order), as the lesion table lists them.
    """
    labels, count = components(mask)
    if count == 0:
        return labels, 0
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0
    kept = np.flatnonzero(sizes >= min_lesion_voxels(min_lesion_mm3, voxel_mm3))
    if order == "volume":
        kept = kept[np.argsort(-sizes[kept], kind="stable")]
    renumber = np.zeros(count + 1, dtype=labels.dtype)
    renumber[kept] = np.arange(1, len(kept) + 1, dtype=labels.dtype)
    return renumber[labels], len(kept)


def label_maxima(values: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    """The largest of ``values`` over each label 1..``count`` of ``labels`` (0 for an absent one).

    Each label is read in its own bounding box: scipy's ``ndimage.maximum`` sorts every voxel of
    the volume (1.6 s for a lesion table here, for a few small lesions).
    """
    peaks = np.zeros(count)
    for index, box in enumerate(ndimage.find_objects(labels, max_label=count)):
        if box is not None:
            peaks[index] = values[box][labels[box] == index + 1].max()
    return peaks


def lesion_depths_mm(
    labels: np.ndarray,
    count: int,
    brain_mask: np.ndarray,
    spacing_mm: Sequence[float],
    up_to_mm: float | None = None,
) -> np.ndarray:
    """How deep inside ``brain_mask`` each lesion 1..count reaches (mm; 0 for one outside it).

    With ``up_to_mm`` only depths below it are exact (a deeper lesion gets some value of at
    least ``up_to_mm``, possibly infinity): each lesion is measured in its own box grown by that
    distance, which is all a depth rule needs and takes a fraction of the whole mask's time.
    """
    if count == 0:
        return np.zeros(0)
    spacing = [float(s) for s in spacing_mm]
    inside = np.asarray(brain_mask) > 0
    if up_to_mm is None:
        padded = np.pad(inside, 1)  # the array's border is outside the brain
        depth = ndimage.distance_transform_edt(padded, sampling=spacing)[1:-1, 1:-1, 1:-1]
        return label_maxima(depth, labels, count)
    grow = [int(np.ceil(up_to_mm / s)) + 1 for s in spacing]
    depths = np.zeros(count)
    for index, box in enumerate(ndimage.find_objects(labels, max_label=count)):
        if box is None:
            continue
        grown = tuple(
            slice(max(b.start - g, 0), min(b.stop + g, n))
            for b, g, n in zip(box, grow, inside.shape, strict=True)
        )
        # Beyond the array is outside the brain; beyond the box, farther than up_to_mm.
        edges = [
            (int(b.start == 0), int(b.stop == n)) for b, n in zip(grown, inside.shape, strict=True)
        ]
        region = np.pad(inside[grown], edges, constant_values=False)
        region = np.pad(region, [(1 - a, 1 - b) for a, b in edges], constant_values=True)
        if region.all():
            depths[index] = np.inf
            continue
        depth = ndimage.distance_transform_edt(region, sampling=spacing)[1:-1, 1:-1, 1:-1]
        depths[index] = depth[labels[grown] == index + 1].max()
    return depths


def drop_shallow_lesions(
    labels: np.ndarray,
    count: int,
    brain_mask: np.ndarray,
    spacing_mm: Sequence[float],
    min_depth_mm: float,
) -> tuple[np.ndarray, int]:
    """The lesions that reach at least ``min_depth_mm`` inside the brain, renumbered 1..n in
    their order; the others become background."""
    if count == 0 or min_depth_mm <= 0:
        return labels, count
    depths = lesion_depths_mm(labels, count, brain_mask, spacing_mm, up_to_mm=min_depth_mm)
    kept = np.flatnonzero(depths >= min_depth_mm)
    renumber = np.zeros(count + 1, dtype=labels.dtype)
    renumber[kept + 1] = np.arange(1, len(kept) + 1, dtype=labels.dtype)
    return renumber[labels], len(kept)


@dataclass(frozen=True)
class PostprocessingSettings:
    """Probability threshold, minimum lesion volume (components of that volume or less go) and
    minimum depth inside the brain's parenchyma (lesions that reach less deep go; 0: none)."""

    threshold: float = 0.5
    min_lesion_mm3: float = MIN_LESION_MM3
    min_depth_mm: float = 0.0

    def override(
        self,
        threshold: float | None = None,
        min_lesion_mm3: float | None = None,
        min_depth_mm: float | None = None,
    ) -> PostprocessingSettings:
        """These settings with the values given (None keeps this one's)."""
        return PostprocessingSettings(
            self.threshold if threshold is None else threshold,
            self.min_lesion_mm3 if min_lesion_mm3 is None else min_lesion_mm3,
            self.min_depth_mm if min_depth_mm is None else min_depth_mm,
        )


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
    write_json_atomically(path, asdict(settings) | {"chosen_on": chosen_on})
    return path
