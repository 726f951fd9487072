"""What preprocessing measures about a pair, what it refuses, and what it flags for a reader.

:class:`QualityReport` is the one typed record of it: ``qc.json`` is its
:meth:`~QualityReport.as_dict`, ``summary.json`` holds the same under ``"qc"``, and the report
reads its rows from the fields, so a renamed figure is a type error, not a silently missing row.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk

from msnewlesions import template
from msnewlesions.errors import MSNewLesionsError
from msnewlesions.io import Volume
from msnewlesions.metrics import dice
from msnewlesions.preprocessing import contrast, registration

#: Below this Pearson correlation of the two registered timepoints inside the brain, the pair is
#: refused: a follow-up that does not match its baseline (other patient, noise, failed alignment).
#: Real pairs measured here: 0.93 (same protocol) and 0.68 (two protocols); FLAIR vs noise: ~0.
MIN_TIMEPOINT_CORRELATION = 0.30
#: The same floor right after the coarse head registration, for the two heads on the MNI grid
#: inside the template's brain: a follow-up that is no image of this head (noise, another body
#: part) is refused there, before the costly steps. Measured: the real pairs 0.96 (patient01)
#: and 0.84 (patient03, two protocols), the example pairs 0.96-0.97, pure noise 0.00.
MIN_HEAD_CORRELATION = MIN_TIMEPOINT_CORRELATION
#: Below this, the pair is processed but the QC flags it as borderline.
WARN_TIMEPOINT_CORRELATION = 0.50
#: Overlap of the brain mask with the template's brain after the rigid MNI alignment. A rigid fit
#: leaves head-size differences, so real brains reach about 0.8-0.9; below 0.6 it has failed.
MIN_TEMPLATE_DICE = 0.60
WARN_TEMPLATE_DICE = 0.75
#: Above this estimated shift between the two visits' edges (mm, :func:`edge_alignment`), the QC
#: warns. Measured on the real pairs as registered by the pipeline (benchmarks/
#: preprocess_open_ms_data.py): 0.30 mm (patient01) and 0.15 mm (patient03); the same pairs with
#: the follow-up moved a further 0.5 mm along x: 0.60 and 0.58 mm.
#: Half a millimetre is where an old lesion's rim starts to look like enlargement.
WARN_EDGE_RESIDUAL_MM = 0.5
#: The share of the template's brain inside a scan's field of view once registered
#: (:func:`field_of_view_coverage`). Refused below this, warned below the next; the measured
#: figures are in benchmarks/input_checks.py's output (see the README's table of hostile inputs).
MIN_BRAIN_COVERAGE = 0.50
WARN_BRAIN_COVERAGE = 0.90
#: Below this edge alignment (:func:`edge_alignment`) of the two registered visits, the pair is
#: refused as two different people (or a registration that failed): the folds of one brain meet
#: their own edges, another brain's do not. Measured by benchmarks/input_checks.py on the real
#: pairs: one person's visits 0.954 (patient01) and 0.958 (patient03, two protocols); one
#: patient's baseline with another's follow-up (6 cross pairs of patients 01, 03, 09, 20) 0.58-0.66,
#: where the visits' correlation in the brain (0.21-0.31) does not always fall below
#: :data:`MIN_TIMEPOINT_CORRELATION`.
MIN_SAME_HEAD_EDGE_ALIGNMENT = 0.80
#: Plausible brain volumes in ml (a 2-D FLAIR may not cover the whole brain: the low end is wide).
BRAIN_VOLUME_RANGE_ML = (300.0, 2500.0)


@dataclass
class QualityReport:
    """The quality figures of one preprocessed pair (``qc.json``)."""

    timepoint_correlation_in_brain: float
    brain_mask_template_dice: float
    brain_volume_ml: float
    #: Mean distance (mm) the brain-only refinement moved brain points from the head fit.
    registration_refinement_shift_mm: float
    #: How parallel the two visits' edges are in the brain after registration (1: all; 1/3:
    #: unrelated) and the shift (mm, per axis of the MNI grid) that would align them best;
    #: None where they align best more than a voxel away (see :func:`edge_alignment`).
    edge_alignment: float
    edge_residual_shift_mm: list[float] | None
    #: ``baseline_in``, ``followup_in`` (the native scans) and ``out`` (the model-ready grid).
    voxel_size_mm: dict[str, list[float]]
    shape: dict[str, list[int]]
    warnings: list[str]
    #: ``"HD-BET"`` or ``"scans (skull-stripped)"``.
    brain_mask_source: str = "HD-BET"
    #: The two heads' correlation inside the template's brain after the coarse registration.
    head_correlation_in_template_brain: float | None = None
    #: Per scan (``baseline``, ``follow-up``), what :func:`check_scan_on_template` measured: its
    #: grey/white and CSF/white contrast and the share of the template's brain it shows.
    scan_on_template: dict[str, dict[str, float]] = field(default_factory=dict)
    #: The two heads' correlation in the template's grey and white matter (:mod:`.contrast`).
    tissue_correlation_of_visits: float | None = None
    #: Per scan, the fraction of its non-zero region inside the template's brain (see skullstrip).
    nonzero_inside_template_brain: dict[str, float] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    seconds_total: float = 0.0
    #: Set where files were read (``preprocess_files``): the input paths and software versions.
    inputs: dict[str, str] | None = None
    versions: dict[str, str] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The figures as ``qc.json`` holds them (``inputs`` and ``versions`` only when set)."""
        record = asdict(self)
        for optional in ("inputs", "versions"):
            if record[optional] is None:
                del record[optional]
        return record


