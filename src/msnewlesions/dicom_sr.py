"""The new lesions' figures as a DICOM Comprehensive 3D SR, TID 1500 Measurement Report
(highdicom).

Written beside the SEG (:mod:`msnewlesions.dicom_seg`) when the follow-up is a DICOM series:
one image-level group with the number and total volume of the new lesions (TID 1501), and per
lesion a volumetric group (TID 1411) that references its segment in the SEG, with its volume, its
location class and the model's maximum probability in it. Volumes are those of ``lesions.csv``.
Concepts DICOM and SNOMED CT code are coded with them (lesion, brain, volume, cubic millimetre);
the three that no standard vocabulary names (the count of new lesions, the MAGNIMS location class
and the model's probability) use this tool's private scheme ``99MSNL``, as DICOM allows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msnewlesions.postprocessing import Lesion

if TYPE_CHECKING:
    import pydicom

SR_FILE = "new_lesions.sr.dcm"
SR_SERIES_NUMBER = 9902
#: This tool's private coding scheme for what no standard vocabulary codes.
SCHEME = "99MSNL"
LOCATIONS = {
    "periventricular": "PERIVENTRICULAR",
    "juxtacortical/cortical": "JUXTACORTICAL",
    "infratentorial": "INFRATENTORIAL",
    "deep white matter": "DEEPWHITEMATTER",
}


def _code(value: str, meaning: str) -> Any:
    from pydicom.sr.coding import Code

    return Code(value, SCHEME, meaning)


def write_sr(
    lesions: Sequence[Lesion],
    series: Sequence[pydicom.Dataset],
    seg: pydicom.Dataset | None,
    path: str | Path,
    model_name: str,
    version: str,
) -> Path:
    """Write the measurement report of ``lesions`` (segment *n* of ``seg`` is lesion *n*) on
    the follow-up ``series`` at ``path``."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="msnewlesions", model_name=f"{version} ({model_name})"
        ),
    )
    cubic_mm = codes.UCUM.CubicMillimeter
    totals = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="new lesions"),
        finding_type=codes.SCT.Lesion,
        measurements=[
            hd.sr.Measurement(
                name=_code("NEWLESIONCOUNT", "Number of new lesions"),
                value=len(lesions),
                unit=Code("{lesions}", "UCUM", "lesions"),
            ),
            hd.sr.Measurement(
                name=_code("NEWLESIONVOLUME", "Total volume of new lesions"),
                value=round(sum(lesion.volume_mm3 for lesion in lesions), 2),
                unit=cubic_mm,
            ),
        ],
    )
    groups: list[Any] = [totals]
    source_series = hd.sr.SourceSeriesForSegmentation(series[0].SeriesInstanceUID)
    for number, lesion in enumerate(lesions, start=1):
        if seg is None:
            break
        location = LOCATIONS.get(lesion.location)
        groups.append(
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=hd.UID(), identifier=f"new lesion {lesion.lesion_id}"
                ),
                referenced_segment=hd.sr.ReferencedSegment(
                    sop_class_uid=seg.SOPClassUID,
                    sop_instance_uid=seg.SOPInstanceUID,
                    segment_number=number,
                    source_series=source_series,
                ),
                finding_type=codes.SCT.Lesion,
                finding_sites=[hd.sr.FindingSite(codes.SCT.Brain)],
                measurements=[
                    hd.sr.Measurement(
                        name=codes.SCT.Volume, value=round(lesion.volume_mm3, 2), unit=cubic_mm
                    ),
                    hd.sr.Measurement(
                        name=_code("MAXPROBABILITY", "Maximum new-lesion probability"),
                        value=round(lesion.max_probability, 4),
                        unit=Code("1", "UCUM", "no units"),
                    ),
                ],
                qualitative_evaluations=(
                    [
                        hd.sr.QualitativeEvaluation(
                            name=_code("LOCATIONCLASS", "Lesion location class"),
                            value=_code(location, lesion.location),
                        )
                    ]
                    if location
                    else None
                ),
            )
        )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.LN.BrainMRI,
        imaging_measurements=groups,
    )
    sr: Any = hd.sr.Comprehensive3DSR(
        evidence=[*series, *([seg] if seg is not None else [])],
        content=report,
        series_instance_uid=hd.UID(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="msnewlesions",
        series_description="New MS lesions, measurements (msnewlesions)",
    )
    path = Path(path)
    sr.save_as(path)
    return path
