from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from msnewlesions.atomic import atomic_output_folder, check_output_folder
from msnewlesions.errors import MSNewLesionsError
from msnewlesions.io import (
    Volume,
    check_scan,
    read_volume,
    write_volume,
)
from tests.conftest import oblique_affine


def test_geometry_derives_from_the_affine() -> None:
    affine = np.array([[-2.0, 0, 0, 10], [0, 0, 3.0, -5], [0, 0.5, 0, 7], [0, 0, 0, 1]])
    volume = Volume(np.zeros((4, 5, 6), np.float32), affine)
    np.testing.assert_allclose(volume.spacing, [2.0, 0.5, 3.0])
    np.testing.assert_allclose(volume.direction, [[-1, 0, 0], [0, 0, 1], [0, 1, 0]])
    np.testing.assert_allclose(volume.origin, [10, -5, 7])
    assert volume.voxel_volume_mm3 == pytest.approx(3.0)
    assert volume.orientation == "LSA"  # i points left, j superior, k anterior
    np.testing.assert_allclose(volume.index_to_world([[1, 2, 3]]), [[8.0, 4.0, 8.0]])
    np.testing.assert_allclose(volume.world_to_index([[8.0, 4.0, 8.0]]), [[1, 2, 3]])


def test_sitk_conversion_puts_every_voxel_at_the_same_world_point(oblique_volume: Volume) -> None:
    image = oblique_volume.to_sitk()
    for index in [(0, 0, 0), (11, 9, 5), (3, 7, 2)]:
        lps = np.array(image.TransformIndexToPhysicalPoint(index))
        ras = oblique_volume.index_to_world([index])[0]
        np.testing.assert_allclose(lps, ras * [-1, -1, 1], atol=1e-9)
        assert image[index] == pytest.approx(float(oblique_volume.array[index]))
    back = Volume.from_sitk(image)
    np.testing.assert_allclose(back.affine, oblique_volume.affine, atol=1e-9)
    np.testing.assert_array_equal(back.array, oblique_volume.array)


def test_nifti_round_trip_keeps_values_and_geometry_exact(
    tmp_path: Path, oblique_volume: Volume
) -> None:
    path = tmp_path / "image.nii.gz"
    write_volume(oblique_volume, path)
    read = read_volume(path)
    np.testing.assert_array_equal(read.array, oblique_volume.array)
    np.testing.assert_allclose(read.affine, oblique_volume.affine, atol=1e-5)
    header = nib.load(path).header
    assert int(header["sform_code"]) == 1 and int(header["qform_code"]) == 1
    # SimpleITK reads the file we wrote at the same world positions.
    image = sitk.ReadImage(str(path))
    np.testing.assert_allclose(Volume.from_sitk(image).affine, oblique_volume.affine, atol=1e-4)


def test_a_mask_written_on_an_input_grid_copies_its_header_codes(tmp_path: Path) -> None:
    source = nib.Nifti1Image(np.ones((4, 4, 4), np.int16), oblique_affine())
    source.set_sform(oblique_affine(), code=2)
    source.set_qform(oblique_affine(), code=1)
    nib.save(source, tmp_path / "in.nii.gz")
    volume = read_volume(tmp_path / "in.nii.gz")
    write_volume(volume.with_array(np.zeros((4, 4, 4), np.uint8)), tmp_path / "mask.nii.gz")
    written = nib.load(tmp_path / "mask.nii.gz")
    assert written.get_data_dtype() == np.uint8
    assert int(written.header["sform_code"]) == 2
    np.testing.assert_allclose(written.affine, source.affine, atol=1e-5)


def test_a_mask_on_an_input_grid_keeps_its_differing_sform_and_qform(tmp_path: Path) -> None:
    sform = oblique_affine()
    qform = sform.copy()
    qform[:3, 3] += [0.3, -0.2, 0.1]  # a scanner qform that differs slightly from the sform
    source = nib.Nifti1Image(np.ones((4, 4, 4), np.int16), sform)
    source.set_sform(sform, code=2)
    source.set_qform(qform, code=1)
    nib.save(source, tmp_path / "in.nii.gz")
    volume = read_volume(tmp_path / "in.nii.gz")
    write_volume(volume.with_array(np.zeros((4, 4, 4), np.uint8)), tmp_path / "mask.nii.gz")
    written = nib.load(tmp_path / "mask.nii.gz").header
    original = nib.load(tmp_path / "in.nii.gz").header
    for get in ("get_sform", "get_qform"):
        matrix, code = getattr(written, get)(coded=True)
        expected, expected_code = getattr(original, get)(coded=True)
        np.testing.assert_allclose(matrix, expected, atol=1e-5)
        assert code == expected_code


