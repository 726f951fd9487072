"""The pairs a model is fine-tuned on: two scans and the reference mask of their new lesions.

Two sources:

* a manifest: ``batch``'s CSV (``id,baseline,followup``, :mod:`msnewlesions.cohort.manifest`) with
  one more column, ``new_lesions``: the new lesions on the follow-up's own grid (``review
  apply``'s ``new_lesions_reviewed.nii.gz``, or an expert's mask), relative to the CSV's folder
  like the scans;
* a BIDS derivatives dataset written by ``bids`` and reviewed (``review apply`` on its reports):
  every ``..._desc-since<B>reviewed_mask.nii.gz`` is a pair, its scans those its segmentation
  read (the pair's sidecar records them), its patient the subject.

Everything a run needs is checked here, before any long step: every file exists, and every mask
has its follow-up's grid (same shape, the same voxel positions within 0.01 mm).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from msnewlesions.cohort.manifest import read_manifest
from msnewlesions.errors import MSNewLesionsError


@dataclass(frozen=True)
class ReviewedPair:
    """One pair of one patient and the reference mask of its new lesions (follow-up's grid)."""

    pair_id: str
    patient: str
    baseline: Path
    followup: Path
    new_lesions: Path


def _header_grid(path: Path) -> tuple[tuple[int, ...], np.ndarray] | None:
    """A NIfTI's shape (3-D) and affine from its header alone; None for a DICOM folder."""
    if path.is_dir():
        return None
    try:
        image: Any = nib.load(str(path))
    except Exception as error:  # nibabel raises many kinds for a file that is not NIfTI
        raise MSNewLesionsError(f"{path} is not a NIfTI image ({error}).") from None
    return tuple(int(s) for s in image.shape[:3]), np.asarray(image.affine, dtype=float)


def check_on_followup_grid(mask: Path, followup: Path, where: str) -> None:
    """Refuse a reference mask that is not on its follow-up's grid."""
    mask_grid, followup_grid = _header_grid(mask), _header_grid(followup)
    if mask_grid is None:
        raise MSNewLesionsError(f"{where}: the new_lesions mask {mask} must be a NIfTI file.")
    if followup_grid is None:
        return  # a DICOM follow-up: its grid is known once it is read (checked then)
    same_shape = mask_grid[0] == followup_grid[0]
    if not same_shape or not np.allclose(mask_grid[1], followup_grid[1], atol=1e-2):
        raise MSNewLesionsError(
            f"{where}: the new_lesions mask {mask.name} is not on the follow-up's grid (shape "
            f"{mask_grid[0]} against {followup_grid[0]}, or another affine); give the mask on the "
            "follow-up's own grid, as segment and review apply write it."
        )


def read_reviewed_derivatives(root: Path) -> list[ReviewedPair]:
    """The reviewed pairs of a BIDS derivatives dataset (``bids``' output, reviewed)."""
    import json

    reviewed = []
    for mask in sorted(root.glob("sub-*/ses-*/anat/*_desc-since*reviewed_mask.nii.gz")):
        sidecar = mask.with_name(mask.name.replace("reviewed_mask.nii.gz", "_mask.json"))
        where = f"{mask.name}"
        try:
            inputs = json.loads(sidecar.read_text(encoding="utf-8"))["inputs"]
            baseline, followup = Path(inputs["baseline"]["path"]), Path(inputs["followup"]["path"])
        except (OSError, ValueError, KeyError, TypeError):
            raise MSNewLesionsError(
                f"{where}: its pair's sidecar {sidecar.name} does not say which scans it was "
                "made from; segment the pair again with bids."
            ) from None
        for role, path in (("baseline", baseline), ("followup", followup)):
            if not path.exists():
                raise MSNewLesionsError(f"{where}: its {role} scan {path} does not exist.")
        check_on_followup_grid(mask, followup, where)
        key = mask.name.split("_space-")[0] + "_" + mask.name.split("_")[-2].replace("reviewed", "")
        subject = mask.name.split("_")[0].removeprefix("sub-")
        reviewed.append(ReviewedPair(key, subject, baseline, followup, mask))
    if not reviewed:
        raise MSNewLesionsError(
            f"{root} holds no reviewed mask (*_desc-since<B>reviewed_mask.nii.gz); review the "
            "pairs' reports and apply the reviews (msnewlesions review apply REPORT review.json)."
        )
    return reviewed


def read_reviewed_pairs(manifest: str | Path) -> list[ReviewedPair]:
    """The pairs of a fine-tuning manifest (or of a reviewed BIDS derivatives dataset), every
    file checked."""
    manifest = Path(manifest)
    if manifest.is_dir():
        return read_reviewed_derivatives(manifest)
    pairs = read_manifest(manifest)
    with manifest.open(newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    if "new_lesions" not in [c.strip() for c in rows[0]]:
        raise MSNewLesionsError(
            f"manifest {manifest} has no new_lesions column: a fine-tuning manifest is batch's "
            "(id,baseline,followup) with the reference mask of each pair's new lesions."
        )
    reviewed = []
    for line, (pair, raw) in enumerate(zip(pairs, rows, strict=True), start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        where = f"manifest {manifest} line {line}"
        if not row["new_lesions"]:
            raise MSNewLesionsError(f"{where}: no new_lesions mask for pair {pair.key!r}.")
        mask = Path(row["new_lesions"]).expanduser()
        mask = mask if mask.is_absolute() else manifest.parent / mask
        for role, path in (
            ("baseline", pair.baseline.path),
            ("followup", pair.followup.path),
            ("new_lesions", mask),
        ):
            if not path.exists():
                raise MSNewLesionsError(f"{where}: the {role} file {path} does not exist.")
        check_on_followup_grid(mask, pair.followup.path, where)
        reviewed.append(
            ReviewedPair(pair.key, pair.subject, pair.baseline.path, pair.followup.path, mask)
        )
    return reviewed
