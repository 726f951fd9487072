"""Choose ``segment``'s post-processing (probability threshold, minimum lesion volume) for a model
on its own validation split, never on the pairs the accuracy benchmark reports.

The network's probability maps of the validation cases of one fold (``splits_final.json`` of the
training dataset: for the default model, synthetic pairs from the hold-out patients' scans drawn
with the training seed, never trained on) are computed once and cached in WORK; every (threshold,
minimum volume) of the grid is then applied as ``segment`` applies it (6-connected components,
those of the minimum volume or less dropped) and scored with MSSEG-2's lesion-wise detection:
mean Dice and lesion F1 on the cases with new lesions, false lesions per case without, and the
pooled lesion F1 over every case (detected lesions / all true lesions, true / all marked lesions,
the empty cases' false lesions included), which is what the choice maximises; near ties (0.005)
go to the smaller minimum volume, then the threshold nearest 0.5. ``--write`` saves the choice
as the model's ``postprocessing.json``, which ``segment`` then applies by default.

The minimum depth inside the brain's parenchyma (``--min-depth-mm``, default: the model's own) is
not chosen here: synthetic pairs have neither lesions at the brain's surface nor the artefacts that
real pairs show there, so they cannot price it. It is applied as ``segment`` applies it (inside
the brain mask without the fluid at its surface, made from the case's two inputs and carried to
its label's grid), and written with the choice.

The training run's own split (4 pairs per hold-out scan, 16 in all) is too small to choose on:
one pair's false lesions swing the choice. The default model's settings were chosen on 12 pairs
per hold-out scan, the same seed (its first 16 pairs are the training split's), made with

    msnewlesions synthesize --open-ms-data ../shared/data/open_ms_data --out WORK/selection \\
        --cache WORK/anatomy --pairs 0 --holdout-pairs 12

    python benchmarks/postprocessing.py --dataset WORK/selection/Dataset510_MSNewLesions
        [--model DIR] [--fold 0] [--work benchmark_output/postprocessing]
        [--tta [--tta-axes 0 ...]] [--write]
        [--no-slice-matching] [--through-segment [--data open_ms_data] [--anatomy-cache DIR]
        [--inputs-cache DIR] [--realistic]] [--min-depth-mm MM]

The network alone on the dataset's preprocessed pairs is quick (10-15 s a pair) but sees cleaner
inputs than ``segment`` does (no registration or skull stripping of the synthetic scans), and it
under-counts false lesions: on the default model, 0.00 false lesions per empty pair there against
0.12-0.69 on the accuracy benchmark's draws. ``--through-segment`` draws the same pairs again
from their seeds as scans and gives them to the network as ``segment`` does (its own
``model_inputs``; 35-60 s a pair the first time, the network alone for a further model: the
inputs are cached), which is what the shipped settings are chosen on.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
from pathlib import Path

import numpy as np

from msnewlesions.errors import MSNewLesionsError
from msnewlesions.io import Volume, read_volume
from msnewlesions.lesions import PostprocessingSettings, write_model_postprocessing
from msnewlesions.operating_point import ScoredCase, choose_operating_point
from msnewlesions.operating_point import grid as operating_grid
from msnewlesions.preprocessing.parenchyma import parenchyma_mask
from msnewlesions.preprocessing.resolution import match_resolution

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/open_ms_data"
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
MIN_VOLUMES_MM3 = (3.0, 5.0, 8.0, 10.0, 15.0, 20.0)


def validation_cases(dataset: Path, fold: int) -> list[str]:
    splits = json.loads((dataset / "splits_final.json").read_text())
    return list(splits[fold]["val"])


def cached_probability(
    case: str,
    dataset: Path,
    work: Path,
    predictor_factory,
    tta: str = "",
    match_slices: bool = True,
) -> np.ndarray:
    """The case's probability map (float16 in WORK), computed by the network the first time.

    Its inputs are resolution-matched first, as ``segment`` does, unless ``match_slices`` is off.
    ``tta``: the test-time augmentation's tag in the cache's name (see :func:`tta_tag`).
    """
    cache = work / f"{case}_probability{cache_suffix(tta, match_slices)}.npz"
    if cache.exists():
        return np.load(cache)["probability"].astype(np.float32)
    baseline, followup = dataset_pair(dataset, case)
    if match_slices:
        brain = (baseline.array != 0) | (followup.array != 0)
        brain_mask = baseline.with_array(brain.astype(np.uint8))
        baseline, followup, matches = match_resolution(baseline, followup, brain_mask)
        for match in matches:
            logging.info("%s: %s", case, match.as_dict())
    probability = predictor_factory().probability(baseline, followup).array
    np.savez_compressed(cache, probability=probability.astype(np.float16))
    return probability


def dataset_pair(dataset: Path, case: str) -> tuple[Volume, Volume]:
    return tuple(  # type: ignore[return-value]
        read_volume(dataset / "imagesTr" / f"{case}_{channel}.nii.gz")
        for channel in ("0000", "0001")
    )


def dataset_parenchyma(dataset: Path, case: str) -> Volume:
    """A preprocessed pair's parenchyma, as ``predict`` takes it: the brain (where either channel
    is non-zero) without the fluid at its surface."""
    baseline, followup = dataset_pair(dataset, case)
    brain = baseline.with_array(((baseline.array != 0) | (followup.array != 0)).astype(np.uint8))
    return parenchyma_mask([baseline, followup], brain)


def tta_tag(tta: bool, axes: list[int] | None) -> str:
    """How cached probabilities of a test-time augmentation are told apart: "", "_tta", "_tta0"."""
    return ("_tta" + "".join(str(a) for a in axes or [])) if tta else ""


def cache_suffix(tta: str, match_slices: bool) -> str:
    """The end of a cached probability's name: its augmentation tag, and whether unmatched."""
    return tta + ("" if match_slices else "_unmatched")


