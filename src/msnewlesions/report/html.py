"""``report.html``: one self-contained page (images embedded) to verify a segmentation offline.

The page opens with the verdict (number of new lesions, total volume) and the preprocessing QC
figures, with a visible warning for any borderline check; then, for each new lesion, a row of
axial views through its centre on the registered, preprocessed images: baseline, follow-up, and
follow-up with the lesion outlined, and the registration check there (the baseline's edges on the
follow-up), with its volume and position. A registration check of the whole pair (the same edge
overlay through the largest lesions' slices) follows the QC figures. A patient without new lesions
gets a page that says so plainly. Every finding needs expert review: the page says that too.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence

import numpy as np

from msnewlesions.io import Volume
from msnewlesions.postprocessing import Lesion
from msnewlesions.preprocessing.quality import QualityReport
from msnewlesions.report.viewer import viewer_section
from msnewlesions.report.wording import findings_sentence
from msnewlesions.segment import SegmentationSummary

#: Half the side of the square shown around each lesion, in mm (the grid is 1 mm).
VIEW_HALF_WIDTH_MM = 40

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#1d1d1f;
max-width:1100px}
h1{font-size:1.6rem;margin-bottom:.2rem} .muted{color:#666}
.verdict{font-size:1.3rem;padding:.8rem 1rem;border-radius:8px;background:#eef5ff;margin:1rem 0}
.none{background:#eefaf0}
.warning{background:#fff4e5;border-left:5px solid #f0a020;padding:.6rem 1rem;margin:.5rem 0}
table.qc{border-collapse:collapse;margin:.5rem 0 1.5rem}
table.qc td{padding:.2rem 1rem .2rem 0}
.lesion{margin:1.2rem 0;padding-top:.6rem;border-top:1px solid #ddd}
.views{display:flex;gap:.6rem;flex-wrap:wrap} .views figure{margin:0}
.views img{width:240px;height:240px;image-rendering:pixelated;border-radius:4px}
.views img.check{width:360px;height:360px}
figcaption{text-align:center;font-size:.85rem;color:#444}
"""


