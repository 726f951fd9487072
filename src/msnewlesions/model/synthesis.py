"""Synthetic longitudinal pairs: real anatomy, real lesion shapes, a realistic second timepoint.

We have two real pairs with new-lesion labels, but ten real FLAIR scans and 29 expert lesion masks.
Lesion-aware augmentation (Basaran et al., 2022) turns single scans into training pairs:

* **anatomy** (:class:`Anatomy`): one real FLAIR in MNI space (1 mm, the template's grid),
  skull-stripped and bias-corrected, scaled so that its white-matter median is 1. These are MS
  patients: their own (old) lesions are present at both timepoints and are never labelled.
* **new lesions**: real shapes (:class:`LesionShape`, the 6-connected components of the expert
  masks) at the MNI position where a patient had them, shifted by a few millimetres and sometimes
  mirrored left-right, accepted only where this brain has tissue (not CSF, not outside the brain)
  and white matter (the template's probability map), away from other lesions. Each is drawn
  hyperintense like this scan's own lesions, with a partial-volume edge (the binary shape
  smoothed) and a faint texture; the label is the binary shape, so its volume is the shape's.
* **a second timepoint** that differs from the first as real ones do: its own noise, blur, smooth
  bias field and contrast (gamma), a different slice thickness (resampled through 3-5 mm slices
  and back), a small residual misalignment (at most ``misalignment_mm`` and
  ``misalignment_degrees``), and old lesions that shrink or fade - which are not new and carry no
  label.

Everything is drawn from ``numpy.random.default_rng((seed, anatomy_index, pair_index))``: a pair
does not depend on which other pairs were made, so a dataset can be resumed or extended.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from msnewlesions import template
from msnewlesions.errors import MSNewLesionsError
from msnewlesions.io import Volume, read_volume, write_volume, write_volume_atomically
from msnewlesions.preprocessing import registration
from msnewlesions.preprocessing.bias import n4_bias_correction
from msnewlesions.preprocessing.intensity import brain_bounding_box, crop, zscore
from msnewlesions.preprocessing.pipeline import PreprocessOptions
from msnewlesions.preprocessing.resolution import reslice
from msnewlesions.preprocessing.skullstrip import hdbet_brain_mask, nonzero_brain_mask

if TYPE_CHECKING:
    from msnewlesions.model.datasets import Case

logger = logging.getLogger(__name__)

_SIX_CONNECTED = ndimage.generate_binary_structure(3, 1)
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


@dataclass(frozen=True)
class SynthesisSettings:
    """How pairs are drawn; the defaults are those of the shipped model (see MODEL_CARD.md)."""

    max_new_lesions: int = 10
    #: Fraction of pairs without any new lesion.
    empty_fraction: float = 0.25
    min_lesion_voxels: int = 5
    max_shift_voxels: int = 6
    mirror_probability: float = 0.5
    #: The lesion's brightness: white matter + (scan's lesion level - white matter) x this factor.
    contrast_range: tuple[float, float] = (0.8, 1.7)
    edge_sigma_mm: float = 0.6
    texture: float = 0.06
    min_white_matter_probability: float = 0.35
    #: Voxels darker than this (x white-matter median) count as CSF; a lesion may cover few.
    csf_level: float = 0.7
    max_csf_fraction: float = 0.1
    fade_pair_probability: float = 0.5
    fade_lesion_probability: float = 0.4
    misalignment_mm: float = 0.5
    misalignment_degrees: float = 0.5
    reslice_probability: float = 0.6
    slice_thickness_mm: tuple[float, float] = (3.0, 5.0)
    noise_range: tuple[float, float] = (0.02, 0.07)
    blur_sigma_mm: tuple[float, float] = (0.0, 0.6)
    bias_amplitude: float = 0.12
    gamma_range: tuple[float, float] = (0.8, 1.25)
    crop_margin_mm: float = 5.0


@dataclass
class SyntheticPair:
    """A model-ready pair (z-scored, cropped MNI grid) and its new-lesion label."""

    baseline: Volume
    followup: Volume
    new_lesions: Volume
    brain_mask: Volume
    #: Old lesions that shrink or fade at the follow-up (not new: never in the label).
    faded_old_lesions: Volume
    #: The two acquisitions before z-scoring (skull-stripped scans, white matter about 1), as a
    #: tool like ``segment`` would be given them.
    baseline_scan: Volume
    followup_scan: Volume
    info: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Real inputs: lesion shapes and anatomy
# ---------------------------------------------------------------------------------------------


def _to_template_grid(volume: Volume, interpolation: str) -> Volume:
    """A volume already in MNI space, resampled onto the template's grid (identity transform)."""
    return registration.resample(volume, template.mni_t1(), sitk.Euler3DTransform(), interpolation)


