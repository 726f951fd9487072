"""A BIDS dataset's FLAIR visits, found with pybids.

One FLAIR per subject and session: ``sub-<S>/[ses-<V>/]anat/sub-<S>[_ses-<V>]_..._FLAIR.nii[.gz]``.
A session with several FLAIRs is resolved explicitly, and the choice is reported:

* ``acquisition`` (``--acquisition``) keeps only the FLAIRs of that ``acq-`` label;
* several runs of one acquisition: the highest ``run-`` is taken (a run is repeated when the
  earlier one failed);
* FLAIRs that still differ (two acquisitions, reconstructions, ...): the session is left out, with
  a note that names them and says to choose one with ``--acquisition``.

Acquisition times come from ``sub-<S>/sub-<S>_sessions.tsv`` (``acq_time``, ISO 8601), else from
the session's ``_scans.tsv`` row of the FLAIR; without them sessions are ordered by label.
Derivatives, ``sourcedata`` and ``code`` are not searched (pybids' defaults).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from msnewlesions.cohort.pairs import Visit, natural_key
from msnewlesions.errors import MSNewLesionsError

logger = logging.getLogger(__name__)

FLAIR_EXTENSIONS = (".nii", ".nii.gz")


@dataclass
class Discovery:
    """The visits found, and one line for each thing left out or chosen."""

    visits: list[Visit]
    notes: list[str] = field(default_factory=list)


def strip_prefix(label: str, prefix: str) -> str:
    """``sub-01`` or ``01`` -> ``01`` (BIDS Apps accept labels with or without the prefix)."""
    return label[len(prefix) :] if label.startswith(prefix) else label


def parse_time(text: str) -> datetime | None:
    """An ISO 8601 date or date-time of a BIDS TSV (``n/a`` and empty: None)."""
    text = (text or "").strip()
    if not text or text.lower() == "n/a":
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=None)


def _read_tsv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def session_times(root: Path, subject: str) -> dict[str, datetime]:
    """``acq_time`` of each session in ``sub-<S>_sessions.tsv`` (labels without ``ses-``)."""
    times = {}
    for row in _read_tsv(root / f"sub-{subject}" / f"sub-{subject}_sessions.tsv"):
        session = strip_prefix(row.get("session_id", ""), "ses-")
        acquired = parse_time(row.get("acq_time", ""))
        if session and acquired is not None:
            times[session] = acquired
    return times


def scan_time(root: Path, path: Path) -> datetime | None:
    """``acq_time`` of ``path`` in its session's ``_scans.tsv``, if it has one."""
    session_folder = path.parent.parent
    for table in session_folder.glob("*_scans.tsv"):
        for row in _read_tsv(table):
            if (
                Path(row.get("filename", "")).as_posix()
                == path.relative_to(session_folder).as_posix()
            ):
                return parse_time(row.get("acq_time", ""))
    return None


def _choose(files: list[Any], acquisition: str | None) -> tuple[Any | None, str | None]:
    """The FLAIR of one session among ``files`` (pybids objects), and a note when choosing."""
    names = ", ".join(sorted(Path(f.path).name for f in files))
    if acquisition is not None:
        files = [f for f in files if f.get_entities().get("acquisition") == acquisition]
        if not files:
            return None, f"no FLAIR with acq-{acquisition} among {names}"
    if len(files) == 1:
        return files[0], None

    def without_run(f: Any) -> tuple[tuple[str, str], ...]:
        entities = f.get_entities()
        return tuple(
            sorted((k, str(v)) for k, v in entities.items() if k not in ("run", "extension"))
        )

    if len({without_run(f) for f in files}) > 1:
        return None, (
            f"several FLAIRs ({names}); left out: choose one with --acquisition (acq- label)"
        )
    chosen = max(files, key=lambda f: int(f.get_entities().get("run", 0)))
    return chosen, f"several runs ({names}); took {Path(chosen.path).name}, the last run"


def discover_bids(
    root: str | Path,
    participant_labels: Sequence[str] = (),
    session_labels: Sequence[str] = (),
    acquisition: str | None = None,
) -> Discovery:
    """Every (subject, session) FLAIR of the dataset at ``root``, restricted to the labels given."""
    root = Path(root)
    if not root.is_dir():
        raise MSNewLesionsError(f"BIDS dataset {root} is not a folder; give the dataset's root.")
    import bids

    try:
        layout = bids.BIDSLayout(str(root), validate=False)
    except Exception as error:  # pybids raises plain ValueErrors and more for broken datasets
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise MSNewLesionsError(f"{root} cannot be read as a BIDS dataset: {first_line}") from None
    subjects = {strip_prefix(label, "sub-") for label in participant_labels}
    sessions = {strip_prefix(label, "ses-") for label in session_labels}
    found = layout.get(suffix="FLAIR", extension=list(FLAIR_EXTENSIONS), datatype="anat")
    notes = []
    known_subjects = {str(f.get_entities()["subject"]) for f in found}
    for missing in sorted(subjects - known_subjects, key=natural_key):
        notes.append(f"sub-{missing}: no FLAIR found")
    groups: dict[tuple[str, str], list[Any]] = {}
    for item in found:
        entities = item.get_entities()
        subject, session = str(entities["subject"]), str(entities.get("session", ""))
        if subjects and subject not in subjects:
            continue
        if sessions and session not in sessions:
            continue
        groups.setdefault((subject, session), []).append(item)
    visits = []
    times: dict[str, dict[str, datetime]] = {}
    for (subject, session), files in sorted(
        groups.items(), key=lambda kv: (natural_key(kv[0][0]), natural_key(kv[0][1]))
    ):
        where = f"sub-{subject}" + (f" ses-{session}" if session else "")
        chosen, note = _choose(files, acquisition)
        if note:
            notes.append(f"{where}: {note}")
        if chosen is None:
            continue
        if not session:
            notes.append(f"{where}: a FLAIR without a session; pairs need sessions (ses-)")
            continue
        if subject not in times:
            times[subject] = session_times(root, subject)
        path = Path(chosen.path)
        acquired = times[subject].get(session) or scan_time(root, path)
        visits.append(Visit(subject, session, path, acquired))
    counts: dict[str, int] = {}
    for visit in visits:
        counts[visit.subject] = counts.get(visit.subject, 0) + 1
    for subject, count in sorted(counts.items(), key=lambda kv: natural_key(kv[0])):
        if count < 2:
            notes.append(f"sub-{subject}: one session with a FLAIR, no pair to compare")
    for note in notes:
        logger.info("%s", note)
    return Discovery(visits, notes)
