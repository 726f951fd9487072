"""The paper's cross-validation on what this project has: open_ms_data's two real pairs and
synthetic pairs made from its scans, as one nnU-Net raw dataset, through ``msnewlesions crossval``.

    python benchmarks/crossval_open_ms_data.py --work WORK [--pairs 6] [--epochs 2]
        [--iterations 250] [--folds 5] [--device cpu|cuda] [--config cpu|paper]

1. ``msnewlesions synthesize --realistic --real-pairs``: ``--pairs`` synthetic pairs per scan
   (the scans' anatomy, real change shapes) and the two real pairs (their new and enlarging
   lesions), in ``WORK/raw``;
2. ``patients.json``: every case with its patient (a synthetic pair belongs to the patient whose
   scan it was drawn on), so that a patient's real and synthetic pairs stay on one side;
3. ``msnewlesions crossval`` on it into ``WORK/crossval``: Tables 1 and 2 printed and written.

Every step resumes. The time of each step is printed.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "open_ms_data"
DATASET_ID = 610


def patient_of(case: str, record: dict) -> str:
    """``longitudinal-patient01-study2`` (a scan's anatomy) or ``patient01`` (a real pair) ->
    ``patient01``; a cross-sectional scan is its own patient."""
    source = str(record.get("anatomy", case))
    found = re.search(r"(cross_sectional-)?(patient\d+)", source)
    if found is None:
        return source
    return ("cs-" if found.group(1) else "") + found.group(2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=250)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--config", default="cpu")
    args = parser.parse_args(argv)
    tool = [sys.executable, "-m", "msnewlesions.cli"]
    start = time.perf_counter()
    subprocess.run(
        [*tool, "synthesize", "--open-ms-data", str(args.data), "--out", str(args.work / "raw"),
         "--id", str(DATASET_ID), "--pairs", str(args.pairs), "--holdout-pairs", str(args.pairs),
         "--realistic", "--real-pairs"],
        check=True,
    )  # fmt: skip
    print(f"dataset: {time.perf_counter() - start:.0f} s")
    dataset = args.work / "raw" / f"Dataset{DATASET_ID}_MSNewLesions"
    records = json.loads((dataset / "msnewlesions_cases.json").read_text())
    cases = [p.name.removesuffix(".nii.gz") for p in (dataset / "labelsTr").glob("*.nii.gz")]
    patients = {case: patient_of(case, records.get(case, {})) for case in sorted(cases)}
    (dataset / "patients.json").write_text(json.dumps(patients, indent=1) + "\n")
    start = time.perf_counter()
    subprocess.run(
        [*tool, "crossval", str(dataset), "--out", str(args.work / "crossval"),
         "--folds", str(args.folds), "--epochs", str(args.epochs), "--iterations",
         str(args.iterations), "--device", args.device, "--config", args.config],
        check=True,
    )  # fmt: skip
    print(f"crossval: {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
