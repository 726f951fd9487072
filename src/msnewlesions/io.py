"""Volumes: a 3-D array and the affine that places it in the world, read from and written to disk.

A :class:`Volume` follows nibabel's convention: ``array[i, j, k]`` sits at the RAS+ world point
``affine @ (i, j, k, 1)`` in millimetres. Spacing, direction and origin are derived from the affine,
never stored beside it, so they cannot disagree. SimpleITK (LPS+, arrays indexed ``[k, j, i]``) is
reached through :meth:`Volume.to_sitk` and :meth:`Volume.from_sitk`, which convert exactly.

Readers accept NIfTI files (``.nii``, ``.nii.gz``) and folders holding one DICOM series. Every
failure a user can cause raises :class:`~msnewlesions.errors.MSNewLesionsError` with one sentence.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np

from msnewlesions.atomic import atomic_file
from msnewlesions.errors import MSNewLesionsError
from msnewlesions.nifti import orthonormalize, read_nifti

if TYPE_CHECKING:
    import SimpleITK as sitk

logger = logging.getLogger(__name__)

#: Flips between RAS+ (nibabel, NIfTI) and LPS+ (ITK, DICOM) world coordinates.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class Volume:
    """A 3-D image: ``array`` indexed ``[i, j, k]`` and its 4x4 voxel-to-RAS ``affine`` in mm."""

    array: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header | None = field(default=None, compare=False, repr=False)
    #: The file or folder it was read from ("" when made in memory): what messages name.
    source: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"a Volume is 3-D; got an array of shape {self.array.shape}")
        affine = np.asarray(self.affine, dtype=np.float64)
        if affine.shape != (4, 4):
            raise ValueError(f"the affine must be 4x4; got shape {affine.shape}")
        object.__setattr__(self, "affine", affine)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along i, j, k."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def direction(self) -> np.ndarray:
        """Unit RAS+ direction of the i, j, k axes, as the columns of a 3x3 matrix."""
        return self.affine[:3, :3] / self.spacing

    @property
    def origin(self) -> np.ndarray:
        """RAS+ position in mm of the centre of voxel (0, 0, 0)."""
        return self.affine[:3, 3].copy()

    @property
    def voxel_volume_mm3(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3])))

    @property
    def orientation(self) -> str:
        """Axis codes such as ``'RAS'`` or ``'LPS'``: where each array axis points."""
        return "".join(nib.aff2axcodes(self.affine))

    def with_array(self, array: np.ndarray) -> Volume:
        """A volume on the same grid holding ``array``."""
        return Volume(array, self.affine, self.header, self.source)

    def index_to_world(self, indices: np.ndarray) -> np.ndarray:
        """RAS+ mm of voxel indices (N x 3, fractional allowed)."""
        indices = np.atleast_2d(np.asarray(indices, dtype=np.float64))
        return indices @ self.affine[:3, :3].T + self.affine[:3, 3]

    def world_to_index(self, points: np.ndarray) -> np.ndarray:
        """Fractional voxel indices of RAS+ points in mm (N x 3)."""
        points = np.atleast_2d(np.asarray(points, dtype=np.float64))
        inverse = np.linalg.inv(self.affine)
        return points @ inverse[:3, :3].T + inverse[:3, 3]

    def same_grid(self, other: Volume, tolerance_mm: float = 1e-3) -> bool:
        """Whether both volumes have the same shape and (to ``tolerance_mm``) the same affine."""
        return self.shape == other.shape and bool(
            np.allclose(self.affine, other.affine, atol=tolerance_mm)
        )

    def to_sitk(self) -> sitk.Image:
        """The same image as a SimpleITK image (LPS+ geometry, exact)."""
        import SimpleITK as sitk

        array = self.array
        if array.dtype == np.bool_:
            array = array.astype(np.uint8)
        image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
        image.SetSpacing(tuple(float(s) for s in self.spacing))
        image.SetOrigin(tuple(float(v) for v in RAS_TO_LPS @ self.origin))
        image.SetDirection(tuple(float(v) for v in (RAS_TO_LPS @ self.direction).ravel()))
        return image

    @classmethod
    def from_sitk(cls, image: sitk.Image, header: nib.Nifti1Header | None = None) -> Volume:
        """A volume from a 3-D SimpleITK image (LPS+ geometry converted to a RAS+ affine)."""
        import SimpleITK as sitk

        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            raise ValueError("only scalar 3-D SimpleITK images convert to a Volume")
        array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
        direction = np.array(image.GetDirection()).reshape(3, 3)
        affine = np.eye(4)
        affine[:3, :3] = RAS_TO_LPS @ direction @ np.diag(image.GetSpacing())
        affine[:3, 3] = RAS_TO_LPS @ np.array(image.GetOrigin())
        return cls(np.ascontiguousarray(array), affine, header)


def _read_dicom_series(folder: Path) -> Volume:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise MSNewLesionsError(f"{folder} is a folder but holds no DICOM series.")
    if len(series) > 1:
        raise MSNewLesionsError(
            f"{folder} holds {len(series)} DICOM series; give a folder with exactly one."
        )
    files = reader.GetGDCMSeriesFileNames(str(folder), series[0])
    _check_slice_spacing(files, folder)
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as error:
        raise MSNewLesionsError(f"the DICOM series in {folder} could not be read.") from error
    if image.GetDimension() != 3 or image.GetSize()[2] < 2:
        raise MSNewLesionsError(f"the DICOM series in {folder} is not a 3-D volume.")
    volume = Volume.from_sitk(sitk.Cast(image, sitk.sitkFloat32))
    return Volume(volume.array, orthonormalize(volume.affine, str(folder)), source=str(folder))


def _check_slice_spacing(files: tuple[str, ...], folder: Path) -> None:
    """Refuse a series with missing or repeated slices: its slices' positions along their normal
    must step evenly (a gap would be read as one slice's thickness, silently)."""
    import SimpleITK as sitk

    positions = []
    normal = None
    for name in files:
        header = sitk.ImageFileReader()
        header.SetFileName(name)
        try:
            header.ReadImageInformation()
            position = [float(v) for v in header.GetMetaData("0020|0032").split("\\")]
            if normal is None:
                cosines = [float(v) for v in header.GetMetaData("0020|0037").split("\\")]
                normal = np.cross(cosines[:3], cosines[3:])
        except RuntimeError:
            return  # no positions to check (SimpleITK's reader decides)
        positions.append(float(np.dot(position, normal)))
    if len(positions) < 3:
        return
    steps = np.diff(np.sort(positions))
    usual = float(np.median(steps))
    if usual <= 0 or steps.min() < 0.5 * usual:
        raise MSNewLesionsError(
            f"the DICOM series in {folder} has slices at the same position (repeated or from "
            "two acquisitions); export the series again."
        )
    missing = int(np.round(steps / usual).sum() - len(steps))
    if missing > 0:
        raise MSNewLesionsError(
            f"the DICOM series in {folder} lacks {missing} slice(s) (its slices are "
            f"{usual:.2g} mm apart, with gaps up to {steps.max():.2g} mm); copy the whole series."
        )


def read_volume(path: str | Path) -> Volume:
    """Read a 3-D image (float32) from a NIfTI file or a folder holding one DICOM series."""
    path = Path(path)
    try:
        exists = path.exists()
    except OSError as error:  # a folder on the way that may not be searched, a loop of links
        raise MSNewLesionsError(f"{path} cannot be reached ({error.strerror}).") from None
    if not exists:
        if path.is_symlink():
            raise MSNewLesionsError(
                f"{path} is a link that leads nowhere (its target is missing, or links loop); "
                "give the scan itself."
            )
        raise MSNewLesionsError(f"{path} does not exist.")
    if not os.access(path, os.R_OK):
        raise MSNewLesionsError(f"{path} cannot be read: permission denied.")
    if path.is_dir():
        return _read_dicom_series(path)
    array, affine, header = read_nifti(path)
    return Volume(array, affine, header, str(path))


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, or of a folder's files in name order (a DICOM series): what a run
    records of its inputs."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for item in files:
        with item.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def check_scan(volume: Volume, name: str) -> None:
    """Refuse a scan that cannot be a brain MRI: NaN or infinite values, or nothing but zeros."""
    array = volume.array
    finite = np.isfinite(array)
    if not finite.all():
        raise MSNewLesionsError(
            f"{name} contains {int((~finite).sum())} NaN or infinite voxels; "
            "it is not a usable scan."
        )
    if float(array.max()) == float(array.min()):
        raise MSNewLesionsError(f"{name} is empty: every voxel has the value {array.flat[0]:g}.")
    if min(volume.shape) < 2:
        raise MSNewLesionsError(f"{name} has shape {volume.shape}; a 3-D volume is expected.")


def _on_header_grid(volume: Volume, header: nib.Nifti1Header | None) -> bool:
    if header is None or (int(header["sform_code"]) == 0 and int(header["qform_code"]) == 0):
        return False
    return bool(np.allclose(header.get_best_affine(), volume.affine, atol=1e-5))


def write_volume(volume: Volume, path: str | Path, dtype: np.dtype | type | None = None) -> None:
    """Write a volume to NIfTI with its affine exact (sform and qform both set, code scanner).

    A header carried by the volume (from :func:`read_volume`) is reused, so units, codes and
    description survive a round trip; its scaling is reset so that the stored values are exact.
    """
    path = Path(path)
    array = volume.array if dtype is None else volume.array.astype(dtype)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    header = volume.header.copy() if volume.header is not None else None
    image = nib.Nifti1Image(array, volume.affine, header=header)
    image.header.set_data_dtype(array.dtype)
    if header is not None and _on_header_grid(volume, header):
        # Still on the input's grid: copy its sform and qform (and codes) exactly as they were,
        # even where the two differ, so tools that prefer either see the input's geometry.
        sform, sform_code = header.get_sform(coded=True)
        qform, qform_code = header.get_qform(coded=True)
        image.set_sform(sform, code=int(sform_code))
        image.set_qform(qform, code=int(qform_code))
    else:
        sform_code = int(header["sform_code"]) if header is not None else 0
        qform_code = int(header["qform_code"]) if header is not None else 0
        image.set_sform(volume.affine, code=sform_code or 1)
        image.set_qform(volume.affine, code=qform_code or 1)
    image.header.set_slope_inter(1.0, 0.0)
    image.header.set_xyzt_units("mm", "sec")
    nib.save(image, str(path))


def write_volume_atomically(
    volume: Volume, path: str | Path, dtype: np.dtype | type | None = None
) -> None:
    """:func:`write_volume` through :func:`~msnewlesions.atomic.atomic_file`: an interrupted
    write never leaves a truncated file under the final name."""
    with atomic_file(path) as temporary:
        write_volume(volume, temporary, dtype)
