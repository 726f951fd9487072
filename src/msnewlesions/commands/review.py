"""``msnewlesions review apply OUT review.json``: a reader's review into reviewed outputs.

Into ``OUT`` (a ``segment`` output folder): ``new_lesions_reviewed.nii.gz`` (binary uint8 on the
follow-up's grid, its geometry copied from ``new_lesions.nii.gz``), ``lesions_reviewed.csv`` (one
row per reviewed lesion: the lesion table's columns, and ``origin``: the model's lesion number(s)
it comes from, or ``added``; ``max_probability`` only where it is one model lesion's),
``review.json`` (the file applied), and in ``summary.json`` a ``review`` record: counts before and
after, the decisions, the note. Nothing is written when the review does not fit the folder.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from msnewlesions.atomic import atomic_file, output_lock, write_json_atomically
from msnewlesions.commands.segment import sha256_of
from msnewlesions.errors import MSNewLesionsError
from msnewlesions.io import read_volume, write_volume_atomically
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


def _model_rows(folder: Path) -> dict[int, dict[str, str]]:
    with (folder / "lesions.csv").open(newline="") as handle:
        return {int(row["lesion_id"]): row for row in csv.DictReader(handle)}


def apply_review(
    folder: str | Path, review_path: str | Path, undecided: Undecided = "drop"
) -> dict[str, Any]:
    """Apply ``review_path`` to the segment output ``folder``; return the summary's record."""
    folder = Path(folder)
    missing = [name for name in NEEDED if not (folder / name).exists()]
    if missing:
        raise MSNewLesionsError(
            f"{folder} is not a segment output folder (it lacks {', '.join(missing)})."
        )
    review = read_review(review_path)
    summary = json.loads((folder / "summary.json").read_text())
    check_review_inputs(review, summary.get("inputs", {}), folder)
    mask_mni = read_volume(folder / "new_lesions_mni.nii.gz")
    labels, count = numbered_lesions(mask_mni)
    rows = _model_rows(folder)
    voxels = np.bincount(labels.ravel(), minlength=count + 1)
    if sorted(rows) != list(range(1, count + 1)) or any(
        int(rows[i]["voxels_mni"]) != int(voxels[i]) for i in rows
    ):
        raise MSNewLesionsError(
            f"{folder}: lesions.csv does not describe new_lesions_mni.nii.gz (edited by hand?); "
            "segment the pair again."
        )
    reviewed, tally = reviewed_mask(mask_mni, review, undecided)
    new_labels, new_count = label_lesions(
        reviewed.array > 0, reviewed.voxel_volume_mm3, 0.0, "volume"
    )
    labels_mni = reviewed.with_array(new_labels.astype(np.uint16))
    followup_grid = read_volume(folder / "new_lesions.nii.gz")
    to_mni = read_transform(folder / "followup_to_mni.tfm")
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
    with output_lock(folder):
        mask = followup_grid.with_array((labels_native.array > 0).astype(np.uint8))
        write_volume_atomically(mask, folder / "new_lesions_reviewed.nii.gz", np.uint8)
        with atomic_file(folder / "lesions_reviewed.csv") as temporary:
            with temporary.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=[*LESION_TABLE_COLUMNS, "origin"])
                writer.writeheader()
                writer.writerows(out_rows)
        if Path(review_path).resolve() != (folder / "review.json").resolve():
            with atomic_file(folder / "review.json") as temporary:
                shutil.copyfile(review_path, temporary)
        write_json_atomically(folder / "summary.json", summary)  # last: the record of it all
    return record
