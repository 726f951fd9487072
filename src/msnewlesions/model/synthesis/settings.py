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
    #: How a lesion shape is drawn from the library: ``"log-uniform"`` over its volumes (large and
    #: small alike; the shipped model) or ``"library"`` (as often as the library holds such
    #: sizes: with real change shapes, small ones dominate as in real follow-ups).
    shape_sampling: str = "log-uniform"
    #: Enlarging old lesions (:func:`~msnewlesions.model.synthesis.changes.grow_old_lesions`):
    #: the share of pairs with any, each old lesion's chance, at most this many per pair, the
    #: largest rim (mm; thinner rims are likelier), the share grown as a lobe (one side) instead
    #: of all round. Real changes are small (open_ms_data's 13 change masks: median 44 mm3,
    #: quartiles 22 / 104 mm3); a first draw of 1-4 mm rims, alike, gave a median of 152 mm3.
    enlarging_pair_probability: float = 0.0
    enlarging_lesion_probability: float = 0.2
    max_enlarging_lesions: int = 4
    enlarging_mm: float = 4.0
    lobe_probability: float = 0.5
    #: A grown part larger than this (voxels, mm3 at 1 mm) is cut to a lobe, else dropped.
    max_grown_voxels: int = 400
    #: Whether the grown part of an enlarging lesion is labelled (open_ms_data's experts label
    #: new and enlarging lesions) or drawn and not labelled (MSSEG-2: new lesions only).
    label_enlarging: bool = True
    #: Per-tissue contrast change of each acquisition: white matter, grey matter and CSF (the
    #: template's probability maps) each scaled by 1 + U(-x, x), x this value; 0: off.
    tissue_contrast: float = 0.0
    #: Signal in the CSF at one acquisition: a protocol whose inversion does not null the fluid
    #: fully, or inflow. With this probability per acquisition, voxels darker than ``csf_level``
    #: gain up to ``csf_signal`` (x white-matter median, scaled by how dark they are) times a
    #: smooth patchy field (:func:`~msnewlesions.model.synthesis.acquisition.csf_signal`); not a
    #: lesion, not labelled. Real pairs: open_ms_data's patient03 (two protocols) gains more than
    #: 1.5 z in 15 % of its baseline CSF-dark voxels, patient01 in 5 %. 0: off.
    csf_signal_probability: float = 0.0
    csf_signal: float = 1.5
    csf_signal_smoothness_mm: float = 8.0
    #: Pairs made through ``segment``'s preprocessing are acquired on a scanner's own grid
    #: (:func:`~msnewlesions.model.synthesis.acquisition.acquire_natively`): the head at a pose
    #: (rotation up to these degrees about x, y, z; shift up to ``pose_mm``), in-plane voxels,
    #: slices with a gap along axis x, y or z by these probabilities, or a 3-D acquisition.
    native_acquisition: bool = False
    pose_degrees: tuple[float, float, float] = (12.0, 4.0, 4.0)
    pose_mm: float = 8.0
    in_plane_mm: tuple[float, float] = (0.5, 1.0)
    slice_gap_mm: tuple[float, float] = (0.0, 1.0)
    slice_axis_probabilities: tuple[float, float, float] = (0.05, 0.1, 0.85)
    three_d_probability: float = 0.15


#: The synthesis of model v2: real change sizes, enlarging lesions labelled (open_ms_data's
#: convention), per-tissue contrast changes between visits, signal left in the CSF at some
#: acquisitions (since 2026-12-02: model v3's pairs), and (for the pairs made through
#: ``segment``'s preprocessing) each visit acquired on a scanner's own grid at its own pose.
REALISTIC = SynthesisSettings(
    shape_sampling="library",
    enlarging_pair_probability=0.5,
    tissue_contrast=0.15,
    csf_signal_probability=0.3,
    native_acquisition=True,
)