def test_dicom_series_folder_reads_with_its_geometry(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    array = (rng.random((8, 9, 5)) * 1000).astype(np.int16)
    spacing = (0.9, 0.8, 3.0)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series_uid = "1.2.826.0.1.3680043.2.1125.1"
    for k in range(array.shape[2]):
        slice_image = sitk.GetImageFromArray(array[:, :, k].T[np.newaxis])
        slice_image.SetSpacing((spacing[0], spacing[1], spacing[2]))
        position = (-100.0, -120.0, 40.0 + k * spacing[2])  # LPS, axial slices
        tags = {
            "0008|0060": "MR",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.2",
            "0020|000e": series_uid,
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.4f}" for v in position),
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": f"{spacing[1]}\\{spacing[0]}",
            "0018|0050": str(spacing[2]),
            "0008|0018": f"1.2.826.0.1.3680043.2.1125.3.{k}",
        }
        for tag, value in tags.items():
            slice_image.SetMetaData(tag, value)
        writer.SetFileName(str(tmp_path / f"slice{k:03d}.dcm"))
        writer.Execute(slice_image)
    volume = read_volume(tmp_path)
    assert volume.shape == array.shape
    np.testing.assert_allclose(volume.spacing, spacing, atol=1e-4)
    np.testing.assert_array_equal(volume.array, array.astype(np.float32))
    # LPS (-100, -120, 40) is RAS (100, 120, 40); axes i, j point to L and P.
    np.testing.assert_allclose(volume.origin, [100.0, 120.0, 40.0], atol=1e-3)
    assert volume.orientation == "LPS"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.nii.gz", "does not exist"),
        (lambda d: _text_file(d), "not a readable NIfTI"),
        (lambda d: _nifti(d, np.zeros((4, 4, 4, 3), np.float32)), "3-D image is expected"),
        (lambda d: _empty_folder(d), "no DICOM series"),
    ],
)
def test_unreadable_inputs_raise_one_clear_error(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(MSNewLesionsError, match=message):
        read_volume(make(tmp_path))


def test_a_4d_file_with_one_volume_is_read_as_3d(tmp_path: Path) -> None:
    volume = read_volume(_nifti(tmp_path, np.ones((4, 5, 6, 1), np.float32)))
    assert volume.shape == (4, 5, 6)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((5, 5, 5), np.float32), "empty"),
        (np.full((5, 5, 5), np.nan, np.float32), "NaN"),
    ],
)
def test_scans_without_content_are_refused(array: np.ndarray, message: str) -> None:
    with pytest.raises(MSNewLesionsError, match=message):
        check_scan(Volume(array, np.eye(4)), "the baseline")


def test_output_folder_is_all_or_nothing(tmp_path: Path) -> None:
    destination = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_output_folder(destination, overwrite=False) as staging:
        (staging / "half.txt").write_text("half")
        raise RuntimeError("interrupted")
    assert not destination.exists()
    assert list(tmp_path.iterdir()) == []

    with atomic_output_folder(destination, overwrite=False) as staging:
        (staging / "result.txt").write_text("first")
    assert (destination / "result.txt").read_text() == "first"

    with pytest.raises(MSNewLesionsError, match="already exists"):
        check_output_folder(destination, overwrite=False)
    with atomic_output_folder(destination, overwrite=True) as staging:
        (staging / "result.txt").write_text("second")
    assert (destination / "result.txt").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_output_folder_holding_an_input_is_refused(tmp_path: Path) -> None:
    scan = tmp_path / "scan.nii.gz"
    with pytest.raises(MSNewLesionsError, match="contains the input"):
        check_output_folder(tmp_path, overwrite=True, inputs=[scan])


def _text_file(folder: Path) -> Path:
    path = folder / "notes.nii.gz"
    path.write_text("this is not an image")
    return path


def _nifti(folder: Path, array: np.ndarray) -> Path:
    path = folder / "image.nii.gz"
    nib.save(nib.Nifti1Image(array, np.eye(4)), path)
    return path


def _empty_folder(folder: Path) -> Path:
    path = folder / "dicom"
    path.mkdir()
    return path
