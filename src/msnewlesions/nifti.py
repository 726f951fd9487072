"""NIfTI files read as a scan: the header checked first (size, geometry), then the data.

The limits are those of a brain MRI: at most :data:`MAX_VOXELS_PER_AXIS` voxels a side and
:data:`MAX_VOXELS` in all (a 0.5 mm isotropic head is about 100 million), voxel sizes within
:data:`VOXEL_SIZE_RANGE_MM`; a header that claims more is refused before any data are read, and a
``.nii.gz`` that expands past what its header says it holds is refused as it expands, so that a
file of a few MB that claims 4 GB of zeros never reaches memory.
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np

from msnewlesions.errors import MSNewLesionsError, first_line

logger = logging.getLogger(__name__)

#: Largest deviation from orthogonality of the affine's direction cosines that is silently
#: removed; ITK cannot represent sheared grids.
_MAX_SHEAR = 1e-3
#: The most voxels a brain MRI has along one axis, and in all.
MAX_VOXELS_PER_AXIS = 1024
MAX_VOXELS = 2**27
#: What a .nii.gz may hold beyond its header's data (extensions' padding, trailing bytes).
GZIP_SLACK_BYTES = 1 << 20


def orthonormalize(affine: np.ndarray, source: str) -> np.ndarray:
    """Remove a tiny shear from an affine (ITK needs orthonormal directions); refuse a large one."""
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    direction = affine[:3, :3] / spacing
    deviation = np.abs(direction.T @ direction - np.eye(3)).max()
    if deviation <= 1e-6:
        return affine
    if deviation > _MAX_SHEAR:
        raise MSNewLesionsError(
            f"{source} has a sheared voxel grid (non-orthogonal axes, deviation {deviation:.3g}); "
            "resample it onto an orthogonal grid first."
        )
    u, _, vt = np.linalg.svd(direction)
    fixed = affine.copy()
    fixed[:3, :3] = (u @ vt) @ np.diag(spacing)
    logger.warning("%s: removed a shear of %.2g from the affine", source, deviation)
    return fixed


#: Voxel sizes (mm) a head MRI can have; outside, the header's pixdim is wrong.
VOXEL_SIZE_RANGE_MM = (0.1, 15.0)
#: Largest distance (mm) between where the sform and the qform put a corner of the image before
#: the disagreement is reported (the sform is used, as nibabel, FSL and ANTs do).
_FORMS_AGREE_MM = 0.5


def agreed_affine(image: nib.Nifti1Image | nib.Nifti2Image, source: str) -> np.ndarray:
    """The image's affine, after a look at where its header's two geometries disagree."""
    header = image.header
    sform, sform_code = header.get_sform(coded=True)
    qform, qform_code = header.get_qform(coded=True)
    if sform_code == 0 and qform_code == 0:
        logger.warning(
            "%s: its header has no orientation (sform and qform codes are 0); read with its "
            "voxel sizes only, as nibabel does: left and right may be swapped",
            source,
        )
    elif sform_code and qform_code and sform is not None and qform is not None:
        corners = np.array([[i, j, k, 1] for i in (0, 1) for j in (0, 1) for k in (0, 1)], float)
        corners[:, :3] *= np.array(image.shape[:3]) - 1
        apart = float(np.abs((corners @ sform.T) - (corners @ qform.T)).max())
        if apart > _FORMS_AGREE_MM:
            logger.warning(
                "%s: its sform and qform disagree (by up to %.1f mm); the sform is used, as "
                "nibabel, FSL and ANTs do",
                source,
                apart,
            )
    affine = np.asarray(image.affine, dtype=np.float64)
    if not np.isfinite(affine).all():
        raise MSNewLesionsError(
            f"{source} has a header whose geometry holds NaN or infinite values; "
            "repair the header (its sform / qform) or convert the scan again."
        )
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if abs(np.linalg.det(affine[:3, :3])) < 1e-9 * max(float(np.prod(spacing)), 1e-30):
        raise MSNewLesionsError(
            f"{source} has a singular geometry (two axes point the same way, or a voxel size of "
            "0); repair the header (its sform / qform) or convert the scan again."
        )
    low, high = VOXEL_SIZE_RANGE_MM
    if spacing.min() < low or spacing.max() > high:
        sizes = " x ".join(f"{v:.3g}" for v in spacing)
        raise MSNewLesionsError(
            f"{source} has voxels of {sizes} mm, outside the {low}-{high:g} mm of a head MRI; "
            "its header's voxel sizes (pixdim) are wrong: convert the scan again."
        )
    return orthonormalize(affine, source)


def check_header_size(image: nib.Nifti1Image | nib.Nifti2Image, source: str) -> int:
    """Refuse, from the header alone, an image larger than a brain MRI can be; return the bytes
    its data take on disk (uncompressed)."""
    dims = [int(n) for n in image.shape]
    voxels = int(np.prod(dims, dtype=np.int64))
    if max(dims) > MAX_VOXELS_PER_AXIS or voxels > MAX_VOXELS:
        raise MSNewLesionsError(
            f"{source}'s header claims {' x '.join(map(str, dims))} voxels ({voxels / 1e6:.0f} "
            f"million), more than a brain MRI has (at most {MAX_VOXELS_PER_AXIS} a side and "
            f"{MAX_VOXELS / 1e6:.0f} million in all): the header is wrong, or the image must be "
            "resampled to a coarser grid first."
        )
    itemsize = int(np.dtype(image.header.get_data_dtype()).itemsize)
    return int(image.header.get_data_offset()) + voxels * itemsize


def check_gzip_stream(path: Path, limit_bytes: int) -> None:
    """Read a .gz file through to its end, which checks its CRC (nibabel stops reading where the
    image data end, so a corrupted stream would otherwise be read as a wrong image), and refuse
    it as soon as it expands past ``limit_bytes``: what its header says it holds."""
    import gzip
    import zlib

    total = 0
    try:
        with gzip.open(path, "rb") as stream:
            while block := stream.read(1 << 24):
                total += len(block)
                if total > limit_bytes:
                    raise MSNewLesionsError(
                        f"{path} expands to more than its header says it holds "
                        f"({limit_bytes / 1e6:.0f} MB): a damaged or crafted file; copy or "
                        "convert the scan again."
                    )
    except (OSError, EOFError, zlib.error) as error:
        raise MSNewLesionsError(
            f"{path} could not be read: its data are damaged or incomplete "
            f"({first_line(error)}); copy or download it again."
        ) from error


def read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Header]:
    """A NIfTI file's 3-D data (float32), affine and header, or one clear error. Every check the
    header allows (dimensions, size, geometry) runs before the data are decompressed or read."""
    if path.stat().st_size == 0:
        raise MSNewLesionsError(f"{path} is an empty file (0 bytes); copy or download it again.")
    try:
        image = nib.load(str(path))
    except Exception as error:  # nibabel raises many types for unreadable files
        raise MSNewLesionsError(
            f"{path} is not a readable NIfTI image ({first_line(error)}); "
            "check that it is a .nii or .nii.gz file and copy or download it again."
        ) from error
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        raise MSNewLesionsError(f"{path} is not a NIfTI image.")
    shape = tuple(int(n) for n in image.shape)
    while len(shape) > 3 and shape[-1] == 1:  # 4-D or 5-D with singleton trailing axes
        shape = shape[:-1]
    if len(shape) < 3:
        raise MSNewLesionsError(
            f"{path} is a {len(shape)}-D image of shape {image.shape}; a 3-D volume is expected."
        )
    if len(shape) != 3:
        raise MSNewLesionsError(
            f"{path} has shape {image.shape}; a 3-D image is expected (one volume, not a series)."
        )
    if min(shape) < 2:
        raise MSNewLesionsError(
            f"{path} holds a single slice (shape {image.shape}); a 3-D volume is expected: "
            "convert the whole series."
        )
    expected_bytes = check_header_size(image, str(path))
    affine = agreed_affine(image, str(path))
    with path.open("rb") as handle:
        if handle.read(2) == b"\x1f\x8b":
            check_gzip_stream(path, expected_bytes + GZIP_SLACK_BYTES)
    try:
        array = np.asarray(image.dataobj, dtype=np.float32).reshape(shape)
    except Exception as error:
        raise MSNewLesionsError(
            f"{path} could not be read: its data are damaged or incomplete "
            f"({first_line(error)}); copy or download it again."
        ) from error
    return array, affine, image.header.copy()
