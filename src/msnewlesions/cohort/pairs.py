"""Visits of a subject and the pairs made of them.

A *visit* is one FLAIR of one subject at one session. Sessions are ordered by their acquisition
time when every session of the subject has one, else by label (natural order: ``2`` before
``10``). A subject's pairs are its consecutive sessions (``01->02``, ``02->03``, ...) or each
later session against the first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

PairPolicy = Literal["consecutive", "first"]


@dataclass(frozen=True)
class Visit:
    """One FLAIR scan: ``subject`` and ``session`` are BIDS labels (without ``sub-``/``ses-``)."""

    subject: str
    session: str
    path: Path
    acquired: datetime | None = None


@dataclass(frozen=True)
class Pair:
    """A baseline and a follow-up visit of one subject; ``key`` names the pair in every output."""

    key: str
    baseline: Visit
    followup: Visit

    @property
    def subject(self) -> str:
        return self.followup.subject

    @property
    def days_apart(self) -> float | None:
        """Days from the baseline to the follow-up acquisition, when both times are known."""
        if self.baseline.acquired is None or self.followup.acquired is None:
            return None
        seconds = (self.followup.acquired - self.baseline.acquired).total_seconds()
        return round(seconds / 86400, 2)


def natural_key(label: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key in which digit runs compare as numbers: ``2`` < ``10``, ``m6`` < ``m12``."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part)
        for part in re.split(r"(\d+)", label)
        if part
    )


def order_visits(visits: Iterable[Visit]) -> list[Visit]:
    """One subject's visits in time order: by acquisition time when all have one, else label."""
    visits = list(visits)
    if visits and all(visit.acquired is not None for visit in visits):
        return sorted(visits, key=lambda v: (v.acquired, natural_key(v.session)))
    return sorted(visits, key=lambda v: natural_key(v.session))


def bids_pair_key(baseline: Visit, followup: Visit) -> str:
    """``sub-S_ses-F_desc-sinceB``: the follow-up's entities and the baseline session in ``desc``
    (see :mod:`msnewlesions.cohort.outputs`)."""
    return f"sub-{followup.subject}_ses-{followup.session}_desc-{since(baseline.session)}"


def since(baseline_session: str) -> str:
    """The ``desc`` label that names the baseline session of a pair: ``since`` + its label."""
    return f"since{baseline_session}"


def pair_visits(visits: Sequence[Visit], policy: PairPolicy = "consecutive") -> list[Pair]:
    """Every subject's pairs under ``policy``, subjects in natural order, then in time order."""
    if policy not in ("consecutive", "first"):
        raise ValueError(f"unknown pairing policy {policy!r}")
    subjects: dict[str, list[Visit]] = {}
    for visit in visits:
        subjects.setdefault(visit.subject, []).append(visit)
    pairs = []
    for subject in sorted(subjects, key=natural_key):
        ordered = order_visits(subjects[subject])
        for index in range(1, len(ordered)):
            baseline = ordered[index - 1] if policy == "consecutive" else ordered[0]
            followup = ordered[index]
            pairs.append(Pair(bids_pair_key(baseline, followup), baseline, followup))
    return pairs
