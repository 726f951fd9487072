"""A plain manifest of pairs, for users without BIDS: a CSV with columns ``id``, ``baseline``,
``followup`` (NIfTI files or DICOM folders; relative paths are relative to the CSV's folder).

Optional columns: ``subject`` (pairs of one subject are drawn together in the group report;
default: the id), ``baseline_session`` and ``followup_session`` (labels in the group table;
default: ``baseline`` and the id), ``baseline_date`` and ``followup_date`` (ISO 8601; they give
the days apart).
An id names the pair's output folder: letters, digits, ``.``, ``_`` and ``-``, unique.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from msnewlesions.cohort.bids import parse_time
from msnewlesions.cohort.pairs import Pair, Visit
from msnewlesions.errors import MSNewLesionsError

REQUIRED_COLUMNS = ("id", "baseline", "followup")
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def read_manifest(path: str | Path) -> list[Pair]:
    """The pairs of the manifest at ``path``, in its row order."""
    path = Path(path)
    if not path.is_file():
        raise MSNewLesionsError(
            f"manifest {path} is not a file; give a CSV of id,baseline,followup."
        )
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
            columns = [c.strip() for c in (rows[0].keys() if rows else [])]
    except (UnicodeDecodeError, csv.Error) as error:
        raise MSNewLesionsError(f"manifest {path} is not a readable CSV ({error}).") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if not rows or missing:
        raise MSNewLesionsError(
            f"manifest {path} needs a header with columns id,baseline,followup and one row per "
            f"pair" + (f" (missing: {', '.join(missing)})." if rows else " (it has no row).")
        )
    pairs, seen = [], set()
    for line, raw in enumerate(rows, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        key = row["id"]
        if not ID_PATTERN.fullmatch(key):
            raise MSNewLesionsError(
                f"manifest {path} line {line}: id {key!r} must be letters, digits, '.', '_' or "
                "'-' (it names the pair's output folder)."
            )
        if key in seen:
            raise MSNewLesionsError(f"manifest {path} line {line}: id {key!r} appears twice.")
        seen.add(key)
        scans = []
        for role in ("baseline", "followup"):
            if not row[role]:
                raise MSNewLesionsError(f"manifest {path} line {line}: no {role} path.")
            scan = Path(row[role]).expanduser()
            scans.append(scan if scan.is_absolute() else path.parent / scan)
        subject = row.get("subject") or key
        sessions = (row.get("baseline_session") or "baseline", row.get("followup_session") or key)
        baseline = Visit(subject, sessions[0], scans[0], parse_time(row.get("baseline_date", "")))
        followup = Visit(subject, sessions[1], scans[1], parse_time(row.get("followup_date", "")))
        pairs.append(Pair(key, baseline, followup))
    return pairs
