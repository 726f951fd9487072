"""Hostile inputs: each case built here, and what it gets. A case that should work gets a correct
result; any other gets one line naming the file and what to do, a non-zero exit, no traceback,
nothing in the output location and its input untouched (README: "What a bad input gets").

Header forms and files are checked where they are read (``read_volume``) and, for one of each
kind, through ``msnewlesions segment`` in-process. Cases that need the pipeline's registration
(contrast, field of view, two people) run the preprocessing on small synthetic heads.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from msnewlesions.errors import MSNewLesionsError
from msnewlesions.io import read_volume
from tests.conftest import run_cli

#: An axis-aligned 1 x 1.2 x 3 mm grid (RAS), and a different one for the other header form.
AFFINE = np.array([[1.0, 0, 0, -40], [0, 1.2, 0, -50], [0, 0, 3.0, -20], [0, 0, 0, 1]])
OTHER = np.array([[1.0, 0, 0, -30], [0, 1.2, 0, -45], [0, 0, 3.0, -20], [0, 0, 0, 1]])


def values(dtype: type = np.float32) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random((20, 22, 12)) * 100).astype(dtype)


def save(path: Path, image: nib.Nifti1Image) -> Path:
    nib.save(image, str(path))
    return path


def header_image(
    array: np.ndarray, sform: np.ndarray | None, qform: np.ndarray | None
) -> nib.Nifti1Image:
    image = nib.Nifti1Image(array, None)
    image.set_sform(sform if sform is not None else np.eye(4), code=1 if sform is not None else 0)
    image.set_qform(qform if qform is not None else np.eye(4), code=1 if qform is not None else 0)
    return image


def refused(
    argv_paths: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> str:
    """``segment`` on the two paths: exit 1, one line naming the problem, no traceback, no
    output folder, the inputs' bytes unchanged. Returns the line."""
    before = {p: _digest(p) for p in argv_paths if p.exists() and p.is_file()}
    out = tmp_path / "result"
    argv = ["segment", "--baseline", str(argv_paths[0]), "--followup", str(argv_paths[1])]
    code, _, err = run_cli([*argv, "--out", str(out)],
                           capsys)  # fmt: skip
    assert code == 1, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".result*")), list(tmp_path.iterdir())
    assert {p: _digest(p) for p in before} == before
    return lines[0]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def good(tmp_path: Path) -> Path:
    return save(tmp_path / "good.nii.gz", nib.Nifti1Image(values(), AFFINE))


# --- Header forms that should work: the right grid and the right values --------------------------


def test_a_qform_only_header_gives_the_qform(tmp_path: Path) -> None:
    path = save(tmp_path / "q.nii.gz", header_image(values(), None, AFFINE))
    volume = read_volume(path)
    np.testing.assert_allclose(volume.affine, AFFINE, atol=1e-5)
    np.testing.assert_allclose(volume.array, values(), rtol=1e-6)


def test_an_sform_only_header_gives_the_sform(tmp_path: Path) -> None:
    path = save(tmp_path / "s.nii.gz", header_image(values(), AFFINE, None))
    np.testing.assert_allclose(read_volume(path).affine, AFFINE, atol=1e-5)


def test_disagreeing_sform_and_qform_give_the_sform_and_say_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = save(tmp_path / "both.nii.gz", header_image(values(), AFFINE, OTHER))
    with caplog.at_level(logging.WARNING, logger="msnewlesions"):
        volume = read_volume(path)
    np.testing.assert_allclose(volume.affine, AFFINE, atol=1e-5)
    assert "sform and qform disagree (by up to 10.0 mm); the sform is used" in caplog.text


def test_a_header_without_orientation_is_read_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = save(tmp_path / "none.nii.gz", header_image(values(), None, None))
    with caplog.at_level(logging.WARNING, logger="msnewlesions"):
        volume = read_volume(path)
    # nibabel's reading of such a header: its voxel sizes, left-right flipped, centred.
    np.testing.assert_allclose(volume.spacing, [1.0, 1.0, 1.0])
    assert "no orientation" in caplog.text


@pytest.mark.parametrize("slope", [0.0, float("nan")])
def test_a_scaling_slope_of_zero_or_nan_means_no_scaling(tmp_path: Path, slope: float) -> None:
    """The NIfTI standard: scl_slope 0 means the stored values are the values; nibabel reads a
    NaN slope the same way."""
    raw = values(np.int16)
    image = nib.Nifti1Image(raw, AFFINE)
    image.header.set_data_dtype(np.int16)
    path = save(tmp_path / "slope.nii", image)
    header = bytearray(path.read_bytes())
    header[112:116] = np.float32(slope).tobytes()  # scl_slope, in place
    path.write_bytes(bytes(header))
    np.testing.assert_array_equal(read_volume(path).array, raw.astype(np.float32))


