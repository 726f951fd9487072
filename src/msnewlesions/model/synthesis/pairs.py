"""One synthetic pair from one anatomy, directly or as ``segment`` gives it to the network."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from msnewlesions import template
from msnewlesions.io import Volume
from msnewlesions.model.synthesis.acquisition import acquire, acquire_natively, misalign
from msnewlesions.model.synthesis.anatomy import Anatomy, LesionShape
from msnewlesions.model.synthesis.changes import grow_old_lesions
from msnewlesions.model.synthesis.new_lesions import fade_old_lesions, insert_lesions, place_lesions
from msnewlesions.model.synthesis.settings import SynthesisSettings
from msnewlesions.preprocessing import registration
from msnewlesions.preprocessing.intensity import brain_bounding_box, crop, zscore
from msnewlesions.preprocessing.model_inputs import InputOptions, model_inputs
from msnewlesions.preprocessing.pipeline import PreprocessOptions


@dataclass
class SyntheticPair:
    """A model-ready pair (z-scored, cropped MNI grid) and its new-lesion label."""

    baseline: Volume
    followup: Volume
    new_lesions: Volume
    brain_mask: Volume
    #: Old lesions that shrink or fade at the follow-up (not new: never in the label).
    faded_old_lesions: Volume
    #: The two acquisitions before z-scoring (skull-stripped scans, white matter about 1), as a
    #: tool like ``segment`` would be given them.
    baseline_scan: Volume
    followup_scan: Volume
    info: dict[str, Any] = field(default_factory=dict)
    #: For scans acquired on a scanner's grid (``native``): maps a point of the follow-up scan's
    #: space to the point of ``new_lesions``' grid it shows; None when the scans are on that grid.
    followup_pose: sitk.Transform | None = None
    #: The same for the baseline scan (what its registration should find; benchmarks).
    baseline_pose: sitk.Transform | None = None


def pair_rng(
    seed: int, anatomy_index: int, pair_index: int, stream: int = 0
) -> np.random.Generator:
    """The generator of one pair; ``stream`` 0 is the directly written pairs' (3-part seed)."""
    key = (seed, anatomy_index, pair_index) + ((stream,) if stream else ())
    return np.random.default_rng(key)


