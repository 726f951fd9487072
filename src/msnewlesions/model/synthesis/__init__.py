"""Synthetic longitudinal pairs: real anatomy, real lesion shapes, a realistic second timepoint.

We have two real pairs with new-lesion labels, but ten real FLAIR scans and 29 expert lesion masks.
Lesion-aware augmentation (Basaran et al., 2022) turns single scans into training pairs:

* **anatomy** (:class:`Anatomy`): one real FLAIR in MNI space (1 mm, the template's grid),
  skull-stripped and bias-corrected, scaled so that its white-matter median is 1. These are MS
  patients: their own (old) lesions are present at both timepoints and are never labelled.
* **new lesions**: real shapes (:class:`LesionShape`, the 6-connected components of the expert
  masks) at the MNI position where a patient had them, shifted by a few millimetres and sometimes
  mirrored left-right, accepted only where this brain has tissue (not CSF, not outside the brain)
  and white matter (the template's probability map), away from other lesions. Each is drawn
  hyperintense like this scan's own lesions, with a partial-volume edge (the binary shape
  smoothed) and a faint texture; the label is the binary shape, so its volume is the shape's.
* **model v2** (``REALISTIC``, ``synthesize --realistic``): the shapes, sizes and MNI positions
  of real changes between two visits (:mod:`~msnewlesions.model.synthesis.changes`), old lesions
  that grow at the follow-up (labelled, by default), per-tissue contrast changes, and signal
  left in the CSF at some acquisitions (``acquisition.csf_signal``).
* **a second timepoint** that differs from the first as real ones do: its own noise, blur, smooth
  bias field and contrast (gamma), a different slice thickness (resampled through 3-5 mm slices
  and back), a small residual misalignment (at most ``misalignment_mm`` and
  ``misalignment_degrees``), and old lesions that shrink or fade - which are not new and carry no
  label.

Everything is drawn from ``numpy.random.default_rng((seed, anatomy_index, pair_index))``: a pair
does not depend on which other pairs were made, so a dataset can be resumed or extended.
"""

from msnewlesions.model.synthesis.acquisition import acquire, bias_field, misalign
from msnewlesions.model.synthesis.anatomy import (
    Anatomy,
    AnatomySource,
    LesionShape,
    anatomy_from_mni_scan,
    anatomy_from_native_scan,
    estimate_old_lesions,
    lesion_library,
    lesion_shapes,
    load_anatomy,
    open_ms_data_sources,
    prepare_anatomy,
    save_anatomy,
)
from msnewlesions.model.synthesis.changes import (
    change_library,
    grow_old_lesions,
    open_ms_data_change_masks,
)
from msnewlesions.model.synthesis.dataset import (
    HOLDOUT_PATIENTS,
    PREPROCESSED_STREAM,
    SyntheticDatasetPlan,
    case_id,
    synthesize_dataset,
    write_synthetic_dataset,
)
from msnewlesions.model.synthesis.new_lesions import (
    Placement,
    fade_old_lesions,
    insert_lesions,
    place_lesions,
)
from msnewlesions.model.synthesis.pairs import (
    SyntheticPair,
    as_segment_sees_it,
    pair_rng,
    synthesize_pair,
)
from msnewlesions.model.synthesis.settings import REALISTIC, SynthesisSettings

__all__ = [
    "HOLDOUT_PATIENTS",
    "PREPROCESSED_STREAM",
    "REALISTIC",
    "Anatomy",
    "AnatomySource",
    "LesionShape",
    "Placement",
    "SynthesisSettings",
    "SyntheticDatasetPlan",
    "SyntheticPair",
    "acquire",
    "anatomy_from_mni_scan",
    "anatomy_from_native_scan",
    "as_segment_sees_it",
    "bias_field",
    "case_id",
    "change_library",
    "estimate_old_lesions",
    "fade_old_lesions",
    "grow_old_lesions",
    "insert_lesions",
    "lesion_library",
    "lesion_shapes",
    "load_anatomy",
    "misalign",
    "open_ms_data_change_masks",
    "open_ms_data_sources",
    "pair_rng",
    "place_lesions",
    "prepare_anatomy",
    "save_anatomy",
    "synthesize_dataset",
    "synthesize_pair",
    "write_synthetic_dataset",
]