class SegmentedSelection:
    """The selection pairs as ``segment`` sees them: drawn again from their seeds as scans, made
    into the network's inputs by segment's own ``model_inputs``
    (registration, HD-BET, N4, slice matching), and the probability carried back onto the pair's
    grid, where its label lives.

    The inputs do not depend on the model: they are cached in ``inputs_cache`` (NIfTI and the
    follow-up's ITK transform), so that a second model is scored on the same inputs at the cost
    of its network alone.
    """

    def __init__(
        self,
        dataset: Path,
        data: Path,
        anatomy_cache: Path,
        inputs_cache: Path,
        predictor_factory,
        realistic: bool = False,
    ) -> None:
        from msnewlesions.model import synthesis

        self.records = json.loads((dataset / "msnewlesions_cases.json").read_text())
        sources, masks = synthesis.open_ms_data_sources(data)
        self.sources = {source.name: source for source in sources}
        self.realistic = realistic
        if realistic:
            self.library = synthesis.change_library(synthesis.open_ms_data_change_masks(data))
        else:
            self.library = synthesis.lesion_library(masks)
        self.anatomy_cache = anatomy_cache
        self.inputs_cache = inputs_cache
        self.predictor_factory = predictor_factory

    def refused(self, case: str, match_slices: bool) -> str | None:
        """Why segment refused the case's scans (its input checks), or None."""
        folder = self.inputs_cache / ("matched" if match_slices else "unmatched")
        note = folder / f"{case}_refused.txt"
        return note.read_text().strip() if note.exists() else None

    def probability(
        self, case: str, reference: Volume, work: Path, match_slices: bool, tta: str = ""
    ) -> tuple[np.ndarray, Volume, Volume] | None:
        """The case's probability on its label's grid (float16 in WORK), segmented once, that
        label (the dataset's; with ``realistic``, the redrawn pair's, before any motion) and
        the brain's parenchyma (segment's brain mask without the fluid at its surface) carried
        onto it; None when segment refuses the pair (as a user
        would get no mask), the reason kept in the inputs cache."""
        if self.refused(case, match_slices) is None:
            try:
                self._inputs(case, reference, match_slices)
            except MSNewLesionsError as error:
                folder = self.inputs_cache / ("matched" if match_slices else "unmatched")
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{case}_refused.txt").write_text(f"{error}\n")
        if self.refused(case, match_slices) is not None:
            return None
        cache = work / f"{case}_segment_probability{cache_suffix(tta, match_slices)}.npz"
        if not cache.exists():
            probability = self._segment(case, reference, match_slices)
            np.savez_compressed(cache, probability=probability.astype(np.float16))
        if self.realistic:
            folder = self.inputs_cache / ("matched" if match_slices else "unmatched")
            reference = read_volume(folder / f"{case}_label.nii.gz")
        baseline, followup, brain, _, _ = self._inputs(case, reference, match_slices)
        parenchyma = parenchyma_mask([baseline, followup], brain)
        parenchyma = self._to_label_grid(case, parenchyma, reference, match_slices, "nearest")
        return np.load(cache)["probability"].astype(np.float32), reference, parenchyma

    def _inputs(self, case: str, reference: Volume, match_slices: bool):
        """The network's two inputs, the brain mask and the follow-up's transform to MNI."""
        import SimpleITK as sitk

        from msnewlesions.io import write_volume_atomically
        from msnewlesions.model import synthesis
        from msnewlesions.preprocessing.model_inputs import InputOptions, model_inputs

        folder = self.inputs_cache / ("matched" if match_slices else "unmatched")
        names = [folder / f"{case}_{part}.nii.gz" for part in ("0000", "0001", "brain")]
        transform_file = folder / f"{case}_followup_to_mni.tfm"
        if not transform_file.exists():
            record = self.records[case]
            anatomy = synthesis.prepare_anatomy(self.sources[record["anatomy"]], self.anatomy_cache)
            rng = np.random.default_rng(tuple(record["seed"]))
            if self.realistic:  # acquired on scanners' grids, as segment-made training pairs
                pair = synthesis.synthesize_pair(
                    anatomy, self.library, rng, synthesis.REALISTIC, native=True
                )
                same = pair.info["new_lesions"] == record["new_lesions"]
            else:
                pair = synthesis.synthesize_pair(anatomy, self.library, rng)
                same = np.array_equal(pair.new_lesions.array, reference.array)
            if not same:
                raise SystemExit(
                    f"{case}: drawn again from its seed, the pair differs from the dataset"
                )
            inputs = model_inputs(
                pair.baseline_scan, pair.followup_scan, InputOptions(match_slices=match_slices)
            )
            for match in inputs.slice_matches:
                logging.info("%s: %s", case, match)
            folder.mkdir(parents=True, exist_ok=True)
            volumes = (inputs.baseline, inputs.followup, inputs.preprocessed.brain_mask)
            for volume, name in zip(volumes, names, strict=True):
                write_volume_atomically(volume, name, np.float32)
            if pair.followup_pose is not None:
                write_volume_atomically(pair.new_lesions, folder / f"{case}_label.nii.gz", np.uint8)
                sitk.WriteTransform(pair.followup_pose, str(folder / f"{case}_pose.tfm"))
            # The transform last: its presence marks the case's inputs complete.
            sitk.WriteTransform(inputs.preprocessed.followup_to_mni, str(transform_file))
        baseline, followup, brain = (read_volume(name) for name in names)
        pose_file = folder / f"{case}_pose.tfm"
        pose = sitk.ReadTransform(str(pose_file)) if pose_file.exists() else None
        return baseline, followup, brain, sitk.ReadTransform(str(transform_file)), pose

    def _segment(self, case: str, reference: Volume, match_slices: bool) -> np.ndarray:
        """As ``segment_pair``: the network, masked to the brain, back on the label's grid."""
        baseline, followup, brain, _, _ = self._inputs(case, reference, match_slices)
        probability = self.predictor_factory().probability(baseline, followup)
        probability = probability.with_array(probability.array * (brain.array > 0))
        return self._to_label_grid(case, probability, reference, match_slices, "linear").array

    def _to_label_grid(
        self, case: str, volume: Volume, reference: Volume, match_slices: bool, interpolation: str
    ) -> Volume:
        """An MNI-grid volume of the case on its label's grid (the follow-up's, or with a native
        acquisition the grid that scan was acquired from)."""
        from msnewlesions.preprocessing import registration

        _, _, _, followup_to_mni, pose = self._inputs(case, reference, match_slices)
        to_label = registration.invert(followup_to_mni)  # the follow-up's grid is the label's
        if pose is not None:  # the label lies on the grid the scan was acquired from
            to_label = registration.compose(to_label, registration.invert(pose))
        return registration.resample(volume, reference, to_label, interpolation)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True, help="the training raw dataset")
    parser.add_argument("--model", type=Path, default=None, help="default: the shipped model")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("benchmark_output/postprocessing"))
    parser.add_argument(
        "--tta",
        action="store_true",
        help="mirroring test-time augmentation (8 network passes per tile)",
    )
    parser.add_argument(
        "--tta-axes",
        type=int,
        nargs="+",
        default=None,
        help="with --tta, mirror along these volume axes only (0: left-right in MNI space; "
        "one axis: 2 passes per tile)",
    )
    parser.add_argument(
        "--no-slice-matching",
        action="store_true",
        help="feed the pairs as they are (segment --no-slice-matching)",
    )
    parser.add_argument(
        "--through-segment",
        action="store_true",
        help="score the pairs as segment sees them: redrawn as scans and segmented from scratch",
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="open_ms_data")
    parser.add_argument(
        "--anatomy-cache", type=Path, default=None, help="prepared anatomy [WORK/anatomy]"
    )
    parser.add_argument(
        "--inputs-cache",
        type=Path,
        default=None,
        help="--through-segment: the network's inputs, shared between models [WORK/inputs]",
    )
    parser.add_argument(
        "--realistic",
        action="store_true",
        help="--through-segment on a synthesize --realistic dataset: redraw its pairs as model "
        "v2's segment-made pairs (each visit acquired on a scanner's grid)",
    )
    parser.add_argument(
        "--min-depth-mm",
        type=float,
        default=None,
        help="lesions reaching less deep inside the brain's parenchyma are dropped, as segment "
        "drops them (default: the model's own setting); not chosen here, written with the choice",
    )
    parser.add_argument("--write", action="store_true", help="save the choice in the model")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if (args.tta or args.no_slice_matching) and args.write:
        print(
            "--write saves settings for segment's default inference, which matches slices and "
            "runs without --tta; choose without --tta and --no-slice-matching to write them",
            file=sys.stderr,
        )
        return 1
    if not (args.dataset / "splits_final.json").exists():
        print(
            f"{args.dataset} has no splits_final.json; "
            "pass a dataset made by msnewlesions synthesize",
            file=sys.stderr,
        )
        return 1
    args.work.mkdir(parents=True, exist_ok=True)
    predictor = None

    def predictor_factory():
        nonlocal predictor
        if predictor is None:
            from msnewlesions.model.default import default_model
            from msnewlesions.model.nnunet import NewLesionPredictor

            predictor = NewLesionPredictor(
                args.model or default_model(),
                test_time_augmentation=args.tta,
                mirror_axes=args.tta_axes,
            )
        return predictor

    if args.tta_axes and not args.tta:
        print("--tta-axes needs --tta", file=sys.stderr)
        return 1
    selection = None
    if args.through_segment:
        anatomy_cache = args.anatomy_cache or args.work / "anatomy"
        inputs_cache = args.inputs_cache or args.work / "inputs"
        selection = SegmentedSelection(
            args.dataset, args.data, anatomy_cache, inputs_cache, predictor_factory, args.realistic
        )
    tta = tta_tag(args.tta, args.tta_axes)
    cases = []
    refused: list[str] = []
    for case in validation_cases(args.dataset, args.fold):
        reference = read_volume(args.dataset / "labelsTr" / f"{case}.nii.gz")
        if selection is None:
            probability = cached_probability(
                case,
                args.dataset,
                args.work,
                predictor_factory,
                tta,
                not args.no_slice_matching,
            )
            parenchyma = dataset_parenchyma(args.dataset, case)
        else:
            segmented = selection.probability(
                case,
                reference,
                args.work,
                not args.no_slice_matching,
                tta,
            )
            if segmented is None:
                refused.append(case)
                logging.info("%s: refused by segment: %s", case, selection.refused(case, True))
                continue
            probability, reference, parenchyma = segmented
        cases.append((case, probability, reference, parenchyma))
        logging.info("%s: max probability %.2f", case, float(probability.max()))

    from msnewlesions.lesions import model_postprocessing
    from msnewlesions.model.default import default_model

    model_folder = args.model or default_model()
    min_depth = args.min_depth_mm
    if min_depth is None:
        min_depth = model_postprocessing(model_folder).min_depth_mm
    scored = [
        ScoredCase(case, reference.with_array(probability), reference, parenchyma)
        for case, probability, reference, parenchyma in cases
    ]
    best, scores = choose_operating_point(
        scored, operating_grid(min_depth, THRESHOLDS, MIN_VOLUMES_MM3)
    )

    def nan_if_none(value: float | None) -> float:
        return float("nan") if value is None else value

    grid = [
        {
            "threshold": score.settings.threshold,
            "min_lesion_mm3": score.settings.min_lesion_mm3,
            "min_depth_mm": min_depth,
            "dice": nan_if_none(score.dice),
            "lesion_f1": nan_if_none(score.lesion_f1),
            "false_positives_per_empty_case": nan_if_none(score.false_lesions_per_empty_case),
            "pooled_lesion_f1": score.pooled_lesion_f1,
        }
        for score in scores
    ]
    n_with = sum(1 for _, _, r, _ in cases if r.array.any())
    print(
        f"\nvalidation cases of fold {args.fold}: {n_with} with new lesions, "
        f"{len(cases) - n_with} without"
        + (
            f"; {len(refused)} refused by segment, not scored: {', '.join(refused)}"
            if refused
            else ""
        )
    )
    print(
        f"{'threshold':>9} {'min mm3':>8} {'dice':>7} {'lesion_f1':>9} {'FP/empty':>9} "
        f"{'pooled F1':>9}"
    )
    for row in grid:
        print(
            f"{row['threshold']:>9.1f} {row['min_lesion_mm3']:>8.0f} {row['dice']:>7.3f} "
            f"{row['lesion_f1']:>9.3f} {row['false_positives_per_empty_case']:>9.2f} "
            f"{row['pooled_lesion_f1']:>9.3f}"
        )
    choice = grid[scores.index(best)]
    print(
        f"\nchoice: threshold {choice['threshold']}, minimum lesion volume "
        f"{choice['min_lesion_mm3']:.0f} mm3, minimum depth {min_depth:g} mm "
        f"(pooled lesion F1 {choice['pooled_lesion_f1']:.3f}; "
        f"lesion F1 {choice['lesion_f1']:.3f} on cases with new lesions, "
        f"{choice['false_positives_per_empty_case']:.2f} false lesions per case without)"
    )
    if args.write:
        model = model_folder
        settings = PostprocessingSettings(choice["threshold"], choice["min_lesion_mm3"], min_depth)
        flags = " --through-segment" if args.through_segment else ""
        flags += " --realistic" if args.realistic else ""
        folds = "+".join(p.name.removeprefix("fold_") for p in sorted(model.glob("fold_*")))
        note = (
            f"benchmarks/postprocessing.py{flags} on {datetime.date.today().isoformat()} for "
            f"fold(s) {folds}: fold {args.fold} validation split of {args.dataset.name} "
            f"({len(cases)} cases"
            + (", segmented from their scans" if args.through_segment else "")
            + "), best pooled lesion F1"
            + ("" if args.no_slice_matching else ", slice-matched inputs as segment feeds them")
            + (f"; {len(refused)} cases segment refused left out" if refused else "")
            + (f"; minimum depth {min_depth:g} mm set beforehand, not chosen" if min_depth else "")
        )
        print(f"written: {write_model_postprocessing(model, settings, note)}")
    result = {
        "model": str(args.model or "shipped"),
        "test_time_augmentation": args.tta,
        "test_time_augmentation_axes": args.tta_axes if args.tta else None,
        "slice_matching": not args.no_slice_matching,
        "through_segment": args.through_segment,
        "grid": grid,
        "refused_by_segment": refused,
        "choice": choice,
    }
    (args.work / "postprocessing.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
