"""How synthetic pairs are drawn: one value, :class:`SynthesisSettings`."""

from __future__ import annotations

from dataclasses import dataclass


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