def synthesize_pair(
    anatomy: Anatomy,
    library: Sequence[LesionShape],
    rng: np.random.Generator,
    settings: SynthesisSettings | None = None,
    new_lesion_count: int | None = None,
    misalignment: bool = True,
    native: bool = False,
) -> SyntheticPair:
    """One baseline / follow-up pair from one anatomy, on the anatomy's brain box, z-scored.

    ``native``: the two scans (``baseline_scan``, ``followup_scan``) are acquired on scanners'
    grids at their own head poses (:func:`~msnewlesions.model.synthesis.acquisition.
    acquire_natively`), for :func:`as_segment_sees_it`; the z-scored pair on the brain box is then
    the noise-free image before that acquisition."""
    settings = settings or SynthesisSettings()
    box = brain_bounding_box(anatomy.brain_mask, settings.crop_margin_mm)
    offset = np.array([s.start for s in box])
    brain = anatomy.brain_mask.array[box] > 0
    image = anatomy.image.array[box]
    old = anatomy.old_lesions.array[box] > 0
    white_matter = template.mni_white_matter().array[box]
    if new_lesion_count is None:
        empty = rng.random() < settings.empty_fraction
        new_lesion_count = 0 if empty else int(rng.integers(1, settings.max_new_lesions + 1))
    enlarging = grow_old_lesions(old, brain, white_matter, image, rng, settings)
    occupied = old.copy()
    for placement in enlarging:
        occupied[placement.box()] |= placement.mask
    placements = place_lesions(
        new_lesion_count, library, image, brain, white_matter, occupied, offset, rng, settings
    )
    followup, drawn, brightness = insert_lesions(
        image, [*enlarging, *placements], anatomy.lesion_ratio, rng, settings
    )
    label = drawn
    if enlarging and not settings.label_enlarging:
        label = np.zeros_like(drawn)
        for placement in placements:
            label[placement.box()] |= placement.mask
    growing = old & ndimage.binary_dilation(drawn > 0)
    followup, faded = fade_old_lesions(
        followup, old & ~ndimage.binary_dilation(drawn > 0), rng, settings
    )
    info: dict[str, Any] = {
        "anatomy": anatomy.name,
        "requested_new_lesions": new_lesion_count,
        "new_lesions": [
            {
                "source": p.source,
                "voxels": int(p.mask.sum()),
                "centre_index": [
                    round(float(c), 1) for c in np.array(p.corner) + ndimage.center_of_mass(p.mask)
                ],
                "brightness": round(b, 3),
            }
            for p, b in zip(placements, brightness[len(enlarging) :], strict=True)
        ],
        "enlarging_lesions": [
            {"source": p.source, "grown_voxels": int(p.mask.sum()), "brightness": round(b, 3)}
            for p, b in zip(enlarging, brightness[: len(enlarging)], strict=True)
        ],
        "enlarging_labelled": settings.label_enlarging,
        "growing_old_lesion_voxels": int(growing.sum()),
        "faded_old_lesion_voxels": int(faded.sum()),
        "baseline_acquisition": {},
        "followup_acquisition": {},
    }
    tissues = None
    if settings.tissue_contrast > 0:
        grey, csf = template.mni_grey_matter().array[box], template.mni_csf().array[box]
        tissues = np.stack([white_matter, grey, csf]).astype(np.float32)
    info_base, info_follow = info["baseline_acquisition"], info["followup_acquisition"]
    baseline_image = acquire(image, brain, rng, settings, info_base, tissues, native)
    followup_image = acquire(followup, brain, rng, settings, info_follow, tissues, native)
    if misalignment and not native:  # a native acquisition has a head pose of its own
        followup_image, label, motion = misalign(followup_image, label, rng, settings)
        info["followup_motion"] = motion
    grid = crop(anatomy.image, box)
    brain_volume = grid.with_array(brain.astype(np.uint8))
    baseline_scan, followup_scan = grid.with_array(baseline_image), grid.with_array(followup_image)
    followup_pose = baseline_pose = None
    if native:
        baseline_scan, baseline_pose = acquire_natively(
            baseline_scan, brain_volume, rng, settings, info_base
        )
        followup_scan, followup_pose = acquire_natively(
            followup_scan, brain_volume, rng, settings, info_follow
        )
    return SyntheticPair(
        baseline=zscore(grid.with_array(baseline_image), brain_volume),
        followup=zscore(grid.with_array(followup_image), brain_volume),
        new_lesions=grid.with_array(label.astype(np.uint8)),
        brain_mask=brain_volume,
        faded_old_lesions=grid.with_array(faded.astype(np.uint8)),
        baseline_scan=baseline_scan,
        followup_scan=followup_scan,
        info=info,
        followup_pose=followup_pose,
        baseline_pose=baseline_pose,
    )


def as_segment_sees_it(
    pair: SyntheticPair, options: PreprocessOptions | None = None, match_slices: bool = True
) -> tuple[Volume, Volume, Volume, dict[str, Any]]:
    """The pair's two scans as ``segment`` hands them to the network, and the label there.

    The scans (on the brain box, or on scanners' grids for a ``native`` pair) go through
    :func:`~msnewlesions.preprocessing.model_inputs.model_inputs`
    (registration, HD-BET, N4,
    crop, z-score and, with ``match_slices``, slice matching), as in ``segment``; the label (on
    the follow-up scan's grid) is resampled onto the resulting grid by nearest neighbour. A
    network trained on such pairs meets at training what ``segment`` gives it, not the cleaner
    directly z-scored pair. Returns baseline, follow-up, label and what was done (registration
    QC, slice matches).
    """
    input_options = InputOptions(options or PreprocessOptions(), match_slices)
    inputs = model_inputs(pair.baseline_scan, pair.followup_scan, input_options)
    preprocessed = inputs.preprocessed
    label_to_grid: sitk.Transform = preprocessed.followup_to_mni
    if pair.followup_pose is not None:
        label_to_grid = registration.compose(pair.followup_pose, preprocessed.followup_to_mni)
    label = registration.resample(
        pair.new_lesions, preprocessed.brain_mask, label_to_grid, "nearest"
    )
    info = {"qc": preprocessed.qc.as_dict(), "slice_matches": inputs.slice_matches_as_dicts()}
    binary = label.with_array((label.array > 0).astype(np.uint8))
    return inputs.baseline, inputs.followup, binary, info
