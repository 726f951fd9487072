"""A real pair's follow-up as a DICOM series through ``segment`` with the shipped model: the SEG
is new_lesions.nii.gz voxel for voxel, and both DICOM objects pass dciodvfy."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from msnewlesions.dicom_seg import SEG_FILE
from msnewlesions.dicom_sr import SR_FILE
from msnewlesions.io import read_volume
from msnewlesions.model.default import DEFAULT_MODEL
from msnewlesions.validation import open_ms_pairs
from tests.dicom_series import write_dicom_series
from tests.test_dicom_seg import _dciodvfy_errors, _frames_by_position, _numbers

# Slow: a second full run of a real pair (test_segment_real.py runs one), through DICOM; the
# default run keeps the example pair through the same DICOM path (test_dicom_seg.py).
pytestmark = [
    pytest.mark.slow,
    pytest.mark.real_data,
    pytest.mark.usefixtures("segment_preprocesses_once"),
]


def test_a_real_dicom_follow_up_gets_a_seg_equal_to_its_mask(
    open_ms_data: Path, tmp_path: Path
) -> None:
    from msnewlesions.cli import main

    if not (DEFAULT_MODEL / "plans.json").exists():
        pytest.skip("this checkout ships no default model (model/weights)")
    pair = next(p for p in open_ms_pairs(open_ms_data) if p.patient == "patient01")
    series = write_dicom_series(read_volume(pair.followup), tmp_path / "followup", reverse=True)
    out = tmp_path / "out"
    argv = ["segment", "--baseline", str(pair.baseline), "--followup", str(series)]
    assert main([*argv, "--out", str(out), "-q"]) == 0
    mask = read_volume(out / "new_lesions.nii.gz").array
    summary = json.loads((out / "summary.json").read_text())
    assert summary["new_lesion_count"] > 0
    labels = _frames_by_position(out / SEG_FILE, series)
    np.testing.assert_array_equal(labels > 0, mask > 0)
    with (out / "lesions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    # A lesion too small to hold a voxel of the follow-up's grid keeps its (empty) segment.
    shown = {int(row["dicom_seg_segment"]) for row in rows if int(row["voxels_native"]) > 0}
    assert set(np.unique(labels[labels > 0]).tolist()) == shown
    assert ("NEWLESIONCOUNT", summary["new_lesion_count"], None) in _numbers(out / SR_FILE)
    assert _dciodvfy_errors(out / SEG_FILE) == []
    assert _dciodvfy_errors(out / SR_FILE) == []
