"""Real inputs: anatomy (one real FLAIR on the MNI grid) and real lesion shapes."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from msnewlesions import template
from msnewlesions.atomic import write_json_atomically
from msnewlesions.errors import MSNewLesionsError
from msnewlesions.io import Volume, read_volume, write_volume_atomically
from msnewlesions.lesions import components
from msnewlesions.preprocessing import registration
from msnewlesions.preprocessing.bias import n4_bias_correction
from msnewlesions.preprocessing.skullstrip import hdbet_brain_mask, nonzero_brain_mask

logger = logging.getLogger(__name__)

#: Template white-matter probability above which a voxel is a reference white-matter voxel.
WHITE_MATTER_REFERENCE = 0.9
#: Estimated old lesions of a scan without an expert mask: white-matter-side voxels brighter than
#: the white-matter median plus this fraction of (lesion level - median), in components of at
#: least ``OLD_LESION_MIN_VOXELS``.
OLD_LESION_LEVEL = 0.8
OLD_LESION_MIN_VOXELS = 10


@dataclass(frozen=True)
class Anatomy:
    """One real FLAIR on the MNI grid: white-matter median 1, zero outside the brain."""

    name: str
    image: Volume
    brain_mask: Volume
    old_lesions: Volume
    #: This scan's lesion intensity relative to its white matter (its lesions' typical brightness).
    lesion_ratio: float


@dataclass(frozen=True)
class LesionShape:
    """A real lesion: its binary mask in a tight box and where that box sits on the MNI grid."""

    mask: np.ndarray
    corner: tuple[int, int, int]
    source: str

    @property
    def voxels(self) -> int:
        return int(self.mask.sum())


def _to_template_grid(volume: Volume, interpolation: str) -> Volume:
    """A volume already in MNI space, resampled onto the template's grid (identity transform)."""
    return registration.resample(volume, template.mni_t1(), sitk.Euler3DTransform(), interpolation)


def lesion_shapes(mask: Volume, source: str, min_voxels: int = 1) -> list[LesionShape]:
    """The 6-connected components of a binary mask on the template's grid, as lesion shapes."""
    labels, _count = components(mask.array)
    shapes = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        shape_mask = labels[box] == index
        if shape_mask.sum() < min_voxels:
            continue
        corner = tuple(int(s.start) for s in box)
        shapes.append(LesionShape(np.ascontiguousarray(shape_mask), corner, source))  # type: ignore[arg-type]
    return shapes


def lesion_library(
    mask_paths: Sequence[str | Path], min_voxels: int = 5, max_voxels: int = 8000
) -> list[LesionShape]:
    """Every lesion of the expert masks (in MNI space) within a size range, on the template grid.

    The upper bound leaves out confluent lesion fields (one component of 46 ml in open_ms_data),
    which are not what a new lesion looks like.
    """
    library: list[LesionShape] = []
    for path in mask_paths:
        mask = _to_template_grid(read_volume(path), "nearest")
        shapes = lesion_shapes(mask, Path(path).parent.name, min_voxels)
        library.extend(shape for shape in shapes if shape.voxels <= max_voxels)
    if not library:
        raise MSNewLesionsError("the lesion masks hold no lesion of the requested size.")
    return library


def _white_matter_median(image: np.ndarray, brain: np.ndarray, exclude: np.ndarray) -> float:
    white_matter = (template.mni_white_matter().array > WHITE_MATTER_REFERENCE) & brain & ~exclude
    if white_matter.sum() < 1000:
        raise MSNewLesionsError("too little white matter overlaps the brain to scale this scan.")
    return float(np.median(image[white_matter]))


def estimate_old_lesions(image: np.ndarray, brain: np.ndarray, lesion_ratio: float) -> np.ndarray:
    """Bright white-matter-side blobs of a scan scaled to white matter 1: its probable lesions."""
    white_matter = template.mni_white_matter().array > 0.3
    level = 1.0 + OLD_LESION_LEVEL * (lesion_ratio - 1.0)
    inner_brain = ndimage.binary_erosion(brain, iterations=3)
    candidates = (image > level) & white_matter & inner_brain
    labels, _ = components(candidates)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= OLD_LESION_MIN_VOXELS
    keep[0] = False
    return np.asarray(keep[labels])


def finish_anatomy(
    name: str, image: np.ndarray, brain: np.ndarray, old_lesions: np.ndarray | None
) -> Anatomy:
    grid = template.mni_t1()
    image = np.where(brain, np.maximum(image, 0), 0).astype(np.float32)
    known = old_lesions if old_lesions is not None else np.zeros_like(brain)
    median = _white_matter_median(image, brain, known)
    image /= median
    white_matter = (template.mni_white_matter().array > WHITE_MATTER_REFERENCE) & brain
    if old_lesions is not None and old_lesions.sum() >= 50:
        # The upper half of the expert-outlined lesion voxels: lesion cores, not their edges.
        lesion_ratio = float(np.percentile(image[old_lesions], 75))
    else:
        lesion_ratio = float(np.percentile(image[white_matter], 99.7))
    lesion_ratio = float(np.clip(lesion_ratio, 1.15, 2.0))
    if old_lesions is None:
        old_lesions = estimate_old_lesions(image, brain, lesion_ratio)
    logger.info(
        "anatomy %s: brain %.0f ml, lesion level %.2f x white matter, old lesions %.1f ml",
        name,
        brain.sum() / 1000,
        lesion_ratio,
        old_lesions.sum() / 1000,
    )
    return Anatomy(
        name=name,
        image=grid.with_array(image),
        brain_mask=grid.with_array(brain.astype(np.uint8)),
        old_lesions=grid.with_array((old_lesions & brain).astype(np.uint8)),
        lesion_ratio=lesion_ratio,
    )


