"""``msnewlesions review apply OUT review.json``: a reader's review into reviewed outputs.

Into ``OUT`` (a ``segment`` output folder): ``new_lesions_reviewed.nii.gz`` (binary uint8 on the
follow-up's grid, its geometry copied from ``new_lesions.nii.gz``), ``lesions_reviewed.csv`` (one
row per reviewed lesion: the lesion table's columns, and ``origin``: the model's lesion number(s)
it comes from, or ``added``; ``max_probability`` only where it is one model lesion's),
``review.json`` (the file applied), and in ``summary.json`` a ``review`` record: counts before and
after, the decisions, the note. Nothing is written when the review does not fit the folder.

In a BIDS derivatives dataset (``bids``' output) ``OUT`` is the pair's report
(``sub-S_ses-F_desc-sinceB_report.html``): the reviewed mask is a derivative of its own,
``..._desc-sinceBreviewed_mask.nii.gz``, with its lesion table (TSV) and a sidecar holding the
review; the pair's sidecar gains the ``review`` record, and the group table its reviewed counts.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from msnewlesions.atomic import atomic_file, output_lock, write_json_atomically
from msnewlesions.cohort.outputs import BidsPairOutputs
from msnewlesions.errors import MSNewLesionsError
from msnewlesions.io import read_volume, sha256_of, write_volume_atomically
from msnewlesions.lesions import label_lesions
from msnewlesions.postprocessing import LESION_TABLE_COLUMNS, lesion_table, to_native
from msnewlesions.preprocessing.registration import read_transform
from msnewlesions.review import (
    Undecided,
    check_review_inputs,
    numbered_lesions,
    read_review,
    reviewed_mask,
)

NEEDED = (
    "summary.json",
    "new_lesions.nii.gz",
    "new_lesions_mni.nii.gz",
    "lesions.csv",
    "followup_to_mni.tfm",
)


def _files(out: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """(segment's name -> file, review apply's name -> file) of a segment folder or of a BIDS
    derivative's report."""
    if out.is_file() and out.name.endswith("_report.html"):
        outputs = BidsPairOutputs.of_report(out)
        return outputs.files(), outputs.reviewed_files()
    produced = ("new_lesions_reviewed.nii.gz", "lesions_reviewed.csv", "review.json")
    return {name: out / name for name in NEEDED}, {name: out / name for name in produced}


def _delimiter(path: Path) -> str:
    return "\t" if path.suffix == ".tsv" else ","


def _model_rows(table: Path) -> dict[int, dict[str, str]]:
    with table.open(newline="") as handle:
        return {
            int(row["lesion_id"]): row
            for row in csv.DictReader(handle, delimiter=_delimiter(table))
        }


def apply_review(
    folder: str | Path, review_path: str | Path, undecided: Undecided = "drop"
) -> dict[str, Any]:
    """Apply ``review_path`` to the segment output ``folder``; return the summary's record."""
    folder = Path(folder)
    given, produced = _files(folder)
    missing = [path.name for path in given.values() if not path.exists()]
    if missing:
        raise MSNewLesionsError(
            f"{folder} is not a segment output folder or a pair's report in a BIDS derivatives "
            f"dataset (it lacks {', '.join(missing)})."
        )
    review = read_review(review_path)
    summary = json.loads(given["summary.json"].read_text())
    check_review_inputs(review, summary.get("inputs", {}), folder)
    mask_mni = read_volume(given["new_lesions_mni.nii.gz"])
    labels, count = numbered_lesions(mask_mni)
    rows = _model_rows(given["lesions.csv"])
    voxels = np.bincount(labels.ravel(), minlength=count + 1)
    if sorted(rows) != list(range(1, count + 1)) or any(
        int(rows[i]["voxels_mni"]) != int(voxels[i]) for i in rows
    ):
        raise MSNewLesionsError(
            f"{folder}: the lesion table does not describe the MNI mask (edited by hand?); "
            "segment the pair again."
        )
    reviewed, tally = reviewed_mask(mask_mni, review, undecided)
    new_labels, new_count = label_lesions(
        reviewed.array > 0, reviewed.voxel_volume_mm3, 0.0, "volume"
    )
    labels_mni = reviewed.with_array(new_labels.astype(np.uint16))
    followup_grid = read_volume(given["new_lesions.nii.gz"])
    to_mni = read_transform(given["followup_to_mni.tfm"])
    labels_native = to_native(labels_mni, followup_grid, to_mni)
    table = lesion_table(
        labels_mni, labels_native, reviewed.with_array(reviewed.array.astype(np.float32)), to_mni
    )
    out_rows = []
    for lesion in table:
        row: dict[str, Any] = lesion.as_row()
        origins = sorted(set(np.unique(labels[new_labels == lesion.lesion_id]).tolist()) - {0})
        row["origin"] = "+".join(str(o) for o in origins) if origins else "added"
        row["max_probability"] = rows[origins[0]]["max_probability"] if len(origins) == 1 else ""
        out_rows.append(row)
    volume = float(np.count_nonzero(new_labels) * reviewed.voxel_volume_mm3)
    record = {
        "reviewed": True,
        "saved_at": review.saved_at,
        "note": review.note,
        "undecided_lesions": undecided,
        "review_sha256": sha256_of(Path(review_path)),
        "lesions_before": count,
        "total_volume_mm3_before": float(summary.get("new_lesion_volume_mm3", 0.0)),
        "lesions_after": new_count,
        "total_volume_mm3_after": round(volume, 2),
        **tally,
    }
    summary["review"] = record
    with output_lock(produced["new_lesions_reviewed.nii.gz"]):
        mask = followup_grid.with_array((labels_native.array > 0).astype(np.uint8))
        write_volume_atomically(mask, produced["new_lesions_reviewed.nii.gz"], np.uint8)
        table_path = produced["lesions_reviewed.csv"]
        with atomic_file(table_path) as temporary:
            with temporary.open("w", newline="") as handle:
                writer = csv.DictWriter(
                    handle,
                    fieldnames=[*LESION_TABLE_COLUMNS, "origin"],
                    delimiter=_delimiter(table_path),
                )
                writer.writeheader()
                writer.writerows(out_rows)
        if given["summary.json"].name != "summary.json":
            # BIDS: the reviewed mask's sidecar holds the review and what applying it did.
            saved = json.loads(Path(review_path).read_text(encoding="utf-8"))
            write_json_atomically(produced["review.json"], saved | {"applied": record})
        elif Path(review_path).resolve() != produced["review.json"].resolve():
            with atomic_file(produced["review.json"]) as temporary:
                shutil.copyfile(review_path, temporary)
        write_json_atomically(given["summary.json"], summary)  # last: the record of it all
    return record
