"""A reader's review (``review.json``, saved from the report) applied to the model's lesions.

Pure functions on volumes: :func:`read_review` checks the file, :func:`check_review_inputs` that it
was saved for this pair (the input scans' SHA-256, as ``summary.json`` records them), and
:func:`reviewed_mask` makes the reviewed mask on the model's MNI grid: the lesions confirmed (and,
with ``undecided="keep"``, those left undecided), without the erased voxels, with the added ones.
The review's voxels are ``[i, j, k]`` indices of the viewer's grid (its shape and affine are in the
file), carried to the MNI grid by their millimetre positions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from msnewlesions.errors import MSNewLesionsError
from msnewlesions.io import Volume
from msnewlesions.lesions import label_lesions

REVIEW_FORMAT = "msnewlesions-review"
REVIEW_VERSION = 1
DECISIONS = ("confirmed", "rejected", "undecided")
Undecided = Literal["drop", "keep"]


@dataclass(frozen=True)
class Review:
    """What a reader decided on one pair."""

    inputs: dict[str, str]  # role -> sha256
    shape: tuple[int, int, int]
    affine: np.ndarray
    decisions: dict[int, str]
    added: np.ndarray  # (n, 3) voxel indices of the review's grid
    erased: np.ndarray
    note: str
    saved_at: str


def _voxels(value: Any, name: str, where: Path) -> np.ndarray:
    array = np.asarray(value if value else np.zeros((0, 3)), dtype=float)
    if array.ndim != 2 or array.shape[1] != 3 or not np.all(np.isfinite(array)):
        raise MSNewLesionsError(f"{where}: '{name}' must be a list of [i, j, k] voxel indices.")
    return array.astype(np.int64)


def read_review(path: str | Path) -> Review:
    """The review in ``path``, or one clear error saying what is wrong with the file."""
    path = Path(path)
    if not path.is_file():
        raise MSNewLesionsError(f"review {path} is not a file; save one from report.html.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise MSNewLesionsError(f"review {path} is not JSON ({error}).") from None
    if not isinstance(data, dict) or data.get("format") != REVIEW_FORMAT:
        raise MSNewLesionsError(f"{path} is not a review saved from an msnewlesions report.")
    if data.get("version") != REVIEW_VERSION:
        raise MSNewLesionsError(
            f"{path}: review version {data.get('version')!r}; this msnewlesions reads version "
            f"{REVIEW_VERSION}."
        )
    try:
        grid = data["grid"]
        shape = tuple(int(s) for s in grid["shape"])
        affine = np.asarray(grid["affine"], dtype=float)
        decisions = {int(item["id"]): str(item["decision"]) for item in data["lesions"]}
        inputs = {str(role): str(value["sha256"]) for role, value in data["inputs"].items()}
    except (KeyError, TypeError, ValueError) as error:
        raise MSNewLesionsError(
            f"{path}: incomplete review ({error!r} is missing or wrong)."
        ) from None
    if len(shape) != 3 or affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise MSNewLesionsError(f"{path}: the review's grid is not a 3-D grid with an affine.")
    unknown = sorted({d for d in decisions.values() if d not in DECISIONS})
    if unknown:
        raise MSNewLesionsError(f"{path}: unknown decision(s) {', '.join(unknown)}.")
    return Review(
        inputs,
        (shape[0], shape[1], shape[2]),
        affine,
        decisions,
        _voxels(data.get("added"), "added", path),
        _voxels(data.get("erased"), "erased", path),
        str(data.get("note", "")),
        str(data.get("saved_at", "")),
    )


def check_review_inputs(review: Review, inputs: dict[str, Any], where: Path) -> None:
    """Refuse a review saved for another pair (or one that names no checksum)."""
    for role in ("baseline", "followup"):
        recorded = str(inputs.get(role, {}).get("sha256", ""))
        reviewed = review.inputs.get(role, "")
        if not recorded or not reviewed or recorded != reviewed:
            raise MSNewLesionsError(
                f"this review was saved for another pair: its {role} scan's checksum is not the "
                f"one of {where}; open that folder's report.html and review it there."
            )


def numbered_lesions(mask: Volume) -> tuple[np.ndarray, int]:
    """The lesion numbers of a segmentation's MNI mask, as its lesion table numbers them."""
    return label_lesions(mask.array > 0, mask.voxel_volume_mm3, 0.0, "volume")


def _on_grid(voxels: np.ndarray, review: Review, grid: Volume) -> tuple[np.ndarray, int]:
    """The review's voxel indices as indices of ``grid`` (by position); and how many fell out."""
    if len(voxels) == 0:
        return np.zeros((0, 3), dtype=np.int64), 0
    points = review.affine @ np.c_[voxels, np.ones(len(voxels))].T
    indices = np.rint(np.linalg.inv(grid.affine) @ points)[:3].T.astype(np.int64)
    inside = np.all((indices >= 0) & (indices < np.array(grid.shape)), axis=1)
    return indices[inside], int((~inside).sum())


def reviewed_mask(
    mask_mni: Volume, review: Review, undecided: Undecided = "drop"
) -> tuple[Volume, dict[str, int]]:
    """The reviewed binary mask on ``mask_mni``'s grid, and the counts of what was done."""
    labels, count = numbered_lesions(mask_mni)
    unknown = sorted(set(review.decisions) - set(range(1, count + 1)))
    if unknown or len(review.decisions) != count:
        raise MSNewLesionsError(
            f"the review names lesions {sorted(review.decisions)} but the segmentation has "
            f"{count}: it was saved from another segmentation of this pair; review its report."
        )
    kept = {"confirmed"} | ({"undecided"} if undecided == "keep" else set())
    keep = np.zeros(count + 1, dtype=bool)
    for lesion_id, decision in review.decisions.items():
        keep[lesion_id] = decision in kept
    result = keep[labels]
    erased, erased_out = _on_grid(review.erased, review, mask_mni)
    added, added_out = _on_grid(review.added, review, mask_mni)
    result[tuple(erased.T)] = False
    result[tuple(added.T)] = True
    tally = {name: sum(1 for d in review.decisions.values() if d == name) for name in DECISIONS}
    tally |= {
        "added_voxels": len(added),
        "erased_voxels": len(erased),
        "voxels_outside_grid": added_out + erased_out,
    }
    return mask_mni.with_array(result.astype(np.uint8)), tally
