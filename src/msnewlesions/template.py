"""The MNI152 template space, from the ICBM 2009 files that ship inside nilearn (no download).

nilearn's T1 template is brain-extracted (zero outside the brain), 1 mm isotropic, 197 x 233 x 189
voxels, stored RAS+. Its grid is the "MNI 1 mm" grid every preprocessed image is resampled into.
"""

from __future__ import annotations

import functools

import numpy as np

from msnewlesions.io import Volume


def _load(loader_name: str) -> Volume:
    from nilearn import datasets

    image = getattr(datasets, loader_name)(resolution=1)
    array = np.asarray(image.get_fdata(dtype=np.float32))
    return Volume(array, np.asarray(image.affine))


@functools.lru_cache(maxsize=1)
def mni_t1() -> Volume:
    """The MNI152 (ICBM 2009) T1 template, brain only, intensities in [0, 1]."""
    return _load("load_mni152_template")


@functools.lru_cache(maxsize=1)
def mni_brain_mask() -> Volume:
    """The template's binary brain mask (uint8) on the same 1 mm grid."""
    mask = _load("load_mni152_brain_mask")
    return mask.with_array((mask.array > 0).astype(np.uint8))


@functools.lru_cache(maxsize=1)
def mni_white_matter() -> Volume:
    """The template's white-matter probability map in [0, 1] on the same grid."""
    return _load("load_mni152_wm_template")


@functools.lru_cache(maxsize=1)
def mni_grey_matter() -> Volume:
    """The template's grey-matter probability map in [0, 1] on the same grid."""
    return _load("load_mni152_gm_template")


@functools.lru_cache(maxsize=1)
def mni_csf() -> Volume:
    """CSF probability in [0, 1]: what of the brain mask is neither grey nor white matter."""
    brain = mni_brain_mask().array.astype(np.float32)
    rest = brain - mni_white_matter().array - mni_grey_matter().array
    return mni_brain_mask().with_array(np.clip(rest, 0, 1).astype(np.float32))
