"""Each reviewed pair made once into what training needs, cached in the run's work folder.

For a pair (``WORK/pairs/<id>/``, its ``done.json`` written last):

* the network's two inputs exactly as ``segment`` makes them
  (:func:`~msnewlesions.preprocessing.model_inputs.model_inputs`: registration, brain mask, N4,
  crop, z-score, slice matching), and the reference mask carried onto that grid by nearest
  neighbour through the follow-up's transform;
* the brain's parenchyma there (for the minimum depth of the operating point);
* its new lesions as shapes on the template's grid (:class:`LesionShape`, where they were in MNI
  space), for the synthetic pairs;
* its baseline as anatomy (:func:`~msnewlesions.model.synthesis.anatomy_from_native_scan`, with
  the pair's own brain mask), the real brain the synthetic pairs of this patient are drawn on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from msnewlesions import template
from msnewlesions.atomic import write_json_atomically
from msnewlesions.errors import MSNewLesionsError
from msnewlesions.finetuning.references import ReviewedPair
from msnewlesions.io import Volume, read_volume, write_volume_atomically
from msnewlesions.model.synthesis import (
    Anatomy,
    LesionShape,
    anatomy_from_native_scan,
    lesion_shapes,
    load_anatomy,
)
from msnewlesions.model.synthesis.anatomy import save_anatomy
from msnewlesions.preprocessing import registration
from msnewlesions.preprocessing.model_inputs import InputOptions, model_inputs
from msnewlesions.preprocessing.parenchyma import parenchyma_mask
from msnewlesions.preprocessing.pipeline import PreprocessOptions

logger = logging.getLogger(__name__)

CHANNELS = ("baseline", "followup")


@dataclass(frozen=True)
class PreparedPair:
    """A reviewed pair as training and scoring use it (files in ``folder``)."""

    pair: ReviewedPair
    folder: Path

    def image(self, channel: str) -> Path:
        return self.folder / f"{channel}.nii.gz"

    @property
    def label(self) -> Path:
        return self.folder / "new_lesions.nii.gz"

    @property
    def parenchyma(self) -> Path:
        return self.folder / "parenchyma.nii.gz"

    @property
    def shapes(self) -> Path:
        return self.folder / "lesion_shapes.nii.gz"

    def anatomy(self) -> Anatomy:
        anatomy = load_anatomy(self.folder, self.pair.pair_id)
        if anatomy is None:
            raise MSNewLesionsError(f"{self.folder}: its anatomy was not prepared.")
        return anatomy

    def lesion_shapes(self) -> list[LesionShape]:
        return lesion_shapes(read_volume(self.shapes), self.pair.pair_id, min_voxels=3)


def _binary(volume: Volume) -> Volume:
    return volume.with_array((volume.array > 0).astype(np.uint8))


def prepare_pair(
    pair: ReviewedPair, work: Path, options: PreprocessOptions | None = None
) -> PreparedPair:
    """The pair's inputs, label, parenchyma, shapes and anatomy, made once (resumable)."""
    folder = work / "pairs" / pair.pair_id
    prepared = PreparedPair(pair, folder)
    if (folder / "done.json").exists():
        return prepared
    folder.mkdir(parents=True, exist_ok=True)
    options = options or PreprocessOptions()
    reference = _binary(read_volume(pair.new_lesions))
    followup_scan = read_volume(pair.followup)
    if not reference.same_grid(followup_scan, tolerance_mm=1e-2):
        raise MSNewLesionsError(
            f"{pair.pair_id}: the new_lesions mask is not on the follow-up's grid; give the mask "
            "on the follow-up's own grid, as segment and review apply write it."
        )
    inputs = model_inputs(read_volume(pair.baseline), followup_scan, InputOptions(options))
    preprocessed = inputs.preprocessed
    label = registration.resample(
        reference, inputs.followup, preprocessed.followup_to_mni, "nearest"
    )
    shapes = registration.resample(
        reference.with_array(reference.array.astype(np.float32)),
        template.mni_t1(),
        preprocessed.followup_to_mni,
        "linear",
    )
    parenchyma = parenchyma_mask([inputs.baseline, inputs.followup], preprocessed.brain_mask)
    if load_anatomy(folder, pair.pair_id) is None:
        anatomy = anatomy_from_native_scan(
            pair.pair_id, pair.baseline, options.device, preprocessed.brain_mask
        )
        save_anatomy(anatomy, folder)
    write_volume_atomically(inputs.baseline, prepared.image("baseline"), np.float32)
    write_volume_atomically(inputs.followup, prepared.image("followup"), np.float32)
    write_volume_atomically(_binary(label), prepared.label, np.uint8)
    write_volume_atomically(parenchyma, prepared.parenchyma, np.uint8)
    write_volume_atomically(
        shapes.with_array((shapes.array >= 0.5).astype(np.uint8)), prepared.shapes, np.uint8
    )
    info = {
        "pair": pair.pair_id,
        "reference_voxels_native": int(reference.array.sum()),
        "reference_volume_mm3": round(float(reference.array.sum() * reference.voxel_volume_mm3), 1),
        "label_voxels": int(label.array.sum()),
        "qc": preprocessed.qc.as_dict(),
        "slice_matches": inputs.slice_matches_as_dicts(),
    }
    write_json_atomically(folder / "done.json", info)  # last: marks the pair complete
    logger.info(
        "%s: prepared (%d label voxels on the model's grid)", pair.pair_id, info["label_voxels"]
    )
    return prepared