@pytest.mark.parametrize("dtype", [np.int8, np.uint16, np.float64, np.uint8, np.int32])
def test_every_stored_type_reads_as_its_values(tmp_path: Path, dtype: type) -> None:
    raw = (values() - (50 if dtype is np.int8 else 0)).astype(dtype)
    image = nib.Nifti1Image(raw, AFFINE)
    image.header.set_data_dtype(dtype)
    volume = read_volume(save(tmp_path / "typed.nii.gz", image))
    np.testing.assert_array_equal(volume.array, raw.astype(np.float32))


def test_five_dimensions_with_singleton_axes_read_as_3d(tmp_path: Path) -> None:
    path = save(tmp_path / "5d.nii.gz", nib.Nifti1Image(values()[..., None, None], AFFINE))
    volume = read_volume(path)
    assert volume.shape == (20, 22, 12)
    np.testing.assert_allclose(volume.affine, AFFINE, atol=1e-5)


def test_a_path_with_spaces_and_non_ascii_characters_reads(tmp_path: Path) -> None:
    folder = tmp_path / "Müller Ærø 患者 01"
    folder.mkdir()
    path = save(folder / "FLAIR baseline é.nii.gz", nib.Nifti1Image(values(), AFFINE))
    np.testing.assert_allclose(read_volume(path).array, values())


# --- Headers and files that cannot be a scan: one line naming the file and what to do ----------


def _scaled(factor: float) -> np.ndarray:
    affine = AFFINE.copy()
    affine[:3, :3] *= factor
    return affine


BAD_FILES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "tiny voxels": (
        lambda d: save(d / "tiny.nii.gz", nib.Nifti1Image(values(), _scaled(1e-3))),
        "outside the 0.1-15 mm of a head MRI",
    ),
    "huge voxels": (
        lambda d: save(d / "huge.nii.gz", nib.Nifti1Image(values(), _scaled(40.0))),
        "its header's voxel sizes (pixdim) are wrong",
    ),
    "a singular affine": (
        lambda d: _singular(d),
        "singular geometry",
    ),
    "NaN in the header's geometry": (
        lambda d: _nan_geometry(d),
        "geometry holds NaN or infinite values",
    ),
    "a sheared affine": (
        lambda d: save(
            d / "sheared.nii.gz",
            nib.Nifti1Image(
                values(), np.array([[1, 0.3, 0, 0], [0, 1, 0, 0], [0, 0, 3, 0], [0, 0, 0, 1.0]])
            ),
        ),
        "sheared voxel grid",
    ),
    "a 2-D image": (
        lambda d: save(d / "flat.nii.gz", nib.Nifti1Image(values()[:, :, 0], AFFINE)),
        "2-D image",
    ),
    "a single slice": (
        lambda d: save(d / "slice.nii.gz", nib.Nifti1Image(values()[:, :, :1], AFFINE)),
        "a single slice",
    ),
    "a truncated download": (
        lambda d: _truncated(d),
        "damaged or incomplete",
    ),
    "corrupted gzip": (
        lambda d: _corrupted(d),
        "copy or download it again",
    ),
    "an empty file": (
        lambda d: _touch(d / "empty.nii.gz"),
        "is an empty file (0 bytes)",
    ),
    "a symlink loop": (
        lambda d: _loop(d),
        "a link that leads nowhere",
    ),
}


def _singular(folder: Path) -> Path:
    """An sform whose third axis is zero (nibabel refuses to write one: the bytes are set)."""
    path = save(folder / "singular.nii", nib.Nifti1Image(values(), AFFINE))
    data = bytearray(path.read_bytes())
    data[312:328] = np.array([0, 0, 0, -20], np.float32).tobytes()  # srow_z
    data[252:256] = np.array([0, 1], np.int16).tobytes()  # qform_code 0, sform_code 1
    path.write_bytes(bytes(data))
    return path


def _nan_geometry(folder: Path) -> Path:
    path = save(folder / "nan.nii", nib.Nifti1Image(values(), AFFINE))
    data = bytearray(path.read_bytes())
    data[280:296] = np.array([np.nan, 0, 0, -40], np.float32).tobytes()  # srow_x
    data[252:256] = np.array([0, 1], np.int16).tobytes()  # qform_code 0, sform_code 1
    path.write_bytes(bytes(data))
    return path


