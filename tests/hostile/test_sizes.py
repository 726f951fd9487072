"""Impossible sizes never reach memory: a header that claims more voxels than a brain MRI has, and
a .nii.gz that expands past what its header says, are refused from the header and the stream, in
one line (their time and peak memory: benchmarks/impossible_inputs.py)."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from msnewlesions.errors import MSNewLesionsError
from msnewlesions.io import read_volume
from msnewlesions.nifti import MAX_VOXELS_PER_AXIS
from tests.conftest import run_cli


def claims(shape: tuple[int, int, int], path: Path) -> Path:
    """A .nii.gz whose header claims ``shape`` (float32) and whose stream holds that many zeros
    written lazily: 4 GiB of zeros compress to a few MB."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    header.set_sform(np.eye(4), code=1)
    header.set_qform(np.eye(4), code=1)
    header["vox_offset"] = 352
    block = bytes(1 << 24)
    total = int(np.prod(shape)) * 4
    with gzip.open(path, "wb", compresslevel=1) as stream:
        stream.write(header.binaryblock + b"\0" * 4)
        while total > 0:
            stream.write(block[: min(total, len(block))])
            total -= len(block)
    return path


def test_a_header_claiming_1024_cubed_voxels_is_refused_before_any_data_are_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bomb = tmp_path / "huge.nii.gz"
    header = nib.Nifti1Header()
    header.set_data_shape((1024, 1024, 1024))
    header.set_data_dtype(np.float32)
    header.set_sform(np.eye(4), code=1)
    with gzip.open(bomb, "wb") as stream:  # only the header: the data are never reached
        stream.write(header.binaryblock + b"\0" * 4 + bytes(1 << 20))
    with pytest.raises(MSNewLesionsError, match=r"1024 x 1024 x 1024 voxels .* more than a brain"):
        read_volume(bomb)
    code, _, err = run_cli(["segment", "--baseline", str(bomb), "--followup", str(bomb),
                            "--out", str(tmp_path / "out")], capsys)  # fmt: skip
    assert code == 1 and "huge.nii.gz" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_gzip_that_expands_past_its_header_is_refused_as_it_expands(tmp_path: Path) -> None:
    # A header of 64^3 float32 (1 MB) whose stream goes on with 300 MB of zeros.
    path = claims((64, 64, 64), tmp_path / "bomb.nii.gz")
    with gzip.open(path, "ab", compresslevel=1) as stream:
        for _ in range(300 // 16):
            stream.write(bytes(1 << 24))
    with pytest.raises(MSNewLesionsError, match="expands to more than its header says"):
        read_volume(path)


def test_a_scan_at_the_limits_is_read(tmp_path: Path) -> None:
    path = tmp_path / "thin.nii.gz"
    array = np.ones((MAX_VOXELS_PER_AXIS, 8, 4), np.float32)
    nib.save(nib.Nifti1Image(array, np.diag([0.25, 1.0, 3.0, 1.0])), str(path))
    assert read_volume(path).shape == (MAX_VOXELS_PER_AXIS, 8, 4)
    over = tmp_path / "over.nii.gz"
    nib.save(
        nib.Nifti1Image(np.ones((MAX_VOXELS_PER_AXIS + 1, 8, 4), np.float32), np.eye(4)), str(over)
    )
    with pytest.raises(MSNewLesionsError, match="at most 1024 a side"):
        read_volume(over)
