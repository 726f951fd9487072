"""The figures behind two of the input checks, measured on the real scans here and on the template.

1. Is it a FLAIR? Each scan is registered to MNI152 with its skull (the pipeline's first step) and
   its intensities compared inside the template's tissues (:func:`contrast.tissue_contrast`): grey
   matter over white matter, CSF over white matter. Printed for every real FLAIR of open_ms_data
   (every visit of the longitudinal patients, the cross-sectional MNI FLAIRs), the example pair,
   and T1- and T2-weighted stand-ins (the template's own T1; a T2-like contrast from its tissue
   maps). What sets ``contrast.MIN_GREY_TO_WHITE``, ``contrast.MAX_CSF_TO_WHITE`` and their
   warnings. With it, the share of the template's brain the scan's field of view covers
   (:func:`quality.field_of_view_coverage`): what sets ``quality.MIN_BRAIN_COVERAGE``.
2. Are both visits of one person? Each real pair and each cross pair (one patient's baseline with
   another's follow-up) goes through preprocessing with its refusals turned off, and the QC's
   figures are printed: the two heads' correlation, the visits' correlation in the brain and the
   edge alignment. What sets ``quality.MIN_SAME_HEAD_EDGE_ALIGNMENT``.

    python benchmarks/input_checks.py [--data ../shared/data/open_ms_data] [--no-pairs]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import logging
from pathlib import Path

import numpy as np

from msnewlesions import example, template
from msnewlesions.io import Volume, read_volume
from msnewlesions.preprocessing import pipeline, quality, registration
from msnewlesions.preprocessing.contrast import tissue_contrast

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/open_ms_data"


def head_on_template(volume: Volume) -> tuple[Volume, float]:
    """The scan on the template's grid after the pipeline's first registration, and the share
    of the template's brain inside its field of view."""
    import SimpleITK as sitk

    mni = template.mni_t1()
    moving = sitk.Cast(volume.to_sitk(), sitk.sitkFloat32)
    transform = registration.register_rigid(
        mni.to_sitk(), moving, registration.HEAD_SETTINGS
    ).transform
    head = registration.resample(volume, mni, transform)
    return head, quality.field_of_view_coverage(volume, transform)


def t2_like() -> Volume:
    """CSF bright, grey matter above white matter (a T2-weighted contrast)."""
    grey, white, csf = (m().array for m in (template.mni_grey_matter, template.mni_white_matter,
                                            template.mni_csf))  # fmt: skip
    return template.mni_t1().with_array((0.45 * white + 0.6 * grey + 1.0 * csf).astype(np.float32))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--no-pairs", action="store_true")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    longitudinal = sorted((args.data / "longitudinal/raw").glob("patient*"))
    scans: dict[str, Volume] = {}
    for patient in longitudinal:
        for study in (1, 2):
            path = patient / f"study{study}_FLAIR.nii.gz"
            if path.exists():
                scans[f"{patient.name} study{study}"] = read_volume(path)
    for path in sorted((args.data / "cross_sectional/MNI").glob("patient*/FLAIR*.nii.gz")):
        scans[f"cross-sectional {path.parent.name}"] = read_volume(path)
    pair = example.make_example_pair(seed=4)
    scans["example baseline"], scans["example follow-up"] = pair.baseline, pair.followup
    top = scans[f"{longitudinal[0].name} study1"]
    half = top.shape[2] // 2
    cut = top.array[:, :, half:]
    affine = top.affine.copy()
    affine[:3, 3] = top.affine[:3, :3] @ [0, 0, half] + top.affine[:3, 3]
    scans[f"{longitudinal[0].name} study1, top half"] = Volume(cut, affine)
    scans["T1: MNI152 template"] = template.mni_t1()
    scans["T2-like from the template"] = t2_like()
    for patient in longitudinal:  # the database's own T1- and T2-weighted scans of each visit
        for path in sorted(patient.glob("study*_T[12]W.nii.gz")):
            study, weighting = path.name.removesuffix(".nii.gz").split("_")
            scans[f"{weighting}: {patient.name} {study}"] = read_volume(path)
    print(f"{'scan':34s} {'grey/white':>10s} {'CSF/white':>10s} {'brain seen':>10s}  verdict")
    for name, volume in scans.items():
        head, seen = head_on_template(volume)
        contrast = tissue_contrast(head)
        try:
            _, warnings = quality.check_scan_on_template(head, seen, name)
            verdict = f"warned: {'; '.join(warnings)}" if warnings else "accepted"
        except Exception as error:
            verdict = f"refused: {error}"
        print(
            f"{name:34s} {contrast.grey_to_white:10.3f} {contrast.csf_to_white:10.3f} "
            f"{seen:10.3f}  {verdict}",
            flush=True,
        )
    if args.no_pairs:
        return 0
    print()
    print(f"{'pair (baseline / follow-up)':44s} {'head r':>7s} {'brain r':>8s} {'edges':>6s}")
    firsts = [p.name for p in longitudinal if f"{p.name} study1" in scans]
    seconds = [p.name for p in longitudinal if f"{p.name} study2" in scans]
    for first, second in itertools.product(firsts, seconds):
        baseline = scans[f"{first} study1"]
        followup = scans[f"{second} study2"]
        with contextlib.ExitStack() as stack:
            # Every refusal off: the figures are wanted for pairs the pipeline would refuse.
            for name in ("MIN_HEAD_CORRELATION", "MIN_TIMEPOINT_CORRELATION", "MIN_TEMPLATE_DICE",
                         "MIN_SAME_HEAD_EDGE_ALIGNMENT"):  # fmt: skip
                if hasattr(quality, name):
                    stack.enter_context(_patched(quality, name, -1.0))
            stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
            result = pipeline.preprocess_pair(baseline, followup)
        qc = result.qc
        label = f"{first} / {second}" + ("" if first == second else " (two people)")
        print(
            f"{label:44s} {qc.head_correlation_in_template_brain or float('nan'):7.3f} "
            f"{qc.timepoint_correlation_in_brain:8.3f} {qc.edge_alignment:6.3f}",
            flush=True,
        )
    return 0


@contextlib.contextmanager
def _patched(module, name, value):  # type: ignore[no-untyped-def]
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)


if __name__ == "__main__":
    raise SystemExit(main())
