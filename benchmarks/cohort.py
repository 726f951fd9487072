"""Pairs per hour of ``msnewlesions bids`` here, with ``--jobs 1`` and ``--jobs 2`` in one run,
and the peak memory of each worker.

The cohort: the real open_ms_data pairs as a BIDS dataset (each pair under ``--copies`` subject
names, links to the same files; ../shared present), else the example cohort (4 pairs). Each
setting writes its own derivatives from nothing, with the shipped model; the two runs' masks are
compared. Stop other work first: this measures speed.

    python benchmarks/cohort.py [--data ../shared/data/open_ms_data] [--copies 2] [--work DIR]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from msnewlesions.cohort.engine import usable_cores
from msnewlesions.cohort.pair_job import SegmentSettings
from msnewlesions.commands.cohort import bids_participant
from msnewlesions.example import write_example_cohort
from msnewlesions.validation import open_ms_pairs

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/open_ms_data"


def real_cohort(data: Path, root: Path, copies: int) -> Path | None:
    pairs = open_ms_pairs(data)
    if not pairs:
        return None
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(
        '{"Name": "open_ms_data", "BIDSVersion": "1.10.0"}'
    )
    number = 0
    for _ in range(copies):
        for pair in pairs:
            number += 1
            subject = f"sub-{number:02d}"
            for session, scan in (("ses-01", pair.baseline), ("ses-02", pair.followup)):
                target = root / subject / session / "anat" / f"{subject}_{session}_FLAIR.nii.gz"
                target.parent.mkdir(parents=True)
                target.symlink_to(scan.resolve())
    return root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--copies", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    work = args.work or Path(tempfile.mkdtemp(prefix="cohort-benchmark-"))
    bids = real_cohort(args.data, work / "bids", args.copies)
    label = "open_ms_data pairs"
    if bids is None:
        bids, label = write_example_cohort(work / "bids"), "the example cohort"
    print(f"cohort: {label} ({bids}); {usable_cores()} cores")
    masks = {}
    for jobs in (1, 2):
        out = work / f"jobs{jobs}"
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        run = bids_participant(bids, out, SegmentSettings(), jobs=jobs)
        seconds = time.perf_counter() - start
        done = [o for o in run.outcomes if o.status == "done"]
        peak = max((o.worker_peak_mb for o in run.outcomes), default=0.0)
        print(
            f"--jobs {jobs}: {len(done)}/{len(run.outcomes)} pairs in {seconds:.0f} s = "
            f"{3600 * len(done) / seconds:.1f} pairs/hour; peak memory per worker {peak:.0f} MB; "
            f"per pair {', '.join(f'{o.seconds:.0f}' for o in done)} s"
        )
        masks[jobs] = {
            p.relative_to(out): np.asarray(nib.load(p).dataobj)
            for p in sorted(out.rglob("*space-orig*_mask.nii.gz"))
        }
    same = masks[1].keys() == masks[2].keys() and all(
        np.array_equal(masks[1][k], masks[2][k]) for k in masks[1]
    )
    print(f"masks of --jobs 1 and --jobs 2 identical: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