def lesion_shapes(mask: Volume, source: str, min_voxels: int = 1) -> list[LesionShape]:
    """The 6-connected components of a binary mask on the template's grid, as lesion shapes."""
    components, _count = ndimage.label(mask.array > 0, structure=_SIX_CONNECTED)
    shapes = []
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        if box is None:
            continue
        shape_mask = components[box] == index
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
    components, _ = ndimage.label(candidates, structure=_SIX_CONNECTED)
    sizes = np.bincount(components.ravel())
    keep = sizes >= OLD_LESION_MIN_VOXELS
    keep[0] = False
    return keep[components]


def _finish_anatomy(
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
    return _finish_anatomy(name, image, brain, lesions)


def anatomy_from_native_scan(name: str, flair: str | Path, device: str = "cpu") -> Anatomy:
    """A raw FLAIR with skull: rigid to MNI, HD-BET, N4, as the pair pipeline does."""
    volume = read_volume(flair)
    mni = template.mni_t1()
    moving = sitk.Cast(volume.to_sitk(), sitk.sitkFloat32)
    to_mni = registration.register_rigid(mni.to_sitk(), moving, registration.HEAD_SETTINGS)
    head = registration.resample(volume, mni, to_mni.transform, "bspline")
    head = head.with_array(np.maximum(head.array, 0).astype(np.float32))
    brain_mask = hdbet_brain_mask(head, "fast", device)
    corrected = n4_bias_correction(head, brain_mask)
    return _finish_anatomy(name, corrected.array, brain_mask.array > 0, None)


def save_anatomy(anatomy: Anatomy, folder: str | Path) -> None:
    """Cache an anatomy as three NIfTI files and a JSON (written last: it marks completion)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_volume(anatomy.image, folder / f"{anatomy.name}_flair.nii.gz", np.float32)
    write_volume(anatomy.brain_mask, folder / f"{anatomy.name}_brain_mask.nii.gz", np.uint8)
    write_volume(anatomy.old_lesions, folder / f"{anatomy.name}_old_lesions.nii.gz", np.uint8)
    info = {"name": anatomy.name, "lesion_ratio": anatomy.lesion_ratio}
    (folder / f"{anatomy.name}.json").write_text(json.dumps(info) + "\n")


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


# ---------------------------------------------------------------------------------------------
# New lesions
# ---------------------------------------------------------------------------------------------


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


def _sample_shape(library: Sequence[LesionShape], rng: np.random.Generator) -> LesionShape:
    """A library lesion, drawn uniformly over log-volume so small and large ones both appear."""
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
        shape = _sample_shape(library, rng)
        mask, corner = shape.mask, np.array(shape.corner)
        if rng.random() < settings.mirror_probability:
            mask = mask[::-1]
            corner[0] = round(2 * midline - (corner[0] + mask.shape[0] - 1))
        corner = corner + rng.integers(-settings.max_shift_voxels, settings.max_shift_voxels + 1, 3)
        corner = corner - offset
        if np.any(corner < 0) or np.any(corner + mask.shape > np.array(brain.shape)):
            continue
        placement = Placement(
            np.ascontiguousarray(mask), tuple(int(c) for c in corner), shape.source
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
            * ndimage.gaussian_filter(rng.standard_normal(local.shape).astype(np.float32), 1.0)
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
    components, count = ndimage.label(old_lesions, structure=_SIX_CONNECTED)
    changed = np.zeros(image.shape, dtype=bool)
    if count == 0 or rng.random() >= settings.fade_pair_probability:
        return image, changed
    image = image.copy()
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        if box is None or rng.random() >= settings.fade_lesion_probability:
            continue
        box = tuple(slice(max(s.start - 2, 0), s.stop + 2) for s in box)
        lesion = components[box] == index
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


# ---------------------------------------------------------------------------------------------
# A second acquisition
# ---------------------------------------------------------------------------------------------


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
    info: dict,
) -> np.ndarray:
    """The same brain seen by another acquisition: slices, blur, bias, contrast and noise."""
    out = image.astype(np.float32)
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


# ---------------------------------------------------------------------------------------------
# Pairs
# ---------------------------------------------------------------------------------------------


def pair_rng(
    seed: int, anatomy_index: int, pair_index: int, stream: int = 0
) -> np.random.Generator:
    """The generator of one pair; ``stream`` 0 is the directly written pairs' (3-part seed)."""
    key = (seed, anatomy_index, pair_index) + ((stream,) if stream else ())
    return np.random.default_rng(key)


def synthesize_pair(
    anatomy: Anatomy,
    library: Sequence[LesionShape],
    rng: np.random.Generator,
    settings: SynthesisSettings | None = None,
    new_lesion_count: int | None = None,
    misalignment: bool = True,
) -> SyntheticPair:
    """One baseline / follow-up pair from one anatomy, on the anatomy's brain box, z-scored."""
    settings = settings or SynthesisSettings()
    box = brain_bounding_box(anatomy.brain_mask, settings.crop_margin_mm)
    offset = np.array([s.start for s in box])
    brain = anatomy.brain_mask.array[box] > 0
    image = anatomy.image.array[box]
    old = anatomy.old_lesions.array[box] > 0
    white_matter = template.mni_white_matter().array[box]
    if new_lesion_count is None:
        empty = rng.random() < settings.empty_fraction
        new_lesion_count = 0 if empty else int(rng.integers(1, settings.max_new_lesions + 1))
    placements = place_lesions(
        new_lesion_count, library, image, brain, white_matter, old, offset, rng, settings
    )
    followup, label, brightness = insert_lesions(
        image, placements, anatomy.lesion_ratio, rng, settings
    )
    followup, faded = fade_old_lesions(
        followup, old & ~ndimage.binary_dilation(label > 0), rng, settings
    )
    info: dict = {
        "anatomy": anatomy.name,
        "requested_new_lesions": new_lesion_count,
        "new_lesions": [
            {
                "source": p.source,
                "voxels": int(p.mask.sum()),
                "centre_index": [
                    round(float(c), 1) for c in np.array(p.corner) + ndimage.center_of_mass(p.mask)
                ],
                "brightness": round(b, 3),
            }
            for p, b in zip(placements, brightness, strict=True)
        ],
        "faded_old_lesion_voxels": int(faded.sum()),
        "baseline_acquisition": {},
        "followup_acquisition": {},
    }
    baseline_image = acquire(image, brain, rng, settings, info["baseline_acquisition"])
    followup_image = acquire(followup, brain, rng, settings, info["followup_acquisition"])
    if misalignment:
        followup_image, label, motion = misalign(followup_image, label, rng, settings)
        info["followup_motion"] = motion
    grid = crop(anatomy.image, box)
    brain_volume = grid.with_array(brain.astype(np.uint8))
    return SyntheticPair(
        baseline=zscore(grid.with_array(baseline_image), brain_volume),
        followup=zscore(grid.with_array(followup_image), brain_volume),
        new_lesions=grid.with_array(label.astype(np.uint8)),
        brain_mask=brain_volume,
        faded_old_lesions=grid.with_array(faded.astype(np.uint8)),
        baseline_scan=grid.with_array(baseline_image),
        followup_scan=grid.with_array(followup_image),
        info=info,
    )


# ---------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------

#: Patients whose scans are never used for training the default model: the two complete real
#: pairs, kept for honest real-pair figures; their four scans are the synthetic hold-out anatomy.
HOLDOUT_PATIENTS = ("longitudinal-patient01", "longitudinal-patient03")


def case_id(anatomy_name: str, pair_index: int, preprocessed: bool = False) -> str:
    kind = "preprocessed" if preprocessed else "synthetic"
    return f"{anatomy_name}-{kind}{pair_index:03d}"


#: The fourth seed component of the pairs that go through ``segment``'s preprocessing: a stream
#: of draws of its own, so that they are other pairs than the directly written ones.
PREPROCESSED_STREAM = 1


def as_segment_sees_it(
    pair: SyntheticPair, options: PreprocessOptions | None = None, match_slices: bool = True
) -> tuple[Volume, Volume, Volume, dict]:
    """The pair's two scans as ``segment`` hands them to the network, and the label there.

    The scans go through :func:`msnewlesions.segment.model_inputs` (registration, HD-BET, N4,
    crop, z-score and, with ``match_slices``, slice matching), as in ``segment``; the label (on
    the follow-up scan's grid) is resampled onto the resulting grid by nearest neighbour. A
    network trained on such pairs meets at training what ``segment`` gives it, not the cleaner
    directly z-scored pair. Returns baseline, follow-up, label and what was done (registration
    QC, slice matches).
    """
    from msnewlesions.segment import SegmentOptions, model_inputs

    segment_options = SegmentOptions(
        preprocess=options or PreprocessOptions(), match_slices=match_slices
    )
    inputs = model_inputs(pair.baseline_scan, pair.followup_scan, segment_options)
    preprocessed = inputs.preprocessed
    label = registration.resample(
        pair.new_lesions, preprocessed.brain_mask, preprocessed.followup_to_mni, "nearest"
    )
    info = {"qc": preprocessed.qc, "slice_matches": inputs.slice_matches}
    binary = label.with_array((label.array > 0).astype(np.uint8))
    return inputs.baseline, inputs.followup, binary, info


def write_synthetic_dataset(
    folder: str | Path,
    training: Sequence[tuple[int, Anatomy]],
    holdout: Sequence[tuple[int, Anatomy]],
    library: Sequence[LesionShape],
    pairs_per_anatomy: int,
    holdout_pairs_per_anatomy: int,
    seed: int,
    settings: SynthesisSettings | None = None,
    real_pairs: Sequence[Case] = (),
    preprocess: PreprocessOptions | None = None,
    preprocessed_pairs_per_anatomy: int = 0,
) -> Path:
    """An nnU-Net raw dataset of synthetic pairs; fold 0 validates on the hold-out anatomy.

    ``training`` and ``holdout`` pair each anatomy with its fixed index (part of each pair's
    seed). Cases already written are kept (their label, written last, marks them complete), so an
    interrupted run resumes. ``splits_final.json`` holds one split: train on the training
    anatomy's pairs, validate on the hold-out anatomy's pairs.

    ``real_pairs`` (cases of :mod:`msnewlesions.model.datasets`) join the training side as they
    are, preprocessed with ``preprocess`` and labelled with only their components that gain FLAIR
    signal (:func:`~msnewlesions.model.datasets.keep_gaining_components`).

    ``preprocessed_pairs_per_anatomy`` more pairs per training anatomy (``*-preprocessedNNN``,
    drawn from stream :data:`PREPROCESSED_STREAM`) are written as ``segment`` gives them to the
    network (:func:`as_segment_sees_it`): from the scans, through registration, HD-BET, N4 and
    slice matching, about half a minute each.
    """
    from msnewlesions.model import datasets, nnunet

    folder = Path(folder)
    images, labels = folder / "imagesTr", folder / "labelsTr"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    records_file = folder / "msnewlesions_cases.json"
    records = json.loads(records_file.read_text()) if records_file.exists() else {}
    split: dict[str, list[str]] = {"train": [], "val": []}
    jobs = [(a, n, "train", pairs_per_anatomy, 0) for a, n in training]
    jobs += [(a, n, "val", holdout_pairs_per_anatomy, 0) for a, n in holdout]
    jobs += [
        (a, n, "train", preprocessed_pairs_per_anatomy, PREPROCESSED_STREAM) for a, n in training
    ]
    for anatomy_index, anatomy, role, count, stream in jobs:
        for pair_index in range(count):
            name = case_id(anatomy.name, pair_index, preprocessed=stream == PREPROCESSED_STREAM)
            if records.get(name, {}).get("role") == "skipped":
                continue
            split[role].append(name)
            if (labels / f"{name}.nii.gz").exists() and name in records:
                continue
            rng = pair_rng(seed, anatomy_index, pair_index, stream)
            pair = synthesize_pair(anatomy, library, rng, settings)
            baseline, followup, label = pair.baseline, pair.followup, pair.new_lesions
            info = dict(pair.info)
            key = [seed, anatomy_index, pair_index] + ([stream] if stream else [])
            if stream == PREPROCESSED_STREAM:
                try:
                    baseline, followup, label, done = as_segment_sees_it(pair, preprocess)
                except MSNewLesionsError as error:
                    # segment would refuse these scans (its registration QC): not a pair that
                    # the network is ever given.
                    logger.warning("%s: skipped, preprocessing refused it: %s", name, error)
                    split[role].remove(name)
                    records[name] = {"role": "skipped", "reason": str(error), "seed": key}
                    records_file.write_text(json.dumps(records, indent=1, default=str) + "\n")
                    continue
                info["through_preprocessing"] = done
            write_volume_atomically(baseline, images / f"{name}_0000.nii.gz", np.float32)
            write_volume_atomically(followup, images / f"{name}_0001.nii.gz", np.float32)
            write_volume_atomically(label, labels / f"{name}.nii.gz", np.uint8)
            records[name] = info | {"role": role, "seed": key}
            records_file.write_text(json.dumps(records, indent=1, default=str) + "\n")
            logger.info(
                "%s (%s): %d new lesion(s), %d voxels",
                name,
                role,
                len(info["new_lesions"]),
                int(label.array.sum()),
            )
    for case in real_pairs:
        record = datasets.write_case(case, folder, True, preprocess or PreprocessOptions())
        if (labels / f"{case.case_id}.nii.gz").exists():
            split["train"].append(case.case_id)
            records[case.case_id] = records.get(case.case_id, {}) | record | {"role": "train"}
            records_file.write_text(json.dumps(records, indent=1, default=str) + "\n")
    nnunet.write_dataset_json(folder, len(split["train"]) + len(split["val"]))
    (folder / "splits_final.json").write_text(json.dumps([split], indent=2) + "\n")
    return folder