def correlation_in(mask: np.ndarray, first: np.ndarray, second: np.ndarray) -> float:
    """Pearson correlation of two images over ``mask``'s voxels (0 when either is constant)."""
    inside = mask > 0
    x = first[inside].astype(np.float64)
    y = second[inside].astype(np.float64)
    if x.std() == 0 or y.std() == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def refinement_shift_mm(
    before: sitk.Transform, after: sitk.Transform, mask_on_baseline: Volume
) -> float:
    """Mean distance in mm between where two follow-up->baseline transforms send brain points."""
    points = mask_on_baseline.index_to_world(np.argwhere(mask_on_baseline.array > 0)[::50])
    if len(points) == 0:
        return 0.0
    moved_before = registration.transform_points_ras(before, points)
    moved_after = registration.transform_points_ras(after, points)
    return float(np.linalg.norm(moved_before - moved_after, axis=1).mean())


@dataclass(frozen=True)
class EdgeAlignment:
    """See :func:`edge_alignment`."""

    score: float
    residual_shift_mm: list[float] | None


def _edge_score(first: np.ndarray, second: np.ndarray) -> float:
    dot = (first * second).sum(axis=0)
    norms = (first**2).sum(axis=0) * (second**2).sum(axis=0)
    total = float(norms.sum())
    return float((dot**2).sum()) / total if total > 0 else 0.0


def edge_alignment(
    baseline: Volume, followup: Volume, brain_mask: Volume, erosion_voxels: int = 3
) -> EdgeAlignment:
    """How well the two registered visits' edges agree inside the brain, whatever their contrast.

    ``score``: the mean squared cosine of the angle between the two images' intensity gradients,
    weighted by their magnitudes (1 when every edge is parallel, 1/3 for unrelated images; the
    square makes it blind to contrast inversions). ``residual_shift_mm``: per grid axis, where
    that score peaks, from a parabola through the score at the follow-up moved -1, 0 and +1
    voxel: the shift still left between the two visits (a registration check independent of the
    registration's own metric); None when the score is not highest near zero along some axis
    (the visits are off by a voxel or more). Measured on the real pairs (see
    :data:`WARN_EDGE_RESIDUAL_MM`): it reads back a known shift of the follow-up of 0.5 and 1.0
    voxel as 0.5-0.6 and 1.2 voxel. Inputs share one grid (the preprocessed pair).
    """
    from scipy import ndimage

    inside = ndimage.binary_erosion(brain_mask.array > 0, iterations=erosion_voxels)
    if not inside.any():
        return EdgeAlignment(0.0, None)
    box = tuple(slice(max(int(i.min()) - 2, 0), int(i.max()) + 3) for i in np.nonzero(inside))

    def gradients(volume: Volume) -> np.ndarray:
        smooth = ndimage.gaussian_filter(volume.array[box].astype(np.float32), 1.0)
        return np.stack(np.gradient(smooth))

    base, follow = gradients(baseline), gradients(followup)
    core = inside[box]
    centre = _edge_score(base[:, core], follow[:, core])
    shifts: list[float] = []
    for axis in range(3):
        before, after = (
            _edge_score(base[:, core], np.roll(follow, step, axis=axis + 1)[:, core])
            for step in (-1, 1)
        )
        curvature = before - 2 * centre + after
        if curvature >= 0:
            return EdgeAlignment(round(centre, 4), None)
        offset = 0.5 * (before - after) / curvature
        if abs(offset) > 1:
            return EdgeAlignment(round(centre, 4), None)
        shifts.append(round(float(offset * baseline.spacing[axis]), 3))
    return EdgeAlignment(round(centre, 4), shifts)


