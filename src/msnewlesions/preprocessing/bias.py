"""N4 bias-field correction (Tustison et al., 2010) with SimpleITK, inside a brain mask.

The field is estimated on a copy shrunk by ``shrink_factor`` (N4's cost grows with voxel count and
the field is smooth), then evaluated and divided out at full resolution.
"""

from __future__ import annotations

import logging

import numpy as np
import SimpleITK as sitk

from msnewlesions.io import Volume

logger = logging.getLogger(__name__)


def n4_bias_correction(
    volume: Volume,
    brain_mask: Volume,
    shrink_factor: int = 4,
    iterations_per_level: tuple[int, ...] = (50, 50, 30),
    spline_distance_mm: float = 100.0,
) -> Volume:
    """The bias-corrected image (float32); values outside the mask are corrected by the same field.

    The B-spline control grid has about one knot every ``spline_distance_mm`` at the first level
    (N4's usual 200 mm for a whole head is too stiff for a cropped brain) and doubles per level.
    """
    array = volume.array.astype(np.float32)
    inside = brain_mask.array > 0
    if not inside.any():
        raise ValueError("N4 needs a non-empty brain mask")
    # N4 works on log intensities: lift non-positive values inside the mask just above zero.
    floor = max(float(np.percentile(array[inside], 1)) * 1e-3, 1e-6)
    positive = np.where(array > floor, array, floor).astype(np.float32)
    image = volume.with_array(positive).to_sitk()
    mask = brain_mask.with_array(inside.astype(np.uint8)).to_sitk()

    shrunk_image = sitk.Shrink(image, [shrink_factor] * 3)
    shrunk_mask = sitk.Shrink(mask, [shrink_factor] * 3)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations(list(iterations_per_level))
    physical_extent = np.array(image.GetSize()) * np.array(image.GetSpacing())
    knots = np.maximum(np.round(physical_extent / spline_distance_mm), 1).astype(int) + 3
    corrector.SetNumberOfControlPoints([int(k) for k in knots])
    corrector.Execute(shrunk_image, shrunk_mask)
    log_field = corrector.GetLogBiasFieldAsImage(image)
    field = np.exp(sitk.GetArrayFromImage(log_field).transpose(2, 1, 0))
    logger.debug(
        "N4: field range %.3f-%.3f inside the brain", field[inside].min(), field[inside].max()
    )
    corrected = array / field
    return volume.with_array(corrected.astype(np.float32))
