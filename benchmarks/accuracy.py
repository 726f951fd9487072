"""Accuracy of a model: ``segment`` then the evaluation metrics, on synthetic hold-out pairs and
on every complete real pair of open_ms_data.

* Synthetic hold-out pairs are drawn (seed ``--seed``, not the training seed) from the scans of the
  hold-out patients (``synthesis.HOLDOUT_PATIENTS``), which the default model never trained on:
  ``--with-lesions`` pairs with 1-10 new lesions and ``--without`` pairs with none per scan. Each
  pair's two acquisitions are written as scans and run through ``segment`` (registration, HD-BET,
  N4, slice matching, network, mapping back), unless ``--direct`` feeds the already-preprocessed
  pair (slice-matched, as segment does) to the network (the model alone, faster). The tables
  show each pair's slice thickness and what slice matching did (``--no-slice-matching`` turns it
  off, to compare). ``--realistic`` draws them as model v2's training pairs are drawn (real
  change shapes, enlarging lesions labelled, tissue contrasts, each visit acquired on a scanner's
  grid at its own head pose); they are then scored on the follow-up scan's own grid.
* Real pairs: ``segment`` on the raw FLAIRs; the mask is carried onto the database's common grid
  by its reference transform and scored against the full change mask, and against its
  new/enlarging part (components gaining FLAIR signal, as the dataset's ``new_only`` rule).

Prints per-case tables (Dice, recall, lesion F1, lesion counts) and their means; writes every
figure to WORK/accuracy.json.

    python benchmarks/accuracy.py [--model DIR] [--data ../shared/data/open_ms_data]
        [--work DIR] [--with-lesions 3] [--without 2] [--seed 99] [--direct] [--realistic]
        [--no-slice-matching]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from msnewlesions.io import Volume, read_volume, write_volume
from msnewlesions.metrics import case_metrics
from msnewlesions.model import datasets, synthesis
from msnewlesions.preprocessing import registration
from msnewlesions.preprocessing.resolution import match_resolution

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/open_ms_data"
COLUMNS = ("dice", "recall", "lesion_sensitivity", "lesion_ppv", "lesion_f1")


def score(prediction: np.ndarray, reference: np.ndarray, voxel_mm3: float) -> dict[str, Any]:
    metrics = case_metrics(prediction, reference, voxel_mm3)
    return {
        "dice": metrics.dice,
        "recall": metrics.recall,
        "lesion_sensitivity": metrics.lesion_sensitivity,
        "lesion_ppv": metrics.lesion_ppv,
        "lesion_f1": metrics.lesion_f1,
        "n_ref_lesions": metrics.n_ref_lesions,
        "n_pred_lesions": metrics.n_pred_lesions,
    }


def slices(info: dict[str, Any]) -> str:
    """'baseline/follow-up' slice thickness (mm) of a synthetic pair; '-': not resliced."""

    def thickness(acquisition: dict[str, Any]) -> str:
        return f"{acquisition['reslice']['thickness_mm']:.1f}" if "reslice" in acquisition else "-"

    return f"{thickness(info['baseline_acquisition'])}/{thickness(info['followup_acquisition'])}"


def matched(slice_matches: list[dict[str, Any]]) -> str:
    """What slice matching did: 'b2:4.0' = the baseline resliced along axis 2 through 4.0 mm."""
    if not slice_matches:
        return "-"
    return ",".join(f"{m['resliced'][0]}{m['axis']}:{m['thickness_mm']:.1f}" for m in slice_matches)


def print_table(title: str, rows: list[dict[str, Any]]) -> dict[str, float | None]:
    print(f"\n{title}")
    header = f"{'case':48s}" + "".join(f"{c[:12]:>13s}" for c in COLUMNS) + "   ref  pred"
    print(header + ("  slices (mm)  matched" if any("slices" in row for row in rows) else ""))

    def cell(value: float | None) -> str:
        return f"{'-':>13s}" if value is None else f"{value:13.3f}"

    for row in rows:
        print(
            f"{row['case']:48s}"
            + "".join(cell(row[c]) for c in COLUMNS)
            + f"{row['n_ref_lesions']:6d}{row['n_pred_lesions']:6d}"
            + (f"  {row['slices']:11s}  {row['matched']}" if "slices" in row else "")
        )
    means: dict[str, float | None] = {}
    for column in COLUMNS:
        values = [row[column] for row in rows if row[column] is not None]
        means[column] = float(np.mean(values)) if values else None
    print(f"{'mean':48s}" + "".join(cell(means[c]) for c in COLUMNS))
    if rows and "slices" in rows[0]:
        print(
            "slices: baseline/follow-up slice thickness, mm ('-': not resliced); matched: the "
            "scan (b/f) segment resliced, along which axis, through how many mm"
        )
    return means


def segment_folder(
    baseline: Path,
    followup: Path,
    out: Path,
    model: Path | None,
    match_slices: bool = True,
    refusal_allowed: bool = False,
) -> Path | None:
    """``segment``'s mask of the pair (segmented once into ``out``). With ``refusal_allowed``,
    a pair that segment refuses (its input checks: one clear sentence, exit status 1) gives
    None, its sentence kept in ``out/refused.txt``; else the benchmark stops there."""
    from msnewlesions.cli import main

    refused = out / "refused.txt"
    if refusal_allowed and refused.exists():
        return None
    if not (out / "new_lesions.nii.gz").exists():
        argv = ["segment", "--baseline", str(baseline), "--followup", str(followup)]
        argv += ["--out", str(out), "-q", "--overwrite"]
        if model is not None:
            argv += ["--model", str(model)]
        if not match_slices:
            argv += ["--no-slice-matching"]
        status = main(argv)
        if status == 1 and refusal_allowed:
            out.mkdir(parents=True, exist_ok=True)
            refused.write_text("segment refused this pair (its message is in the log)\n")
            return None
        if status != 0:
            raise SystemExit(f"segment failed on {baseline} / {followup}")
    return out / "new_lesions.nii.gz"


def synthetic_holdout(
    args: argparse.Namespace,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The scored pairs, and those segment refused (its input checks), which are not scored."""
    from msnewlesions.model.default import default_model
    from msnewlesions.model.nnunet import NewLesionPredictor
    from msnewlesions.segment import predict_lesions

    sources, masks = synthesis.open_ms_data_sources(args.data)
    if args.realistic:
        library = synthesis.change_library(synthesis.open_ms_data_change_masks(args.data))
        settings = synthesis.REALISTIC
    else:
        library = synthesis.lesion_library(masks)
        settings = synthesis.SynthesisSettings()
    native = args.realistic and not args.direct
    predictor = None
    rows: list[dict[str, Any]] = []
    refusals: list[dict[str, Any]] = []
    for index, source in enumerate(sources):
        if source.patient not in synthesis.HOLDOUT_PATIENTS:
            continue
        anatomy = synthesis.prepare_anatomy(source, args.work / "anatomy")
        for pair_index in range(args.with_lesions + args.without):
            rng = synthesis.pair_rng(args.seed, index, pair_index)
            count = int(rng.integers(1, 11)) if pair_index < args.with_lesions else 0
            pair = synthesis.synthesize_pair(anatomy, library, rng, settings, count, native=native)
            truth, voxel_mm3 = pair.new_lesions, 1.0
            if pair.followup_pose is not None:  # scored on the follow-up scan's own grid
                truth = registration.resample(
                    pair.new_lesions, pair.followup_scan, pair.followup_pose, "nearest"
                )
                voxel_mm3 = pair.followup_scan.voxel_volume_mm3
            name = synthesis.case_id(anatomy.name, pair_index)
            start = time.perf_counter()
            if args.direct:
                if predictor is None:
                    predictor = NewLesionPredictor(args.model or default_model())
                baseline, followup, matches = pair.baseline, pair.followup, []
                if not args.no_slice_matching:
                    baseline, followup, matches = match_resolution(
                        baseline, followup, pair.brain_mask
                    )
                slice_matches = [m.as_dict() for m in matches]
                # The model's own post-processing, as segment applies it.
                _, labels, _ = predict_lesions(
                    baseline, followup, pair.brain_mask, predictor, predictor.postprocessing
                )
                prediction = labels.array > 0
            else:
                folder = args.work / "synthetic" / name
                folder.mkdir(parents=True, exist_ok=True)
                write_volume(pair.baseline_scan, folder / "baseline.nii.gz", np.float32)
                write_volume(pair.followup_scan, folder / "followup.nii.gz", np.float32)
                write_volume(truth, folder / "true_new_lesions.nii.gz", np.uint8)
                mask = segment_folder(
                    folder / "baseline.nii.gz",
                    folder / "followup.nii.gz",
                    folder / "segment",
                    args.model,
                    not args.no_slice_matching,
                    refusal_allowed=True,
                )
                if mask is None:  # as a user would be told: no mask for this pair
                    refusals.append({"case": name, "slices": slices(pair.info)})
                    logging.info("%s: refused by segment", name)
                    continue
                prediction = read_volume(mask).array > 0
                summary = json.loads((folder / "segment" / "summary.json").read_text())
                slice_matches = summary.get("slice_matches", [])
            row = {"case": name, "seconds": round(time.perf_counter() - start, 1)}
            row |= score(prediction, truth.array > 0, voxel_mm3)
            row["slices"] = slices(pair.info)
            row["matched"] = matched(slice_matches)
            rows.append(row)
            logging.info("%s: %s", name, row)
    return rows, refusals