def field_of_view_coverage(scan: Volume, scan_to_mni: sitk.Transform) -> float:
    """The share of the template's brain inside the scan's field of view once registered
    (``scan_to_mni`` maps a template point to the scan's point, as the pipeline's transforms do)."""
    grid = template.mni_brain_mask()
    ones = scan.with_array(np.ones(scan.shape, dtype=np.uint8))
    seen = registration.resample(ones, grid, scan_to_mni, "nearest").array > 0
    return round(float(seen[grid.array > 0].mean()), 4)


def check_scan_on_template(
    head_mni: Volume, coverage: float, name: str
) -> tuple[dict[str, float], list[str]]:
    """Whether a scan registered onto the template is a FLAIR that shows the brain: refuses one
    that is plainly not (a T1-, T2- or PD-weighted contrast, :mod:`.contrast`; a field of view
    that misses most of the brain, ``coverage`` from :func:`field_of_view_coverage`), returns
    the figures and the warnings for a doubtful one."""
    measured = contrast.tissue_contrast(head_mni)
    figures = {
        "grey_to_white": measured.grey_to_white,
        "csf_to_white": measured.csf_to_white,
        "template_brain_covered": coverage,
    }
    if coverage < MIN_BRAIN_COVERAGE:
        raise MSNewLesionsError(
            f"{name} shows only {coverage:.0%} of the brain once aligned to the MNI template "
            f"(at least {MIN_BRAIN_COVERAGE:.0%} needed): most of the head is outside its field "
            "of view, or its header's orientation is wrong; give a scan of the whole brain."
        )
    warnings = contrast.check_contrast(measured, name)
    if coverage < WARN_BRAIN_COVERAGE:
        warnings.append(
            f"{name} shows {coverage:.0%} of the brain: lesions outside its field of view "
            "cannot be found"
        )
    return figures, warnings


def _rounded(values: np.ndarray) -> list[float]:
    return [round(float(v), 4) for v in values]


