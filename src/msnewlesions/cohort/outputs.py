"""Where a pair's results go, when they are complete, and the record of a pair that failed.

Two layouts, one contract (:class:`PairOutputs`):

* :class:`BidsPairOutputs`, a BIDS derivatives dataset. Each pair's files are in the follow-up's
  ``sub-<S>/ses-<F>/anat/`` and carry its entities; the baseline session is in ``desc-since<B>``
  (``desc`` is the entity BIDS keeps for telling apart derivatives of one source; a custom entity
  would fail the validator, and the follow-up session alone is ambiguous once ``--pairs first``
  and ``consecutive`` both ran). ``space-orig`` is the follow-up's own grid (BIDS' reserved
  label); ``space-MNI152NLin2009aSym`` is the template of the MNI grid (nilearn's ICBM 2009a
  symmetric: its files are named tal_nlin_sym_09a; at 1 mm, cropped to the brain)::

      sub-S_ses-F_space-orig_label-newlesion_desc-sinceB_mask.nii.gz   the mask (uint8)
      sub-S_ses-F_space-orig_label-newlesion_desc-sinceB_mask.json     sidecar + summary
      sub-S_ses-F_space-MNI152NLin2009aSym_label-newlesion_desc-sinceB_mask.nii.gz
      sub-S_ses-F_space-orig_label-newlesion_desc-sinceB_lesions.tsv   one row per lesion
      sub-S_ses-F_desc-sinceB_report.html
      sub-S_ses-F_from-orig_to-MNI152NLin2009aSym_mode-image_desc-sinceB_xfm.tfm

  Each file is moved into place whole; the sidecar (which holds ``summary.json``'s content) goes
  last, so it marks a complete pair.
* :class:`FolderPairOutputs`, a folder per pair (``OUTPUT/<id>/``) with ``segment --out``'s own
  files, moved into place as a whole.

A pair that failed leaves ``OUTPUT/logs/<key>_failure.json`` (its one-line reason); a later
success removes it. Work in progress lives in ``OUTPUT/.work/`` and is never read as a result.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from msnewlesions.atomic import atomic_file, write_json_atomically, write_text_atomically
from msnewlesions.cohort.pairs import Pair, Visit, since
from msnewlesions.errors import MSNewLesionsError

#: The template space of the MNI outputs (nilearn's template is ICBM 2009a, symmetric).
MNI_SPACE = "MNI152NLin2009aSym"
BIDS_VERSION = "1.10.0"
WORK_FOLDER = ".work"
LOGS_FOLDER = "logs"
GROUP_FOLDER = "group"


class PairOutputs(Protocol):
    """Where one pair's results are, in some layout."""

    @property
    def root(self) -> Path:
        """The output folder of the whole cohort."""
        ...

    @property
    def pair(self) -> Pair: ...

    def is_complete(self) -> bool:
        """Every result of the pair is in place (a rerun skips the pair)."""
        ...

    def publish(self, result: Path) -> None:
        """Move ``segment --out``'s folder ``result`` into this layout (same file system)."""
        ...

    def summary(self) -> dict[str, Any] | None:
        """The pair's ``summary.json`` content, once complete."""
        ...

    def report(self) -> Path:
        """The pair's ``report.html``."""
        ...


def work_folder(root: Path) -> Path:
    return root / WORK_FOLDER


def failure_path(root: Path, key: str) -> Path:
    return root / LOGS_FOLDER / f"{key}_failure.json"


def record_failure(root: Path, key: str, reason: str) -> None:
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_json_atomically(failure_path(root, key), {"pair": key, "reason": reason, "time": stamp})


def read_failure(root: Path, key: str) -> str | None:
    path = failure_path(root, key)
    if not path.is_file():
        return None
    try:
        return str(json.loads(path.read_text(encoding="utf-8"))["reason"])
    except (ValueError, KeyError, OSError):
        return "failed (its failure record is unreadable)"


def clear_failure(root: Path, key: str) -> None:
    failure_path(root, key).unlink(missing_ok=True)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def csv_to_tsv(source: Path, target: Path) -> None:
    """The lesion table as BIDS wants tables: tab-separated, ``n/a`` for empty cells."""
    with source.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    lines = ["\t".join(cell if cell != "" else "n/a" for cell in row) for row in rows]
    write_text_atomically(target, "\n".join(lines) + "\n")