def on_common_grid(image: Path, to_common: Path, grid: Volume, mode: str) -> Volume:
    transform = sitk.ReadTransform(str(to_common))
    return registration.resample(read_volume(image), grid, transform, mode)


def real_pairs(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for case in datasets.read_open_ms_data(args.data):
        if case.label is None or case.followup_to_label_space is None:
            logging.info("%s: skipped, it lacks the change mask or its transform", case.patient)
            continue
        if args.patient and case.patient not in args.patient:
            continue
        start = time.perf_counter()
        folder = args.work / "real" / case.patient
        mask = segment_folder(
            case.baseline, case.followup, folder, args.model, not args.no_slice_matching
        )
        summary = json.loads((folder / "summary.json").read_text())
        seconds = round(time.perf_counter() - start, 1)
        change = read_volume(case.label)
        change = change.with_array((change.array > 0).astype(np.uint8))
        prediction = on_common_grid(mask, case.followup_to_label_space, change, "nearest").array > 0
        gaining, kept, dropped = datasets.gaining_on_label_grid(case, change)
        for reference, name in ((change, "all changes"), (gaining, "new/enlarging")):
            row = {"case": f"{case.patient} vs {name}", "seconds": seconds}
            row |= score(prediction, reference.array > 0, change.voxel_volume_mm3)
            row["slice_matches"] = summary.get("slice_matches", [])
            rows.append(row)
        logging.info("%s: %d gaining of %d change components", case.patient, kept, kept + dropped)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="default: the shipped model")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=Path("benchmark_output/accuracy"))
    parser.add_argument("--with-lesions", type=int, default=3)
    parser.add_argument("--without", type=int, default=2)
    parser.add_argument("--seed", type=int, default=99)
    parser.add_argument("--direct", action="store_true", help="skip segment's preprocessing")
    parser.add_argument(
        "--realistic",
        action="store_true",
        help="draw the hold-out pairs as model v2's training pairs (synthesize --realistic): "
        "real change shapes, enlarging lesions, tissue contrasts, each visit on a scanner's grid",
    )
    parser.add_argument(
        "--no-slice-matching", action="store_true", help="segment --no-slice-matching"
    )
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument(
        "--patient",
        action="append",
        help="score only this real pair (repeatable): a leave-one-out model on the pair it "
        "was trained without",
    )
    parser.add_argument("--skip-synthetic", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if not (args.data / "longitudinal").is_dir():
        print(f"open_ms_data not found at {args.data}; pass --data", file=sys.stderr)
        return 1
    args.work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "model": str(args.model or "shipped"),
        "seed": args.seed,
        "slice_matching": not args.no_slice_matching,
    }
    if not args.skip_synthetic:
        rows, refusals = synthetic_holdout(args)
        results["synthetic_refused_by_segment"] = refusals
        with_lesions = [r for r in rows if r["n_ref_lesions"] > 0]
        without = [r for r in rows if r["n_ref_lesions"] == 0]
        results["synthetic_with_lesions"] = {
            "cases": with_lesions,
            "mean": print_table("synthetic hold-out pairs with new lesions", with_lesions),
        }
        print_table("synthetic hold-out pairs without new lesions (pred: false positives)", without)
        false_positives = [r["n_pred_lesions"] for r in without]
        results["synthetic_without_lesions"] = {
            "cases": without,
            "false_positive_lesions_per_pair": float(np.mean(false_positives))
            if false_positives
            else None,
        }
        print(
            f"\nsynthetic hold-out pairs without new lesions: {len(without)}; false-positive "
            f"lesions per pair: {np.mean(false_positives) if false_positives else float('nan'):.2f}"
            f" ({false_positives})"
        )
        if refusals:
            print(
                f"refused by segment's input checks (no mask, not scored): {len(refusals)} of "
                f"{len(rows) + len(refusals)} pairs: "
                + ", ".join(f"{r['case']} ({r['slices']})" for r in refusals)
            )
    if not args.skip_real:
        rows = real_pairs(args)
        results["real"] = {"cases": rows, "mean": print_table("real open_ms_data pairs", rows)}
        for row in rows[::2]:
            print(
                f"{row['case'].split(' vs ')[0]}: slices matched: {matched(row['slice_matches'])}"
            )
    (args.work / "accuracy.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten: {args.work / 'accuracy.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