def anatomy_from_mni_scan(
    name: str, flair: str | Path, lesion_mask: str | Path | None = None
) -> Anatomy:
    """A skull-stripped, bias-corrected FLAIR already in MNI space (as open_ms_data's MNI set)."""
    scan = _to_template_grid(read_volume(flair), "linear")
    image = scan.array
    brain = nonzero_brain_mask(scan).array > 0
    lesions = None
    if lesion_mask is not None:
        lesions = (_to_template_grid(read_volume(lesion_mask), "nearest").array > 0) & brain
    return finish_anatomy(name, image, brain, lesions)


def anatomy_from_native_scan(
    name: str, flair: str | Path, device: str = "cpu", brain_mask: Volume | None = None
) -> Anatomy:
    """A raw FLAIR with skull: rigid to MNI, HD-BET, N4, as the pair pipeline does.

    ``brain_mask``: the scan's brain already found in MNI space (on any grid in it, e.g. a
    preprocessed pair's), used instead of HD-BET: a brain-extracted scan keeps its own brain.
    """
    volume = read_volume(flair)
    mni = template.mni_t1()
    moving = sitk.Cast(volume.to_sitk(), sitk.sitkFloat32)
    to_mni = registration.register_rigid(mni.to_sitk(), moving, registration.HEAD_SETTINGS)
    head = registration.resample(volume, mni, to_mni.transform, "bspline")
    head = head.with_array(np.maximum(head.array, 0).astype(np.float32))
    if brain_mask is not None:
        brain_mask = _to_template_grid(brain_mask, "nearest")
    else:
        brain_mask = hdbet_brain_mask(head, "fast", device)
    corrected = n4_bias_correction(head, brain_mask)
    return finish_anatomy(name, corrected.array, brain_mask.array > 0, None)


def save_anatomy(anatomy: Anatomy, folder: str | Path) -> None:
    """Cache an anatomy as three NIfTI files and a JSON (written last: it marks completion)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_volume_atomically(anatomy.image, folder / f"{anatomy.name}_flair.nii.gz", np.float32)
    write_volume_atomically(
        anatomy.brain_mask, folder / f"{anatomy.name}_brain_mask.nii.gz", np.uint8
    )
    write_volume_atomically(
        anatomy.old_lesions, folder / f"{anatomy.name}_old_lesions.nii.gz", np.uint8
    )
    info = {"name": anatomy.name, "lesion_ratio": anatomy.lesion_ratio}
    write_json_atomically(folder / f"{anatomy.name}.json", info)


def load_anatomy(folder: str | Path, name: str) -> Anatomy | None:
    """A cached anatomy, or None when it has not been (completely) cached."""
    folder = Path(folder)
    if not (folder / f"{name}.json").exists():
        return None
    info = json.loads((folder / f"{name}.json").read_text())
    image = read_volume(folder / f"{name}_flair.nii.gz")
    return Anatomy(
        name=name,
        image=image.with_array(image.array.astype(np.float32)),
        brain_mask=read_volume(folder / f"{name}_brain_mask.nii.gz"),
        old_lesions=read_volume(folder / f"{name}_old_lesions.nii.gz"),
        lesion_ratio=float(info["lesion_ratio"]),
    )


@dataclass(frozen=True)
class AnatomySource:
    """Where one anatomy comes from in open_ms_data, and which patient it belongs to."""

    name: str
    patient: str
    flair: Path
    in_mni: bool
    lesion_mask: Path | None = None


def open_ms_data_sources(root: str | Path) -> tuple[list[AnatomySource], list[Path]]:
    """Every FLAIR of open_ms_data as an anatomy source, and the 29 gold-standard lesion masks."""
    root = Path(root)
    sources = []
    for flair in sorted((root / "longitudinal" / "raw").glob("patient*/study*_FLAIR.nii.gz")):
        study = flair.name.split("_")[0]
        patient = f"longitudinal-{flair.parent.name}"
        sources.append(AnatomySource(f"{patient}-{study}", patient, flair, False))
    masks = sorted((root / "cross_sectional" / "MNI").glob("patient*/GOLD_STANDARD_*.nii.gz"))
    for flair in sorted((root / "cross_sectional" / "MNI").glob("patient*/FLAIR_*.nii.gz")):
        patient = f"cross_sectional-{flair.parent.name}"
        mask = next(flair.parent.glob("GOLD_STANDARD_*.nii.gz"), None)
        sources.append(AnatomySource(patient, patient, flair, True, mask))
    if not sources or not masks:
        raise MSNewLesionsError(f"{root} does not hold open_ms_data's FLAIR scans and masks.")
    return sources, masks


def prepare_anatomy(source: AnatomySource, cache: str | Path, device: str = "cpu") -> Anatomy:
    """The anatomy of a source, from the cache when already prepared."""
    cached = load_anatomy(cache, source.name)
    if cached is not None:
        return cached
    if source.in_mni:
        anatomy = anatomy_from_mni_scan(source.name, source.flair, source.lesion_mask)
    else:
        anatomy = anatomy_from_native_scan(source.name, source.flair, device)
    save_anatomy(anatomy, cache)
    return anatomy