def _truncated(folder: Path) -> Path:
    whole = save(folder / "whole.nii.gz", nib.Nifti1Image(values(), AFFINE)).read_bytes()
    path = folder / "truncated.nii.gz"
    path.write_bytes(whole[: len(whole) * 2 // 3])
    return path


def _corrupted(folder: Path) -> Path:
    data = bytearray(gzip.compress(nib.Nifti1Image(values(), AFFINE).to_bytes()))
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)
    path = folder / "corrupted.nii.gz"
    path.write_bytes(bytes(data))
    return path


def _touch(path: Path) -> Path:
    path.touch()
    return path


def _loop(folder: Path) -> Path:
    first, second = folder / "a.nii.gz", folder / "b.nii.gz"
    first.symlink_to(second)
    second.symlink_to(first)
    return first


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_file_is_refused_in_one_line_naming_it(
    case: str, tmp_path: Path, good: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make, message = BAD_FILES[case]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    bad = make(inputs)
    with pytest.raises(MSNewLesionsError, match=None) as raised:
        read_volume(bad)
    assert message in str(raised.value) and str(bad) in str(raised.value)
    # The same through the command line, as the follow-up: exit 1, one line, nothing written.
    line = refused((good, bad), tmp_path, capsys)
    assert message in line


# --- DICOM folders ----------------------------------------------------------------------------


def write_dicom_series(folder: Path, slices: list[int], series: str = "1") -> None:
    """Axial slices ``slices`` (positions 3 mm apart) of one series, as a scanner writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    array = values(np.int16)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in slices:
        image = sitk.GetImageFromArray(array[:, :, k].T[np.newaxis])
        tags = {
            "0008|0060": "MR",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.2",
            "0020|000e": f"1.2.826.0.1.3680043.2.1125.1.{series}",
            "0020|0013": str(k + 1),
            "0020|0032": f"-100\\-120\\{40 + 3.0 * k:.4f}",
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": "1.2\\1.0",
            "0018|0050": "3.0",
            "0008|0018": f"1.2.826.0.1.3680043.2.1125.3.{series}.{k}",
        }
        for tag, value in tags.items():
            image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"s{series}_{k:03d}.dcm"))
        writer.Execute(image)


def test_a_dicom_series_with_a_missing_slice_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "dicom"
    write_dicom_series(folder, [k for k in range(12) if k != 5])
    with pytest.raises(MSNewLesionsError, match=r"lacks 1 slice\(s\)") as raised:
        read_volume(folder)
    assert str(folder) in str(raised.value)
    whole = tmp_path / "whole"
    write_dicom_series(whole, list(range(12)))
    assert read_volume(whole).shape == (20, 22, 12)


def test_a_dicom_folder_with_several_series_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "dicom"
    write_dicom_series(folder, list(range(12)), series="1")
    write_dicom_series(folder, list(range(12)), series="2")
    with pytest.raises(MSNewLesionsError, match="holds 2 DICOM series; give a folder with exactly"):
        read_volume(folder)


# --- Pairs ------------------------------------------------------------------------------------


def test_the_same_scan_given_twice_is_refused(
    tmp_path: Path, good: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = refused((good, good), tmp_path, capsys)
    assert "the same image" in line
    copy = tmp_path / "copy of good.nii.gz"
    shutil.copy(good, copy)
    assert "the same image" in refused((good, copy), tmp_path, capsys)


def test_an_output_path_that_is_a_file_is_refused_before_any_work(
    tmp_path: Path, good: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    existing = tmp_path / "result"
    existing.write_text("someone's notes")
    for extra in ([], ["--overwrite"]):
        argv = ["segment", "--baseline", str(good), "--followup", str(good)]
        code, _, err = run_cli([*argv, "--out", str(existing), *extra],
                               capsys)  # fmt: skip
        assert code == 1 and "is a file, not a folder" in err and "Traceback" not in err
        assert existing.read_text() == "someone's notes"


def test_nothing_is_read_through_a_folder_without_permission(
    tmp_path: Path, good: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads any folder: permissions cannot be tested as root")
    closed = tmp_path / "closed"
    closed.mkdir()
    inside = closed / "scan.nii.gz"
    shutil.copy(good, inside)
    closed.chmod(0)
    try:
        line = refused((good, inside), tmp_path, capsys)
        assert "cannot be reached" in line or "permission" in line
    finally:
        closed.chmod(0o755)
