"""Real pairs beside synthetic pairs, as ``segment`` gives them to the network: how alike?

A network trained on synthetic pairs learns what they show; where they differ from real pairs,
it learns the synthesis, not the disease. This prints, for the real open_ms_data pairs and for
synthetic pairs of the hold-out scans, made into network inputs by ``segment``'s own
preprocessing (registration, HD-BET or the scans' brain, N4, crop, z-score, slice matching):
"v1", the shipped model's synthesis; "v2", model v2's (``synthesize --realistic``: each visit
acquired on a scanner's grid); "v2 direct", model v2's as most of its training pairs are written
(z-scored on the brain box, no preprocessing):

* follow-up minus baseline inside the brain (z units): spread and tails, and the share of voxels
  changed by more than 1.5 (what the network must learn to ignore);
* the same on the rim (2 voxels) of bright baseline structures away from new lesions (old lesions
  and their edges: where misregistration and slice differences put false "new" signal);
* per-axis detail of each visit (the slice-matching measure, log10 follow-up / baseline);
* tissue contrast per visit: median z of white matter, grey matter and CSF (template maps);
* signal a protocol leaves in the CSF at one visit: of the voxels CSF-dark at baseline (z < -1)
  the share that gains more than 1.5 at follow-up, and the 99th percentile of their gain; the
  same for voxels CSF-dark at follow-up that were brighter at baseline;
* the new lesions (real: the change mask's components that gain signal): count, median size
  (mm3), median follow-up z and median change inside.

    python benchmarks/realism.py [--data ../shared/data/open_ms_data] [--pairs 3] [--seed 7]
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from msnewlesions import template
from msnewlesions.io import Volume, read_volume
from msnewlesions.lesions import components
from msnewlesions.model import datasets, synthesis
from msnewlesions.preprocessing import registration
from msnewlesions.preprocessing.model_inputs import model_inputs
from msnewlesions.preprocessing.resolution import axis_sharpness

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/open_ms_data"


def _on_grid(map_: Volume, grid: Volume) -> np.ndarray:
    return registration.resample(map_, grid, sitk.Euler3DTransform()).array


def csf_gain(baseline: np.ndarray, followup: np.ndarray, inside: np.ndarray) -> dict:
    """How much CSF-dark voxels (z < -1 at one visit) gain at the other (see the docstring)."""
    figures = {}
    for name, dark, gain in (
        ("base", baseline < -1, followup - baseline),
        ("follow", followup < -1, baseline - followup),
    ):
        values = gain[dark & inside]
        figures[f"csf_{name}_gain>1.5_%"] = float(100 * (values > 1.5).mean())
        figures[f"csf_{name}_gain_p99"] = float(np.percentile(values, 99))
    return figures


def statistics(baseline: Volume, followup: Volume, brain: Volume, label: Volume) -> dict:
    """The figures of one pair of network inputs (see the module's docstring)."""
    inside = brain.array > 0
    new = label.array > 0
    difference = followup.array - baseline.array
    changed = difference[inside & ~new]
    bright = (baseline.array > 2.5) & inside & ~ndimage.binary_dilation(new, iterations=3)
    rim = ndimage.binary_dilation(bright, iterations=2) & ~bright & inside
    tissue = {
        name: _on_grid(map_, brain) > 0.9
        for name, map_ in (
            ("wm", template.mni_white_matter()),
            ("gm", template.mni_grey_matter()),
            ("csf", template.mni_csf()),
        )
    }
    sharpness = np.log10(axis_sharpness(followup.array, inside)) - np.log10(
        axis_sharpness(baseline.array, inside)
    )
    labels, count = components(new)
    sizes = np.bincount(labels.ravel())[1:] * label.voxel_volume_mm3 if count else np.zeros(0)
    figures = {
        "diff_std": float(changed.std()),
        "diff_p1": float(np.percentile(changed, 1)),
        "diff_p99": float(np.percentile(changed, 99)),
        "changed_gt_1.5_%": float(100 * (np.abs(changed) > 1.5).mean()),
        "rim_abs_diff_mean": float(np.abs(difference[rim]).mean()) if rim.any() else np.nan,
        "rim_diff_p95": float(np.percentile(difference[rim], 95)) if rim.any() else np.nan,
        "sharpness_x": float(sharpness[0]),
        "sharpness_y": float(sharpness[1]),
        "sharpness_z": float(sharpness[2]),
        **csf_gain(baseline.array, followup.array, inside & ~new),
        "new_lesions": float(count),
        "new_median_mm3": float(np.median(sizes)) if count else np.nan,
        "new_followup_z": float(np.median(followup.array[new])) if count else np.nan,
        "new_change_z": float(np.median(difference[new])) if count else np.nan,
    }
    for visit, image in (("base", baseline), ("follow", followup)):
        for name, mask in tissue.items():
            figures[f"{visit}_{name}_z"] = float(np.median(image.array[mask & inside]))
    return figures


def real_pairs(data: Path) -> dict[str, dict]:
    found = {}
    for case in datasets.read_open_ms_data(data):
        inputs = model_inputs(read_volume(case.baseline), read_volume(case.followup))
        pair = inputs.preprocessed
        assert case.label is not None
        label, _ = datasets.training_label(case, pair, new_only=True)
        found[case.patient] = statistics(inputs.baseline, inputs.followup, pair.brain_mask, label)
        print(f"measured {case.patient}", file=sys.stderr)
    return found


def synthetic_pairs(data: Path, pairs: int, seed: int, kind: str, cache: Path) -> list[dict]:
    """``kind``: ``"v1"`` (the shipped model's synthesis, as segment sees the pairs), ``"v2"``
    (model v2's, each visit acquired on a scanner's grid, as segment sees them) or
    ``"v2 direct"`` (model v2's pairs as most of its training pairs are written: z-scored on the
    brain box, without segment's preprocessing)."""
    sources, masks = synthesis.open_ms_data_sources(data)
    if kind == "v1":
        library = synthesis.lesion_library(masks)
        settings = synthesis.SynthesisSettings()
    else:
        library = synthesis.change_library(synthesis.open_ms_data_change_masks(data))
        settings = synthesis.REALISTIC
    # Every pair with new lesions: their figures are part of the comparison.
    settings = replace(settings, empty_fraction=0.0)
    native = kind == "v2"
    found = []
    for index, source in enumerate(sources):
        if source.patient not in synthesis.HOLDOUT_PATIENTS:
            continue
        anatomy = synthesis.prepare_anatomy(source, cache)
        for pair_index in range(pairs):
            rng = synthesis.pair_rng(seed, index, pair_index)
            pair = synthesis.synthesize_pair(anatomy, library, rng, settings, native=native)
            if kind == "v2 direct":
                baseline, followup, label = pair.baseline, pair.followup, pair.new_lesions
            else:
                baseline, followup, label, _ = synthesis.as_segment_sees_it(pair)
            brain = label.with_array((baseline.array != 0).astype(np.uint8))
            found.append(statistics(baseline, followup, brain, label))
            print(f"measured {kind}: {anatomy.name} {pair_index}", file=sys.stderr)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--pairs", type=int, default=3, help="synthetic pairs per hold-out scan")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cache", type=Path, default=Path("benchmark_output/anatomy"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if not datasets.read_open_ms_data(args.data):
        print(f"no complete pair under {args.data}; nothing to measure", file=sys.stderr)
        return 1
    columns = real_pairs(args.data)
    for kind in ("v1", "v2", "v2 direct"):
        name = f"synthetic {kind}"
        rows = synthetic_pairs(args.data, args.pairs, args.seed, kind, args.cache)
        columns[f"{name} (mean)"] = {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]}
        columns[f"{name} (sd)"] = {k: float(np.nanstd([r[k] for r in rows])) for k in rows[0]}
    names = list(columns)
    print(f"\n{'figure':<20}" + "".join(f"{n:>18}" for n in names))
    for key in columns[names[0]]:
        print(f"{key:<20}" + "".join(f"{columns[n][key]:>18.3f}" for n in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
