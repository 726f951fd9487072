"""The new lesions as a DICOM Segmentation on the follow-up series' own frames (highdicom).

When the follow-up was read from a DICOM series, ``segment`` also writes
``new_lesions.seg.dcm``: a binary SEG with one segment per new lesion (segment *n* is lesion *n*
of ``lesions.csv``), on the follow-up's frames, referencing its SOP instances, in the same patient
and study, as a new series. Each frame of the SEG is the mask sampled at the centres of that
frame's pixels (through the series' own positions and orientation), so slices stored in any order,
oblique ones included, get exactly the mask of ``new_lesions.nii.gz``. A lesion too small to hold
a voxel of the follow-up's grid keeps its segment, empty, so that segment *n* stays lesion *n*.
With no new lesion no SEG is written (a SEG needs at least one segment).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from msnewlesions.errors import MSNewLesionsError
from msnewlesions.io import RAS_TO_LPS, Volume

if TYPE_CHECKING:
    import pydicom

SEG_FILE = "new_lesions.seg.dcm"
#: The series number given to the SEG (viewers list series by it).
SEG_SERIES_NUMBER = 9901


def read_series_datasets(folder: str | Path) -> list[pydicom.Dataset]:
    """The DICOM datasets of the one image series in ``folder`` (pixel data included)."""
    import pydicom

    datasets: list[pydicom.Dataset] = []
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        try:
            dataset = pydicom.dcmread(path)
        except pydicom.errors.InvalidDicomError:
            continue
        if "PixelData" in dataset and "ImagePositionPatient" in dataset:
            datasets.append(dataset)
    if not datasets:
        raise MSNewLesionsError(f"{folder} holds no DICOM images.")
    return datasets


def frame_of(labels: Volume, dataset: pydicom.Dataset) -> np.ndarray:
    """``labels`` (on the series' grid) sampled at the centres of ``dataset``'s pixels: the
    frame as the dataset stores it (rows x columns)."""
    rows, columns = int(dataset.Rows), int(dataset.Columns)
    orientation = np.array([float(v) for v in dataset.ImageOrientationPatient])
    row_spacing, column_spacing = (float(v) for v in dataset.PixelSpacing)
    origin = np.array([float(v) for v in dataset.ImagePositionPatient])
    r, c = np.meshgrid(np.arange(rows), np.arange(columns), indexing="ij")
    # DICOM: the first direction cosines run along a row (column index c), the second down a
    # column (row index r); positions are LPS millimetres.
    lps = (
        origin
        + c[..., None] * column_spacing * orientation[:3]
        + r[..., None] * row_spacing * orientation[3:]
    )
    ras = lps @ RAS_TO_LPS.T
    ijk = (ras - labels.affine[:3, 3]) @ np.linalg.inv(labels.affine[:3, :3]).T
    index = np.rint(ijk).astype(int)
    if not np.allclose(ijk, index, atol=1e-2):
        raise MSNewLesionsError(
            "the follow-up series' pixel positions do not fall on the grid it was read on; "
            "its DICOM SEG cannot be written (use --no-dicom-out)."
        )
    inside = np.all((index >= 0) & (index < np.array(labels.shape)), axis=-1)
    frame = np.zeros((rows, columns), dtype=labels.array.dtype)
    i, j, k = index[inside].T
    frame[inside] = labels.array[i, j, k]
    return frame


def write_seg(
    labels_native: Volume,
    lesion_ids: Sequence[int],
    datasets: Sequence[pydicom.Dataset],
    path: str | Path,
    model_name: str,
    version: str,
) -> Path | None:
    """Write the SEG of the numbered lesions ``labels_native`` (the follow-up's grid) at
    ``path``, on the frames of the follow-up series ``datasets`` (:func:`read_series_datasets`);
    None (nothing written) when there is no lesion."""
    if not lesion_ids:
        return None
    import highdicom as hd
    from pydicom.sr.codedict import codes

    frames = np.stack([frame_of(labels_native, dataset) for dataset in datasets])
    segments = np.stack([frames == lesion for lesion in lesion_ids], axis=-1)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="msnewlesions",
        version=f"{version} ({model_name})",
        family=codes.cid7162.ArtificialIntelligence,
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=f"New lesion {lesion}",
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Lesion,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=hd.UID(),
            tracking_id=f"new lesion {lesion}",
            anatomic_regions=[codes.SCT.Brain],
        )
        for number, lesion in enumerate(lesion_ids, start=1)
    ]
    seg: Any = hd.seg.Segmentation(
        source_images=list(datasets),
        pixel_array=segments.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="msnewlesions",
        manufacturer_model_name=model_name,
        software_versions=version,
        device_serial_number="none",
        series_description="New MS lesions (msnewlesions)",
        content_label="NEW_LESIONS",
    )
    path = Path(path)
    seg.save_as(path)
    return path
