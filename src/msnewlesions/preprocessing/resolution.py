"""Resolution matching: see both timepoints through the same slices before comparing them.

A follow-up acquired with thin slices shows small hyperintensities (old lesions, vessels, partial
volume at the ventricles) that a thick-slice baseline blurs away; compared naively, they look new.
Radiologists discount such differences; the network has to be shown pairs where they cannot occur.
So, per axis of the (common, model-ready) grid, the sharper scan is resliced through the slices of
the blurrier one:

* **sharpness along an axis** (:func:`axis_sharpness`): the mean power spectrum of the brain's
  intensity profiles along that axis, in the band 0.12-0.3 cycles/voxel (what 3-5 mm slices remove
  and 1 mm voxels keep), less the noise floor (the band above 0.4 cycles/voxel, where white noise
  is all that is left). The two timepoints show the same anatomy, so the ratio of their
  sharpness along an axis measures their relative resolution along it; a blur that is the same in
  every direction (a smoother scanner, a different reconstruction) changes all three axes alike.
* **a mismatch** is an axis whose sharpness ratio (log10, baseline over follow-up) differs from
  that of the axis where the two scans agree best by ``MISMATCH_LOG10_RATIO`` or more (2.8 x in
  power: 3 mm slices against 1 mm ones do, two acquisitions with the same slices do not). The
  reference axis takes out what all axes share: a blur in every direction, or the fine texture
  that thick slices along one axis also smooth in-plane.
* **matching**: the sharper scan is resliced along that axis (:func:`reslice`: a Gaussian slice
  profile, through-plane sampling and back) through the thickness, searched on a grid of 0.25 mm,
  whose sharpness is nearest the blurrier scan's. Nothing else changes; a matched pair is z-scored
  again over the brain, as the network expects.

This helps specificity, not sensitivity: a new lesion seen through thick slices is fainter, and a
small one may go undetected, as it would in a pair acquired that way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from msnewlesions.io import Volume
from msnewlesions.preprocessing.intensity import zscore

#: Frequency band (cycles/voxel) that thick slices remove and thin ones keep.
SHARPNESS_BAND = (0.12, 0.3)
#: Frequencies above this carry only noise (its floor is subtracted).
NOISE_BAND_START = 0.4
#: Sharpness ratio (log10) beyond which the two timepoints' slices differ along an axis.
MISMATCH_LOG10_RATIO = 0.45
#: Slice thicknesses tried when matching (mm).
THICKNESS_GRID_MM = tuple(float(t) for t in np.arange(1.5, 7.01, 0.25))
#: Length (voxels) of the intensity profiles whose spectra are measured.
WINDOW = 32
#: Profiles used per axis at most (a fixed, even subsample).
MAX_LINES = 40000


@dataclass(frozen=True)
class SliceMatch:
    """One axis along which one timepoint was resliced to match the other."""

    axis: int
    resliced: str  # "baseline" or "followup"
    thickness_mm: float
    log10_sharpness_ratio: float  # baseline over follow-up, before matching

    def as_dict(self) -> dict:
        return {
            "axis": self.axis,
            "resliced": self.resliced,
            "thickness_mm": self.thickness_mm,
            "log10_sharpness_ratio": round(self.log10_sharpness_ratio, 3),
        }


def reslice(
    image: np.ndarray, axis: int, thickness_mm: float, spacing_mm: float = 1.0
) -> np.ndarray:
    """``image`` seen through slices ``thickness_mm`` thick along ``axis``, back on its grid.

    A Gaussian slice profile (full width at half maximum = the thickness), sampled once per slice
    (linear) and interpolated back to the original voxels (cubic); the shape is kept.
    """
    thickness = thickness_mm / spacing_mm  # in voxels
    sigma = thickness / 2.355
    blurred = ndimage.gaussian_filter1d(image.astype(np.float32), sigma, axis=axis)
    zoom = [1.0] * image.ndim
    zoom[axis] = 1.0 / thickness
    thick = ndimage.zoom(blurred, zoom, order=1, grid_mode=True, mode="nearest")
    back = [1.0] * image.ndim
    back[axis] = image.shape[axis] / thick.shape[axis]
    restored = ndimage.zoom(thick, back, order=3, grid_mode=True, mode="nearest")
    out = np.zeros_like(image, dtype=np.float32)
    common = tuple(slice(0, min(a, b)) for a, b in zip(image.shape, restored.shape, strict=True))
    out[common] = restored[common]
    return out


def _inside(brain: np.ndarray) -> np.ndarray:
    """The brain without its edge: skull stripping cuts every scan sharply there, thick slices or
    not, and its step would swamp the fine detail that is measured."""
    return ndimage.binary_erosion(brain, iterations=2)


def _brain_lines(image: np.ndarray, inside: np.ndarray, axis: int) -> np.ndarray:
    """Profiles of ``WINDOW`` voxels along ``axis`` that lie wholly in ``inside``."""
    lines = np.moveaxis(image, axis, -1)
    inside = np.moveaxis(inside, axis, -1)
    length = lines.shape[-1]
    if length < WINDOW:
        return np.zeros((0, WINDOW), dtype=np.float32)
    cumulative = np.concatenate(
        [np.zeros((*inside.shape[:-1], 1), dtype=np.int32), np.cumsum(inside, -1, dtype=np.int32)],
        axis=-1,
    )
    windows = []
    for start in range(0, length - WINDOW + 1, WINDOW // 2):
        whole = cumulative[..., start + WINDOW] - cumulative[..., start] == WINDOW
        windows.append(lines[..., start : start + WINDOW][whole])
    selected = np.concatenate(windows, axis=0)
    if len(selected) > MAX_LINES:
        selected = selected[:: int(np.ceil(len(selected) / MAX_LINES))]
    return selected.astype(np.float32)


def _band_power(lines: np.ndarray) -> float:
    if len(lines) == 0 or lines.shape[-1] < 16:
        return 0.0
    centred = lines - lines.mean(axis=-1, keepdims=True)
    power = (np.abs(np.fft.rfft(centred * np.hanning(lines.shape[-1]), axis=-1)) ** 2).mean(0)
    frequency = np.fft.rfftfreq(lines.shape[-1])
    band = power[(frequency > SHARPNESS_BAND[0]) & (frequency < SHARPNESS_BAND[1])].mean()
    floor = power[frequency > NOISE_BAND_START].mean()
    return float(max(band - floor, 0.0))


def axis_sharpness(image: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Noise-corrected power of ``image``'s fine detail along each axis, inside ``brain``."""
    inside = _inside(brain)
    return np.array([_band_power(_brain_lines(image, inside, axis)) for axis in range(3)])


