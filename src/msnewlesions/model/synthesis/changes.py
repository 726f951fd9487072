"""Real lesion change: enlarging old lesions, and the shapes and sizes of real changes.

Two things the first synthesis lacked (MODEL_CARD.md): old lesions that grow at the follow-up
(open_ms_data's experts label the grown part as change; MSSEG-2 labels new lesions only), and
the size of real changes between two visits (the 13 change masks of open_ms_data: median 44 mm3,
quartiles 22 / 104 mm3), which whole lesions drawn log-uniformly up to 7.5 ml over-weight.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from msnewlesions import template
from msnewlesions.io import read_volume
from msnewlesions.lesions import components
from msnewlesions.model.synthesis.anatomy import LesionShape, lesion_shapes
from msnewlesions.model.synthesis.new_lesions import Placement
from msnewlesions.model.synthesis.settings import SynthesisSettings
from msnewlesions.preprocessing import registration

logger = logging.getLogger(__name__)


def _direction(rng: np.random.Generator) -> np.ndarray:
    vector = rng.normal(size=3)
    return vector / np.linalg.norm(vector)


def _lobe(lesion: np.ndarray, keep_voxels: int | None, rng: np.random.Generator) -> np.ndarray:
    """One side of a plane through the lesion's centre (a random direction); with
    ``keep_voxels``, the plane moves out until the side holds about that many voxels around
    the lesion (a lobe of an enlarging lesion that would otherwise grow too much)."""
    centre = np.array(ndimage.center_of_mass(lesion))
    offsets = np.indices(lesion.shape).reshape(3, -1).T - centre
    along = (offsets @ _direction(rng)).reshape(lesion.shape)
    if keep_voxels is None:
        return along > 0
    shell = ndimage.binary_dilation(lesion, iterations=1) & ~lesion
    values = np.sort(along[shell])[::-1]
    # The outermost shell voxels along the direction: about keep_voxels / rim width of them.
    cut = values[min(len(values) - 1, max(keep_voxels // 4, 1))]
    return along >= cut


def grow_old_lesions(
    old_lesions: np.ndarray,
    brain: np.ndarray,
    white_matter: np.ndarray,
    image: np.ndarray,
    rng: np.random.Generator,
    settings: SynthesisSettings,
) -> list[Placement]:
    """Some old lesions grow at the follow-up: the grown part of each, as a placement.

    A growing lesion gains a rim of 1 to ``settings.enlarging_mm`` mm (width w drawn with
    probability 1/w: thin rims are likelier) all round, or a lobe (the rim on one side of a
    random plane through its centre). A rim above ``settings.max_grown_voxels`` is cut to a lobe
    of about that size. The grown part stays in the brain, off CSF-dark voxels and where the
    template sees some white matter, and holds ``settings.min_lesion_voxels`` to
    ``settings.max_grown_voxels`` voxels. Placements carry only the grown part: drawn
    like new lesions (:func:`~msnewlesions.model.synthesis.new_lesions.insert_lesions`), they
    touch the old lesion, as a real enlargement does. Grids are 1 mm.
    """
    if settings.enlarging_pair_probability <= 0:
        return []  # no draw at all: the shipped model's pairs stay those of their seeds
    labels, count = components(old_lesions)
    if count == 0 or rng.random() >= settings.enlarging_pair_probability:
        return []
    allowed = (
        ndimage.binary_erosion(brain, iterations=1)
        & (image >= settings.csf_level)
        & (white_matter >= settings.min_white_matter_probability / 2)
    )
    order = rng.permutation(count) + 1
    placements: list[Placement] = []
    objects = ndimage.find_objects(labels)
    for index in order:
        if len(placements) == settings.max_enlarging_lesions:
            break
        box = objects[index - 1]
        if box is None or rng.random() >= settings.enlarging_lesion_probability:
            continue
        widths = np.arange(1, round(settings.enlarging_mm) + 1)
        radius = int(rng.choice(widths, p=(1.0 / widths) / (1.0 / widths).sum()))
        low = np.maximum([s.start - radius - 1 for s in box], 0)
        high = np.minimum([s.stop + radius + 1 for s in box], labels.shape)
        region = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
        lesion = labels[region] == index
        grown = ndimage.binary_dilation(lesion, iterations=radius) & ~lesion
        grown &= allowed[region] & (labels[region] == 0)
        lobe = rng.random() < settings.lobe_probability
        if lobe or grown.sum() > settings.max_grown_voxels:
            grown &= _lobe(lesion, settings.max_grown_voxels if not lobe else None, rng)
        if not settings.min_lesion_voxels <= grown.sum() <= settings.max_grown_voxels:
            continue
        placements.append(
            Placement(np.ascontiguousarray(grown), tuple(int(v) for v in low), f"enlarging:{index}")  # type: ignore[arg-type]
        )
    return placements


def change_library(
    change_masks: Sequence[tuple[str | Path, str | Path]], min_voxels: int = 3
) -> list[LesionShape]:
    """The components of real lesion-change masks, placed on the template's 1 mm grid.

    ``change_masks``: (change mask, brain mask) on one patient's own grid (open_ms_data's
    ``coregistered/patientNN/gt.nii.gz`` and ``brainmask.nii.gz``). The brain mask is registered
    rigidly to the template's brain (a brain is a brain: the masks align by their shape) and the
    change mask follows it, resampled linearly and cut at one half so that 3-mm slices give
    smooth shapes. Sizes and positions are those of real changes between two visits.
    """
    mni_brain = template.mni_brain_mask()
    fixed = sitk.Cast(mni_brain.to_sitk(), sitk.sitkFloat32)
    library: list[LesionShape] = []
    for change_path, brain_path in change_masks:
        brain = read_volume(brain_path)
        brain = brain.with_array((brain.array > 0).astype(np.float32))
        change = read_volume(change_path)
        change = change.with_array((change.array > 0).astype(np.float32))
        to_template = registration.register_rigid(
            fixed, sitk.Cast(brain.to_sitk(), sitk.sitkFloat32), registration.HEAD_SETTINGS
        ).transform
        moved = registration.resample(change, mni_brain, to_template, "linear")
        mask = moved.with_array((moved.array >= 0.5).astype(np.uint8))
        patient = Path(change_path).parent.name
        library.extend(lesion_shapes(mask, f"change:{patient}", min_voxels))
        logger.info("%s: %d change components on the template grid", patient, len(library))
    return library


def open_ms_data_change_masks(root: str | Path) -> list[tuple[Path, Path]]:
    """open_ms_data's change masks without scans (``coregistered/patientNN``), with brain masks.

    The complete pairs (patients whose ``raw`` folder has both studies) are left out: they are
    scored on, or join training as real pairs.
    """
    root = Path(root) / "longitudinal"
    found = []
    for folder in sorted((root / "coregistered").glob("patient*")):
        change, brain = folder / "gt.nii.gz", folder / "brainmask.nii.gz"
        raw = root / "raw" / folder.name
        complete = (raw / "study1_FLAIR.nii.gz").exists() and (raw / "study2_FLAIR.nii.gz").exists()
        if change.exists() and brain.exists() and not complete:
            found.append((change, brain))
    return found
