"""``msnewlesions segment``: read two scans, segment, write the DESIGN.md outputs atomically.

``DIR`` receives ``new_lesions.nii.gz`` (uint8, the follow-up's shape and affine),
``new_lesions_mni.nii.gz``, ``lesions.csv``, ``summary.json``, ``report.html``, and
``baseline_to_mni.tfm`` / ``followup_to_mni.tfm`` (ITK files; each maps MNI points to that
native scan, as ``preprocess`` writes them). The MSSEG-2 form writes just the mask to a file.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from msnewlesions.atomic import (
    atomic_output_folder,
    check_output_file,
    check_output_folder,
    output_lock,
    write_json_atomically,
    write_text_atomically,
)
from msnewlesions.engines import Engine
from msnewlesions.errors import MSNewLesionsError
from msnewlesions.io import read_volume, sha256_of, write_volume, write_volume_atomically
from msnewlesions.postprocessing import LESION_TABLE_COLUMNS
from msnewlesions.precision import Precision
from msnewlesions.preprocessing.pipeline import software_versions, write_transforms
from msnewlesions.report.html import render_report
from msnewlesions.resources import check_memory, segment_memory_gb
from msnewlesions.segment import (
    LesionPredictor,
    Segmentation,
    SegmentationSummary,
    SegmentOptions,
    segment_pair,
)


def write_segmentation(
    result: Segmentation,
    summary: SegmentationSummary,
    folder: Path,
    dicom_series: Path | None = None,
) -> None:
    """Every output of ``segment --out`` into ``folder`` (which must exist); with
    ``dicom_series`` (the follow-up's DICOM folder) also the DICOM SEG on its frames."""
    write_volume(result.new_lesions, folder / "new_lesions.nii.gz", np.uint8)
    write_transforms(result.preprocessed, folder)
    mni_mask = result.labels_mni.with_array((result.labels_mni.array > 0).astype(np.uint8))
    write_volume(mni_mask, folder / "new_lesions_mni.nii.gz", np.uint8)
    seg_segments = "seg" in summary.dicom_outputs
    with (folder / "lesions.csv").open("w", newline="") as handle:
        columns = [*LESION_TABLE_COLUMNS, *(["dicom_seg_segment"] if seg_segments else [])]
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for number, lesion in enumerate(result.lesions, start=1):
            row = lesion.as_row()
            if seg_segments:
                row["dicom_seg_segment"] = number
            writer.writerow(row)
    write_json_atomically(folder / "summary.json", summary.as_dict())
    page = render_report(
        summary,
        result.lesions,
        result.preprocessed.baseline,
        result.preprocessed.followup,
        result.labels_mni,
    )
    write_text_atomically(folder / "report.html", page)
    if dicom_series is not None and result.labels_native is not None:
        write_dicom_outputs(result, summary, folder, dicom_series)


def write_dicom_outputs(
    result: Segmentation, summary: SegmentationSummary, folder: Path, dicom_series: Path
) -> None:
    """``new_lesions.seg.dcm`` (when there are lesions) and ``new_lesions.sr.dcm`` on the
    follow-up's DICOM series, into ``folder``."""
    import pydicom

    from msnewlesions.dicom_seg import SEG_FILE, read_series_datasets, write_seg
    from msnewlesions.dicom_sr import SR_FILE, write_sr

    assert result.labels_native is not None
    datasets = read_series_datasets(dicom_series)
    version = summary.versions.get("msnewlesions", "unknown")
    ids = [lesion.lesion_id for lesion in result.lesions]
    seg_path = write_seg(
        result.labels_native, ids, datasets, folder / SEG_FILE, summary.model, version
    )
    seg = pydicom.dcmread(seg_path, stop_before_pixels=True) if seg_path else None
    write_sr(result.lesions, datasets, seg, folder / SR_FILE, summary.model, version)


def load_predictor(
    model: str | Path | None,
    device: str = "cpu",
    test_time_augmentation: bool = False,
    precision: Precision = "auto",
    engine: Engine = "auto",
) -> tuple[LesionPredictor, Path]:
    """The network of ``model`` (default: the shipped one), loaded, and the model's path;
    ``precision``: its passes' number format on the CPU (:mod:`msnewlesions.precision`);
    ``engine``: what runs them (:mod:`msnewlesions.engines`)."""
    from msnewlesions.model.default import default_model
    from msnewlesions.model.nnunet import NewLesionPredictor

    model_path = Path(model) if model is not None else default_model()
    predictor = NewLesionPredictor(
        model_path,
        device=device,
        test_time_augmentation=test_time_augmentation,
        precision=precision,
        engine=engine,
    )
    return predictor, model_path


def segment_files(
    baseline_path: str | Path,
    followup_path: str | Path,
    out: str | Path,
    model: str | Path | None = None,
    options: SegmentOptions | None = None,
    device: str = "cpu",
    test_time_augmentation: bool = False,
    overwrite: bool = False,
    mask_only: bool = False,
    predictor: LesionPredictor | None = None,
    dicom_out: bool = True,
    send_to: str | None = None,
) -> Segmentation:
    """Read, segment and write. ``mask_only`` (MSSEG-2's container form) writes just the mask
    to the file ``out``; otherwise ``out`` is a folder that receives every output.

    ``predictor`` replaces the network of ``model`` (a loaded or a test predictor); ``model``
    is then only the name recorded in the summary. ``dicom_out``: when the follow-up is a DICOM
    series, also write the new lesions as a DICOM SEG on its frames
    (:mod:`msnewlesions.dicom_seg`) and SR (:mod:`msnewlesions.dicom_sr`). ``send_to``
    (``AET@HOST:PORT``): store those on that DICOM node once the outputs are complete.
    """
    options = options or SegmentOptions()
    baseline_path, followup_path, out = Path(baseline_path), Path(followup_path), Path(out)
    inputs = (baseline_path, followup_path)
    node = None
    if send_to is not None:
        from msnewlesions.dicom_send import DicomNode

        node = DicomNode.parse(send_to)
        if mask_only or not dicom_out or not followup_path.is_dir():
            raise MSNewLesionsError(
                "--send-to sends the DICOM SEG and SR, which are made when the follow-up is a "
                "DICOM series and --out is given (without --no-dicom-out)."
            )
    if mask_only:
        check_output_file(out, overwrite, inputs)
    else:
        check_output_folder(out, overwrite, inputs)
    with output_lock(out):  # a second run given this output fails at once
        # The scans first: a bad input is refused in a second, before the network is loaded.
        baseline, followup = read_volume(baseline_path), read_volume(followup_path)
        check_memory(
            segment_memory_gb(baseline.array.size, followup.array.size), "segmenting this pair"
        )
        if predictor is None:
            predictor, model_path = load_predictor(
                model,
                device,
                test_time_augmentation,
                options.preprocess.precision,
                options.preprocess.engine,
            )
        else:
            model_path = Path(model or "(given predictor)")
        result = segment_pair(baseline, followup, predictor, options)
        if mask_only:
            write_volume_atomically(result.new_lesions, out, np.uint8)
            return result
        summary = SegmentationSummary.of(
            result,
            str(model_path),
            {
                role: {"path": str(path), "sha256": sha256_of(path)}
                for role, path in zip(("baseline", "followup"), inputs, strict=True)
            },
            software_versions(),
            {
                "engine": str(getattr(predictor, "engine", "torch")),
                "precision": str(getattr(predictor, "precision", "float32")),
            },
        )
        with atomic_output_folder(out, overwrite) as staging:
            series = followup_path if dicom_out and followup_path.is_dir() else None
            if series is not None:
                from msnewlesions.dicom_seg import SEG_FILE
                from msnewlesions.dicom_sr import SR_FILE

                summary.dicom_outputs = {
                    "sr": SR_FILE,
                    **({"seg": SEG_FILE} if result.lesions else {}),
                }
            write_segmentation(result, summary, staging, series)
    if node is not None:
        from msnewlesions.dicom_send import send

        send([out / name for name in summary.dicom_outputs.values()], node)
    return result
