"""The new lesions as a DICOM SEG on the follow-up series' frames (voxel for voxel the NIfTI
mask, whatever the slices' order and orientation) and their figures as a TID 1500 SR (those of
summary.json and lesions.csv), both valid for dciodvfy."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk

from msnewlesions.dicom_seg import SEG_FILE, read_series_datasets, write_seg
from msnewlesions.dicom_sr import SR_FILE
from msnewlesions.example import write_example_pair
from msnewlesions.io import Volume, read_volume
from tests.conftest import PreprocessOnce
from tests.dicom_series import write_dicom_series
from tests.fakes import CubesPredictor
from tests.test_segment import CUBES


@pytest.fixture(scope="module", autouse=True)
def _the_dicom_follow_up_is_preprocessed_as_its_nifti(
    preprocess_once: PreprocessOnce, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """segment preprocesses each distinct pair once per session here (PreprocessOnce, as with
    conftest's segment_preprocesses_once). The follow-up series is the seed-4 example's NIfTI
    follow-up as int16 slices: its grid, its image up to a scale; segment gets the NIfTI pair's
    preprocessing for it (test_segment.py's): the subject here is what segment writes for a DICOM
    follow-up; test_dicom_real.py (slow) preprocesses a real series."""
    from msnewlesions.preprocessing import model_inputs

    nifti = read_volume(write_example_pair(tmp_path_factory.mktemp("nifti"), seed=4)["followup"])
    sample = nifti.array.ravel()[::97]

    def preprocess(baseline: Volume, followup: Volume, options: Any = None) -> Any:
        if followup.same_grid(nifti):
            assert np.corrcoef(followup.array.ravel()[::97], sample)[0, 1] > 0.9999
            followup = nifti
        return preprocess_once(baseline, followup, options)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(model_inputs, "preprocess_pair", preprocess)
        yield


def _frames_by_position(seg_path: Path, series: Path) -> np.ndarray:
    """The SEG's label of every voxel of the series, placed by SimpleITK's own slice order (the
    order the series is read in): array[i, j, k] as ``read_volume`` gives it, 0 where no
    segment, else the segment number."""
    import highdicom as hd
    import pydicom

    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(series))
    uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files]
    seg = hd.seg.segread(seg_path)
    numbers = [int(s.SegmentNumber) for s in seg.SegmentSequence]
    pixels = seg.get_pixels_by_source_instance(uids, segment_numbers=numbers)
    labels = np.zeros(pixels.shape[:3], np.uint8)
    for index, number in enumerate(numbers):
        labels[pixels[..., index] > 0] = number
    return labels.transpose(2, 1, 0)  # (k, row, column) -> (i = column, j = row, k)


def _numbers(sr_path: Path) -> list[tuple[str, float, int | None]]:
    """Every numeric item of an SR's content tree, in order: (code value, number, the segment
    number its group references or None)."""
    import pydicom

    found: list[tuple[str, float, int | None]] = []

    def walk(items: Any, segment: int | None) -> None:
        # A measurement group's segment is referenced by a sibling of its measurements.
        for item in items:
            for reference in getattr(item, "ReferencedSOPSequence", []):
                segment = int(getattr(reference, "ReferencedSegmentNumber", segment or 0)) or None
        for item in items:
            if item.ValueType == "NUM":
                code = item.ConceptNameCodeSequence[0].CodeValue
                found.append((code, float(item.MeasuredValueSequence[0].NumericValue), segment))
            if "ContentSequence" in item:
                walk(item.ContentSequence, segment)

    walk(pydicom.dcmread(sr_path).ContentSequence, None)
    return found


def _dciodvfy_errors(path: Path) -> list[str]:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy is not installed (make dicom-deps)")
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


@pytest.mark.parametrize("reverse", [False, True], ids=["in order", "reverse order"])
def test_an_oblique_series_gets_each_lesion_as_its_segment(tmp_path: Path, reverse: bool) -> None:
    """A series tilted 17 degrees about two axes, its files in either order: each segment holds
    exactly its lesion's voxels."""
    rng = np.random.default_rng(0)
    a, b = 0.3, 0.2
    rotation = np.array(
        [[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]
    ) @ np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.9, 1.1, 3.0])
    affine[:3, 3] = [-20.0, -30.0, -15.0]
    series = write_dicom_series(
        Volume(rng.random((40, 48, 12)).astype(np.float32) * 100, affine),
        tmp_path / "series",
        reverse=reverse,
    )
    grid = read_volume(series)
    labels = np.zeros(grid.shape, np.uint8)
    labels[5:10, 5:10, 2:4] = 1
    labels[20:25, 30:34, 8] = 2
    datasets = read_series_datasets(series)
    path = write_seg(grid.with_array(labels), [1, 2], datasets, tmp_path / SEG_FILE, "test", "0")
    assert path is not None
    np.testing.assert_array_equal(_frames_by_position(path, series), labels)
    assert _dciodvfy_errors(path) == []


def test_no_lesion_writes_no_seg(tmp_path: Path) -> None:
    """A SEG needs at least one segment: with no new lesion there is none (the report, the
    table and summary.json say 0)."""
    grid = Volume(np.zeros((8, 8, 4), np.uint8), np.eye(4))
    assert write_seg(grid, [], [], tmp_path / SEG_FILE, "test", "0") is None
    assert not (tmp_path / SEG_FILE).exists()