@dataclass(frozen=True)
class BidsPairOutputs:
    """A pair's files in a BIDS derivatives dataset at ``root``."""

    root: Path
    pair: Pair

    @property
    def folder(self) -> Path:
        followup = self.pair.followup
        return self.root / f"sub-{followup.subject}" / f"ses-{followup.session}" / "anat"

    def _name(self, middle: str, suffix: str) -> Path:
        followup = self.pair.followup
        stem = f"sub-{followup.subject}_ses-{followup.session}"
        return self.folder / f"{stem}_{middle}_{suffix}"

    @property
    def desc(self) -> str:
        return f"desc-{since(self.pair.baseline.session)}"

    def files(self) -> dict[str, Path]:
        """segment's file name -> this layout's name (the sidecar last)."""
        orig = f"space-orig_label-newlesion_{self.desc}"
        return {
            "new_lesions.nii.gz": self._name(orig, "mask.nii.gz"),
            "new_lesions_mni.nii.gz": self._name(
                f"space-{MNI_SPACE}_label-newlesion_{self.desc}", "mask.nii.gz"
            ),
            "lesions.csv": self._name(orig, "lesions.tsv"),
            "report.html": self._name(self.desc, "report.html"),
            "followup_to_mni.tfm": self._name(
                f"from-orig_to-{MNI_SPACE}_mode-image_{self.desc}", "xfm.tfm"
            ),
            "summary.json": self._name(orig, "mask.json"),
        }

    def reviewed_files(self) -> dict[str, Path]:
        """``review apply``'s file name -> this layout's name: the reviewed mask is a derivative
        of its own, ``desc-since<B>reviewed`` (the baseline session stays named)."""
        reviewed = f"space-orig_label-newlesion_{self.desc}reviewed"
        return {
            "new_lesions_reviewed.nii.gz": self._name(reviewed, "mask.nii.gz"),
            "lesions_reviewed.csv": self._name(reviewed, "lesions.tsv"),
            "review.json": self._name(reviewed, "mask.json"),
        }

    @classmethod
    def of_report(cls, report: Path) -> BidsPairOutputs:
        """The pair whose ``sub-S_ses-F_desc-sinceB_report.html`` this is."""
        match = re.fullmatch(r"sub-([^_]+)_ses-([^_]+)_desc-since([^_]+)_report\.html", report.name)
        if match is None or len(report.parents) < 4:
            raise MSNewLesionsError(
                f"{report.name} is not a pair's report of a BIDS derivatives dataset "
                "(sub-S_ses-F_desc-sinceB_report.html)."
            )
        subject, followup, baseline = match.groups()
        pair = Pair(
            f"sub-{subject}_ses-{followup}_desc-since{baseline}",
            Visit(subject, baseline, Path()),
            Visit(subject, followup, Path()),
        )
        return cls(report.parents[3], pair)

    def is_complete(self) -> bool:
        return all(path.is_file() for path in self.files().values())

    def sidecar(self, summary: dict[str, Any]) -> dict[str, Any]:
        """The mask's sidecar: BIDS' fields, then ``summary.json``'s."""
        sources = []
        for visit in (self.pair.baseline, self.pair.followup):
            try:
                sources.append(f"bids:raw:{visit.path.relative_to(raw_root(visit.path))}")
            except ValueError:
                sources.append(str(visit.path))
        return {
            "Type": "Lesion",
            "Description": (
                f"New or enlarging lesions of session {self.pair.followup.session} since "
                f"session {self.pair.baseline.session} (1 = new lesion), on the follow-up's grid."
            ),
            "Sources": sources,
            **summary,
        }

    def publish(self, result: Path) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for name, target in self.files().items():
            source = result / name
            if name == "lesions.csv":
                csv_to_tsv(source, target)
            elif name == "summary.json":
                summary = json.loads(source.read_text(encoding="utf-8"))
                write_json_atomically(target, self.sidecar(summary))
            else:
                os.replace(source, target)

    def summary(self) -> dict[str, Any] | None:
        if not self.is_complete():
            return None
        return _read_json(self.files()["summary.json"])

    def report(self) -> Path:
        return self.files()["report.html"]


def raw_root(path: Path) -> Path:
    """The BIDS root above a file ``.../sub-S/[ses-V/]anat/name``."""
    for parent in path.parents:
        if parent.name.startswith("sub-"):
            return parent.parent
    raise ValueError(f"{path} is not inside a sub- folder")


@dataclass(frozen=True)
class FolderPairOutputs:
    """A pair's ``segment --out`` folder, ``root/<id>``."""

    root: Path
    pair: Pair

    @property
    def folder(self) -> Path:
        return self.root / self.pair.key

    def is_complete(self) -> bool:
        return (self.folder / "summary.json").is_file()

    def publish(self, result: Path) -> None:
        if self.folder.exists():  # an incomplete folder cannot exist (moved whole), but be safe
            shutil.rmtree(self.folder)
        os.replace(result, self.folder)

    def summary(self) -> dict[str, Any] | None:
        return _read_json(self.folder / "summary.json")

    def report(self) -> Path:
        return self.folder / "report.html"


def describe_run(path: Path, record: dict[str, Any], description: dict[str, Any]) -> None:
    """Write ``description`` to ``path`` (``dataset_description.json`` for BIDS) or check the one
    there: its ``GeneratedBy[0].Settings`` is ``record``.

    ``record`` says what made the results (version, model, settings); a folder already holding
    results made otherwise is refused, so that one cohort table never mixes two models.
    """
    root = path.parent
    existing = _read_json(path) if path.exists() else None
    if existing is not None:
        before = existing.get("GeneratedBy", [{}])[0].get("Settings")
        if before is not None and before != record:
            changed = sorted(k for k in set(before) | set(record) if before.get(k) != record.get(k))
            raise MSNewLesionsError(
                f"{root} holds results made with other settings ({', '.join(changed)}); "
                "use a new output folder, or the same model and options."
            )
        return
    if path.exists():
        raise MSNewLesionsError(f"{path} is not valid JSON; use a new output folder.")
    root.mkdir(parents=True, exist_ok=True)
    write_json_atomically(path, description)


def bidsignore(root: Path) -> None:
    """What the BIDS validator should not judge: the cohort's own folders and file types."""
    lines = [f"{GROUP_FOLDER}/", f"{LOGS_FOLDER}/", "*_lesions.tsv", "*_report.html", "*_xfm.tfm"]
    path = root / ".bidsignore"
    if not path.exists():
        with atomic_file(path) as temporary:
            temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