def _png(slice_array: np.ndarray, outline: np.ndarray | None = None) -> str:
    """A base64 PNG of one axial slice of a RAS array: anterior at the top, the patient's right
    on the viewer's right (neurological convention)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(2.4, 2.4), dpi=100)
    FigureCanvasAgg(figure)
    axis = figure.add_axes((0, 0, 1, 1))
    axis.imshow(np.rot90(slice_array), cmap="gray", vmin=-2.5, vmax=4.0, interpolation="nearest")
    if outline is not None and outline.any():
        axis.contour(
            np.rot90(outline.astype(float)), levels=[0.5], colors="#ff3b30", linewidths=1.2
        )
    axis.set_axis_off()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


#: The baseline's edges drawn on the follow-up: its gradient magnitude (after a 1-voxel Gaussian)
#: at this percentile of the slice's brain voxels.
EDGE_PERCENTILE = 85.0


def _edges_png(followup_slice: np.ndarray, baseline_slice: np.ndarray, inches: float = 2.4) -> str:
    """A base64 PNG of the follow-up with the baseline's edges drawn on it: where the two visits
    are aligned, the lines run along the follow-up's own edges; a shift shows as a rim."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(baseline_slice.astype(np.float32), 1.0)
    magnitude = np.hypot(*np.gradient(smooth))
    inside = baseline_slice != 0
    figure = Figure(figsize=(inches, inches), dpi=100)
    FigureCanvasAgg(figure)
    axis = figure.add_axes((0, 0, 1, 1))
    axis.imshow(np.rot90(followup_slice), cmap="gray", vmin=-2.5, vmax=4.0, interpolation="nearest")
    if inside.sum() > 10:
        level = float(np.percentile(magnitude[inside], EDGE_PERCENTILE))
        if level > 0:
            axis.contour(np.rot90(magnitude), levels=[level], colors="#00c8ff", linewidths=0.6)
    axis.set_axis_off()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def registration_check_slices(baseline: Volume, lesions: Sequence[Lesion]) -> list[int]:
    """Axial slices for the pair's registration check: those of the (up to) three largest
    lesions, else three through the brain (at 35, 50 and 65 % of its height)."""
    if lesions:
        largest = sorted(lesions, key=lambda lesion: -lesion.volume_mm3)[:3]
        centres = baseline.world_to_index(np.array([x.centroid_mni_mm for x in largest]))
        picked = sorted({int(np.clip(round(c[2]), 0, baseline.shape[2] - 1)) for c in centres})
        return picked
    heights = np.nonzero(baseline.array.any(axis=(0, 1)))[0]
    if len(heights) == 0:
        return [baseline.shape[2] // 2]
    low, high = int(heights.min()), int(heights.max())
    return sorted({round(low + f * (high - low)) for f in (0.35, 0.5, 0.65)})


def _window(volume: Volume, centre_index: np.ndarray) -> tuple[slice, slice, int]:
    half = round(VIEW_HALF_WIDTH_MM / float(volume.spacing[0]))
    i, j, k = (round(float(v)) for v in centre_index)
    k = min(max(k, 0), volume.shape[2] - 1)
    return (
        slice(max(i - half, 0), min(i + half, volume.shape[0])),
        slice(max(j - half, 0), min(j + half, volume.shape[1])),
        k,
    )


def lesion_views(
    lesion: Lesion, baseline: Volume, followup: Volume, labels: Volume
) -> tuple[str, str, str, str]:
    """Four base64 PNGs through the lesion's centre: baseline, follow-up, follow-up + outline,
    and the registration check there (the baseline's edges on the follow-up)."""
    centre = baseline.world_to_index(np.array([lesion.centroid_mni_mm]))[0]
    rows, columns, k = _window(baseline, centre)
    region = (rows, columns, k)
    outline = labels.array[region] == lesion.lesion_id
    return (
        _png(baseline.array[region]),
        _png(followup.array[region]),
        _png(followup.array[region], outline),
        _edges_png(followup.array[region], baseline.array[region]),
    )


#: The preprocessed (MNI) grid's axes, in the words of a reader.
_AXES = ("x (left-right)", "y (front-back)", "z (across axial slices)")


def slice_matching_text(summary: SegmentationSummary) -> str:
    """What slice matching did, in one line."""
    if not summary.slice_matching:
        return "off (--no-slice-matching)"
    matches = summary.slice_matches
    if not matches:
        return "not needed: the scans are equally sharp along every axis"
    return "; ".join(
        f"{'baseline' if m['resliced'] == 'baseline' else 'follow-up'} seen through "
        f"{m['thickness_mm']:g} mm slices along {_AXES[m['axis']]}, like the other scan"
        for m in matches
    )


def lesion_rule_text(summary: SegmentationSummary) -> str:
    """The post-processing that made the marks, in one line."""
    text = (
        f"network probability {summary.threshold:g} or more, larger than "
        f"{summary.min_lesion_mm3:g} mm3"
    )
    if summary.min_depth_mm > 0:
        text += f", reaching {summary.min_depth_mm:g} mm or more inside the brain"
    return text


def _residual_text(qc: QualityReport) -> str:
    shift = qc.edge_residual_shift_mm
    if shift is None:
        return "a voxel or more: check the images below"
    return f"{np.linalg.norm(shift):.2f} ({', '.join(f'{v:+.2f}' for v in shift)})"


def _qc_rows(summary: SegmentationSummary) -> str:
    qc = summary.qc
    items = [
        ("Timepoint correlation in the brain", qc.timepoint_correlation_in_brain),
        ("Brain overlap with the MNI template (Dice)", qc.brain_mask_template_dice),
        ("Brain volume (ml)", qc.brain_volume_ml),
        ("Brain mask from", qc.brain_mask_source),
        ("Registration refinement (mm)", qc.registration_refinement_shift_mm),
        ("Edge alignment of the two visits (1 = every edge parallel)", qc.edge_alignment),
        ("Shift left between the visits' edges (mm, x y z)", _residual_text(qc)),
        ("Voxel size baseline (mm)", qc.voxel_size_mm.get("baseline_in")),
        ("Voxel size follow-up (mm)", qc.voxel_size_mm.get("followup_in")),
        ("Slice matching before the comparison", slice_matching_text(summary)),
        ("What is reported as a lesion", lesion_rule_text(summary)),
    ]
    return "".join(
        f"<tr><td>{html.escape(name)}</td><td>{html.escape(str(value))}</td></tr>"
        for name, value in items
        if value is not None
    )


def render_report(
    summary: SegmentationSummary,
    lesions: Sequence[Lesion],
    baseline: Volume,
    followup: Volume,
    labels: Volume,
    interactive: bool = True,
) -> str:
    """The whole page as a string (``baseline``, ``followup``, ``labels``: the MNI grid the
    network saw, as :class:`~msnewlesions.segment.Segmentation` holds them). ``interactive``
    embeds the viewer (:mod:`msnewlesions.report.viewer`); without it, the static page."""
    count = len(lesions)
    names = " / ".join(html.escape(str(v.get("path", ""))) for v in summary.inputs.values())
    sentence = html.escape(findings_sentence(lesions))
    verdict = f'<div class="verdict{" none" if count == 0 else ""}">{sentence}</div>'
    viewer = (
        viewer_section(baseline, followup, labels, lesions, summary.inputs) if interactive else ""
    )
    warnings = "".join(
        f'<div class="warning">&#9888; {html.escape(str(w))}</div>' for w in summary.warnings
    )
    sections = []
    dicom = summary.dicom_outputs
    dicom_note = (
        "; for the PACS, " + " and ".join(
            [*([f"{dicom['seg']} (lesion n is its segment n)"] if "seg" in dicom else []),
             *([f"{dicom['sr']} (the figures)"] if "sr" in dicom else [])]
        )
        if dicom
        else ""
    )  # fmt: skip

    def seg_note(index: int) -> str:
        return f" (DICOM SEG segment {index})" if "seg" in dicom else ""

    for index, lesion in enumerate(lesions, start=1):
        before, after, outlined, edges = lesion_views(lesion, baseline, followup, labels)
        x, y, z = lesion.centroid_mni_mm
        nx, ny, nz = lesion.centroid_native_mm
        sections.append(
            f'<section class="lesion" id="lesion-{lesion.lesion_id}">'
            f"<h3>Lesion {lesion.lesion_id}{seg_note(index)}: {lesion.volume_mm3:.0f} mm&sup3;, "
            f"{html.escape(lesion.location or 'location not classified')}</h3>"
            f'<p class="muted">Centre MNI ({x:.0f}, {y:.0f}, {z:.0f}) mm; on the follow-up scan '
            f"({nx:.1f}, {ny:.1f}, {nz:.1f}) mm (RAS); maximum probability "
            f'{lesion.max_probability:.2f}</p><div class="views">'
            f'<figure><img alt="baseline" src="data:image/png;base64,{before}">'
            "<figcaption>baseline</figcaption></figure>"
            f'<figure><img alt="follow-up" src="data:image/png;base64,{after}">'
            "<figcaption>follow-up</figcaption></figure>"
            f'<figure><img alt="follow-up with the lesion outlined" '
            f'src="data:image/png;base64,{outlined}">'
            "<figcaption>follow-up, lesion outlined</figcaption></figure>"
            f'<figure><img alt="registration check: baseline edges on the follow-up" '
            f'src="data:image/png;base64,{edges}">'
            "<figcaption>baseline edges on follow-up</figcaption></figure></div></section>"
        )
    checks = "".join(
        f'<figure><img class="check" alt="registration check, axial slice {k}" '
        'src="data:image/png;base64,'
        f'{_edges_png(followup.array[:, :, k], baseline.array[:, :, k], 3.6)}">'
        f"<figcaption>axial slice {k}</figcaption></figure>"
        for k in registration_check_slices(baseline, lesions)
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        "<title>msnewlesions report</title>"
        f"<style>{_STYLE}</style></head><body>"
        "<h1>New MS lesions: review report</h1>"
        f'<p class="muted">{names}</p>'
        f"{verdict}{warnings}"
        '<p class="muted">A research support tool: every finding needs expert review. Views are '
        "on the registered and preprocessed images (MNI space; neurological convention: the "
        "patient's right on the right); the mask on the follow-up's own grid is "
        f"new_lesions.nii.gz{dicom_note}.</p>"
        + (f"<h2>Both visits</h2>{viewer}" if viewer else "")
        + f'<h2>Quality checks</h2><table class="qc">{_qc_rows(summary)}</table>'
        "<h2>Registration check</h2>"
        '<p class="muted">The baseline\'s edges (blue lines) drawn on the follow-up: where the '
        "visits are aligned the lines run along the follow-up's own edges; a shift shows as a "
        "rim on one side of the ventricles, the cortex or an old lesion, the place where a "
        f'misregistration can pass for a new lesion.</p><div class="views">{checks}</div>'
        + ("<h2>New lesions (axial views)</h2>" + "".join(sections) if sections else "")
        + "</body></html>\n"
    )