def test_segment_on_a_dicom_follow_up_writes_the_seg_of_its_mask(tmp_path: Path) -> None:
    """The example pair with its follow-up as a DICOM series: the SEG's frames are
    new_lesions.nii.gz voxel for voxel, in the follow-up's patient and study, as a new series,
    one segment per row of lesions.csv; --no-dicom-out writes none."""
    import csv

    import highdicom as hd
    import pydicom

    from msnewlesions.commands import segment as segment_command

    example = write_example_pair(tmp_path / "example", seed=4)
    series = write_dicom_series(read_volume(example["followup"]), tmp_path / "followup-dicom")
    out = tmp_path / "out"
    segment_command.segment_files(
        example["baseline"], series, out, "cubes", predictor=CubesPredictor(CUBES)
    )
    mask = read_volume(out / "new_lesions.nii.gz").array
    with (out / "lesions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and mask.any()
    labels = _frames_by_position(out / SEG_FILE, series)
    np.testing.assert_array_equal(labels > 0, mask > 0)
    assert [int(row["dicom_seg_segment"]) for row in rows] == [1, 2]
    for row in rows:
        assert (labels == int(row["dicom_seg_segment"])).sum() == int(row["voxels_native"])
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "Lesion 2 (DICOM SEG segment 2)" in page and SR_FILE in page
    seg = hd.seg.segread(out / SEG_FILE)
    source = pydicom.dcmread(next(series.iterdir()), stop_before_pixels=True)
    assert seg.PatientID == source.PatientID and seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.SeriesInstanceUID != source.SeriesInstanceUID
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["New lesion 1", "New lesion 2"]
    assert _dciodvfy_errors(out / SEG_FILE) == []

    summary = json.loads((out / "summary.json").read_text())
    assert summary["dicom_outputs"] == {"seg": SEG_FILE, "sr": SR_FILE}
    numbers = _numbers(out / SR_FILE)
    assert ("NEWLESIONCOUNT", summary["new_lesion_count"], None) in numbers
    assert ("NEWLESIONVOLUME", summary["new_lesion_volume_mm3"], None) in numbers
    for number, row in enumerate(rows, start=1):
        assert ("118565006", float(row["volume_mm3"]), number) in numbers  # SNOMED CT Volume
        assert ("MAXPROBABILITY", float(row["max_probability"]), number) in numbers
    assert _dciodvfy_errors(out / SR_FILE) == []

    plain = tmp_path / "plain"
    segment_command.segment_files(
        example["baseline"], series, plain, "cubes", predictor=CubesPredictor(CUBES),
        dicom_out=False,
    )  # fmt: skip
    assert not (plain / SEG_FILE).exists() and not (plain / SR_FILE).exists()

    none = tmp_path / "none"
    segment_command.segment_files(
        example["baseline"], series, none, "cubes", predictor=CubesPredictor([])
    )
    assert not (none / SEG_FILE).exists()  # no segment to hold: no SEG
    assert _numbers(none / SR_FILE) == [("NEWLESIONCOUNT", 0, None), ("NEWLESIONVOLUME", 0, None)]
    assert _dciodvfy_errors(none / SR_FILE) == []


def test_send_to_stores_the_seg_and_sr_in_a_real_orthanc(tmp_path: Path) -> None:
    """``--send-to`` into Orthanc on localhost: both objects arrive, read back through
    Orthanc's REST API, in the follow-up's patient and study."""
    import pydicom

    from msnewlesions.cli import main
    from tests.orthanc import running_orthanc

    example = write_example_pair(tmp_path / "example", seed=4)
    series = write_dicom_series(read_volume(example["followup"]), tmp_path / "followup-dicom")
    source = pydicom.dcmread(next(series.iterdir()), stop_before_pixels=True)
    (tmp_path / "orthanc").mkdir()
    with running_orthanc(tmp_path / "orthanc") as orthanc, pytest.MonkeyPatch.context() as patch:
        from msnewlesions.commands import segment as segment_command

        patch.setattr(
            segment_command, "load_predictor", lambda *a: (CubesPredictor(CUBES), Path("cubes"))
        )
        node = f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}"
        argv = ["segment", "--baseline", example["baseline"], "--followup", str(series)]
        assert main([*argv, "--out", str(tmp_path / "out"), "--send-to", node, "-q"]) == 0
        instances = [
            orthanc.get(f"/instances/{i}/tags?simplify") for i in orthanc.get("/instances")
        ]
    modalities = sorted(tags["Modality"] for tags in instances)
    assert modalities == ["SEG", "SR"]
    for tags in instances:
        assert tags["StudyInstanceUID"] == source.StudyInstanceUID
        assert tags["PatientID"] == source.PatientID


def test_an_unreachable_node_is_one_error_and_the_outputs_stay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from msnewlesions.cli import main

    example = write_example_pair(tmp_path / "example", seed=4)
    series = write_dicom_series(read_volume(example["followup"]), tmp_path / "followup-dicom")
    with pytest.MonkeyPatch.context() as patch:
        from msnewlesions.commands import segment as segment_command

        patch.setattr(
            segment_command, "load_predictor", lambda *a: (CubesPredictor(CUBES), Path("cubes"))
        )
        argv = ["segment", "--baseline", example["baseline"], "--followup", str(series)]
        out = tmp_path / "out"
        code = main([*argv, "--out", str(out), "--send-to", "PACS@127.0.0.1:9", "-q"])
    err = capsys.readouterr().err.strip()
    assert (
        code != 0 and "PACS@127.0.0.1:9 could not be reached" in err and len(err.splitlines()) == 1
    )
    assert (out / SEG_FILE).exists() and (out / SR_FILE).exists()
    code = main([*argv, "--out", str(tmp_path / "x"), "--send-to", "no-port", "-q"])
    assert code != 0 and "AET@HOST:PORT" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
