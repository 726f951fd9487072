"""A volume written as a DICOM MR series, as a scanner's export would hold it (SimpleITK, one
file per slice, patient and study tags set)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from msnewlesions.io import Volume

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def write_dicom_series(
    volume: Volume,
    folder: Path,
    patient_id: str = "MSNL-TEST-01",
    study_uid: str | None = None,
    reverse: bool = False,
) -> Path:
    """``volume`` (rescaled to int16) as one DICOM file per slice in ``folder``; ``reverse``
    writes the slices' files (and instance numbers) in reverse order of position."""
    folder.mkdir(parents=True, exist_ok=True)
    array = volume.array.astype(np.float64)
    scaled = np.round(array / max(float(np.abs(array).max()), 1e-6) * 3000).astype(np.int16)
    image = volume.with_array(scaled).to_sitk()
    study_uid = study_uid or f"1.2.826.0.1.3680043.8.498.{int(time.time() * 1e3)}1"
    series_uid = study_uid + ".2"
    frame_uid = study_uid + ".3"
    direction = image.GetDirection()
    orientation = "\\".join(f"{v:.10f}" for v in (*direction[0:7:3], *direction[1:8:3]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    order = range(image.GetDepth())
    for number, k in enumerate(reversed(order) if reverse else order, start=1):
        slice_ = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0016": MR_IMAGE_STORAGE,
            "0008|0018": f"{series_uid}.{k + 1}",
            "0008|0060": "MR",
            "0008|0020": "20261207",
            "0008|0030": "120000",
            "0008|0050": "ACC0001",
            "0008|0090": "",
            "0008|103e": "FLAIR",
            "0010|0010": "Test^Patient",
            "0010|0020": patient_id,
            "0010|0030": "19800101",
            "0010|0040": "F",
            "0020|000d": study_uid,
            "0020|000e": series_uid,
            "0020|0010": "1",
            "0020|0011": "1",
            "0020|0013": str(number),
            "0020|0052": frame_uid,
            "0020|0032": "\\".join(f"{v:.6f}" for v in position),
            "0020|0037": orientation,
            "0018|0050": f"{image.GetSpacing()[2]:.6f}",
            "0028|0030": f"{image.GetSpacing()[1]:.6f}\\{image.GetSpacing()[0]:.6f}",
        }
        for tag, value in tags.items():
            slice_.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"IM{number:04d}.dcm"))
        writer.Execute(slice_)
    return folder