def _log10_ratio(a: float, b: float) -> float:
    tiny = 1e-12
    return float(np.log10(max(a, tiny) / max(b, tiny)))


def _matching_thickness(sharp_lines: np.ndarray, target: float, spacing_mm: float) -> float:
    """The grid thickness through which the sharper scan's profiles get the target sharpness."""
    best, best_error = THICKNESS_GRID_MM[0], np.inf
    for thickness in THICKNESS_GRID_MM:
        if thickness <= spacing_mm:
            continue
        resliced = reslice(sharp_lines, -1, thickness, spacing_mm)
        error = abs(_log10_ratio(_band_power(resliced), target))
        if error < best_error:
            best, best_error = thickness, error
    return best


def match_resolution(
    baseline: Volume, followup: Volume, brain_mask: Volume
) -> tuple[Volume, Volume, list[SliceMatch]]:
    """The pair with, along each mismatched axis, the sharper scan resliced like the other.

    Both volumes share ``brain_mask``'s grid (the model-ready, z-scored images). Returns the two
    volumes (z-scored again over the brain when anything changed) and what was done; a pair
    without mismatch comes back as given.
    """
    brain = brain_mask.array > 0
    inside = _inside(brain)
    images = {
        "baseline": baseline.array.astype(np.float32),
        "followup": followup.array.astype(np.float32),
    }
    spacing = baseline.spacing
    matches: list[SliceMatch] = []
    while len(matches) < 3:
        ratios = np.array(
            [
                _log10_ratio(
                    _band_power(_brain_lines(images["baseline"], inside, axis)),
                    _band_power(_brain_lines(images["followup"], inside, axis)),
                )
                for axis in range(3)
            ]
        )
        # What all three axes share (a blur in every direction, fine texture smoothed through
        # thick slices along any axis) is not a difference of slices: the axis where the two
        # scans agree best is the reference.
        excess = ratios - ratios[np.argmin(np.abs(ratios))]
        excess[[match.axis for match in matches]] = 0  # each axis is matched once at most
        axis = int(np.argmax(np.abs(excess)))
        if abs(excess[axis]) < MISMATCH_LOG10_RATIO:
            break
        # The strongest mismatch first: reslicing one scan along an axis also smooths its fine
        # texture in-plane, which can hide (or feign) a weaker mismatch until it is matched.
        sharper, blurrier = (
            ("baseline", "followup") if excess[axis] > 0 else ("followup", "baseline")
        )
        target = _band_power(_brain_lines(images[blurrier], inside, axis))
        lines = _brain_lines(images[sharper], inside, axis)
        thickness = _matching_thickness(lines, target, float(spacing[axis]))
        images[sharper] = reslice(images[sharper], axis, thickness, float(spacing[axis]))
        matches.append(SliceMatch(axis, sharper, thickness, float(ratios[axis])))
    if not matches:
        return baseline, followup, []
    return (
        zscore(baseline.with_array(np.where(brain, images["baseline"], 0)), brain_mask),
        zscore(followup.with_array(np.where(brain, images["followup"], 0)), brain_mask),
        matches,
    )