def measure_quality(
    native: tuple[Volume, Volume],
    preprocessed: tuple[Volume, Volume],
    brain_mask: Volume,
    brain_mask_mni: Volume,
    refinement_shift: float,
) -> QualityReport:
    """The figures and warnings of a pair: ``native`` and ``preprocessed`` are (baseline,
    follow-up); ``brain_mask`` is on the preprocessed grid, ``brain_mask_mni`` on the template's."""
    (baseline_native, followup_native), (baseline, followup) = native, preprocessed
    correlation = correlation_in(brain_mask.array, baseline.array, followup.array)
    template_dice = dice(brain_mask_mni.array, template.mni_brain_mask().array)
    brain_ml = float(brain_mask.array.sum() * brain_mask.voxel_volume_mm3 / 1000.0)
    warnings: list[str] = []
    if correlation < WARN_TIMEPOINT_CORRELATION:
        warnings.append(
            f"the two timepoints correlate weakly inside the brain ({correlation:.2f}); "
            "check the registration in the report"
        )
    if template_dice < WARN_TEMPLATE_DICE:
        warnings.append(
            f"the brain overlaps the MNI template's brain only {template_dice:.2f} (Dice); "
            "check the orientation of the inputs"
        )
    edges = edge_alignment(baseline, followup, brain_mask)
    if edges.residual_shift_mm is None:
        warnings.append(
            "the two timepoints' edges align best a voxel or more away from the registration; "
            "check the registration in the report"
        )
    elif float(np.linalg.norm(edges.residual_shift_mm)) > WARN_EDGE_RESIDUAL_MM:
        warnings.append(
            f"the two timepoints' edges are still {np.linalg.norm(edges.residual_shift_mm):.2f} "
            f"mm apart after registration (more than {WARN_EDGE_RESIDUAL_MM} mm); a misaligned "
            "rim can look like a new or enlarging lesion: check the registration in the report"
        )
    low, high = BRAIN_VOLUME_RANGE_ML
    if not low <= brain_ml <= high:
        warnings.append(f"brain volume {brain_ml:.0f} ml is outside {low:.0f}-{high:.0f} ml")
    return QualityReport(
        timepoint_correlation_in_brain=round(correlation, 4),
        brain_mask_template_dice=round(template_dice, 4),
        brain_volume_ml=round(brain_ml, 1),
        registration_refinement_shift_mm=round(refinement_shift, 3),
        edge_alignment=edges.score,
        edge_residual_shift_mm=edges.residual_shift_mm,
        voxel_size_mm={
            "baseline_in": _rounded(baseline_native.spacing),
            "followup_in": _rounded(followup_native.spacing),
            "out": _rounded(baseline.spacing),
        },
        shape={
            "baseline_in": list(baseline_native.shape),
            "followup_in": list(followup_native.shape),
            "out": list(baseline.shape),
        },
        warnings=warnings,
    )


def _not_registered(correlation: float, where: str) -> MSNewLesionsError:
    return MSNewLesionsError(
        f"the follow-up could not be registered to the baseline: after registration they "
        f"correlate {correlation:.2f} {where} (at least {MIN_TIMEPOINT_CORRELATION} expected); "
        "check that both scans are FLAIRs of the same patient."
    )


def enforce_head_alignment(baseline_head_mni: Volume, followup_head_mni: Volume) -> float:
    """The two heads' correlation inside the template's brain after the coarse registration;
    refuses the pair at once below :data:`MIN_HEAD_CORRELATION`."""
    brain = template.mni_brain_mask().array
    correlation = correlation_in(brain, baseline_head_mni.array, followup_head_mni.array)
    if correlation < MIN_HEAD_CORRELATION:
        raise _not_registered(correlation, "inside the template's brain")
    return correlation


def enforce_quality(qc: QualityReport) -> None:
    """Refuse, in one sentence that says what to check, a pair whose figures show a failure."""
    correlation = qc.timepoint_correlation_in_brain
    if correlation < MIN_TIMEPOINT_CORRELATION:
        raise _not_registered(correlation, "inside the brain")
    if qc.edge_alignment < MIN_SAME_HEAD_EDGE_ALIGNMENT:
        raise MSNewLesionsError(
            "the baseline and the follow-up do not look like scans of one person: after "
            f"registration their edges align {qc.edge_alignment:.2f} (one person's visits: above "
            f"{MIN_SAME_HEAD_EDGE_ALIGNMENT}); check that both are FLAIRs of the same patient."
        )
    if qc.brain_mask_template_dice < MIN_TEMPLATE_DICE:
        raise MSNewLesionsError(
            "the baseline could not be aligned to the MNI template "
            f"(brain overlap Dice {qc.brain_mask_template_dice:.2f}, "
            f"at least {MIN_TEMPLATE_DICE} expected); check that it is a head FLAIR with a "
            "correct orientation in its header."
        )
    if qc.brain_volume_ml < BRAIN_VOLUME_RANGE_ML[0] / 3:
        raise MSNewLesionsError(
            f"the brain mask holds only {qc.brain_volume_ml:.0f} ml; check the inputs."
        )
