"""A fine-tuning manifest of open_ms_data's complete real pairs (patients 01 and 03).

Each row: the two FLAIRs as the database ships them and ``new_lesions``: the experts' change mask
reduced to its components that gain FLAIR signal (new and enlarging lesions, decided on the mask's
own grid, :func:`~msnewlesions.model.datasets.gaining_on_label_grid`, as the accuracy benchmark
decides them) and carried onto the follow-up's own grid by nearest neighbour (the database's
transform, inverted). That is what ``msnewlesions finetune`` takes: a reviewed pair.

    python benchmarks/open_ms_data_manifest.py --out WORK/manifest
        [--data ../shared/data/open_ms_data] [--patient patient01 ...]

Writes ``WORK/manifest/manifest.csv`` and the masks beside it; the scans are referenced in place.
"""

from __future__ import annotations

import argparse
import csv
import logging
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from msnewlesions.io import read_volume, write_volume_atomically
from msnewlesions.model import datasets
from msnewlesions.preprocessing import registration

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "open_ms_data"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--patient", nargs="*", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for case in datasets.read_open_ms_data(args.data):
        if args.patient and case.patient not in args.patient:
            continue
        if case.label is None or case.followup_to_label_space is None:
            continue
        change = read_volume(case.label)
        change = change.with_array((change.array > 0).astype(np.uint8))
        gaining, kept, dropped = datasets.gaining_on_label_grid(case, change)
        followup = read_volume(case.followup)
        common_to_followup = sitk.ReadTransform(str(case.followup_to_label_space))
        on_followup = registration.resample(
            gaining, followup, common_to_followup.GetInverse(), "nearest"
        )
        mask = args.out / f"{case.patient}_new_lesions.nii.gz"
        write_volume_atomically(
            on_followup.with_array((on_followup.array > 0).astype(np.uint8)), mask, np.uint8
        )
        logging.info("%s: %d new/enlarging components of %d", case.patient, kept, kept + dropped)
        rows.append(
            {
                "id": case.patient,
                "baseline": str(case.baseline.resolve()),
                "followup": str(case.followup.resolve()),
                "new_lesions": mask.name,
            }
        )
    with (args.out / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "baseline", "followup", "new_lesions"])
        writer.writeheader()
        writer.writerows(rows)
    print(args.out / "manifest.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
