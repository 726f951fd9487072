"""``msnewlesions bids`` (a BIDS App: participant and group levels) and ``msnewlesions batch``
(a CSV manifest of pairs): many pairs through one engine (:mod:`msnewlesions.cohort`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

from msnewlesions.cohort.bids import discover_bids
from msnewlesions.cohort.engine import run_pairs
from msnewlesions.cohort.group import GroupRow, group_rows, write_group
from msnewlesions.cohort.manifest import read_manifest
from msnewlesions.cohort.outputs import (
    BIDS_VERSION,
    BidsPairOutputs,
    FolderPairOutputs,
    PairOutputs,
    bidsignore,
    describe_run,
)
from msnewlesions.cohort.pair_job import PairOutcome, SegmentSettings
from msnewlesions.cohort.pairs import PairPolicy, pair_visits
from msnewlesions.errors import MSNewLesionsError

logger = logging.getLogger(__name__)

#: The batch layout's record of what made its results (the BIDS layout's is
#: dataset_description.json).
BATCH_RECORD = "msnewlesions_batch.json"


@dataclass
class CohortRun:
    """The pairs of a run, what happened to each, and the notes of the discovery."""

    pairs: list[PairOutputs]
    outcomes: list[PairOutcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rows: list[GroupRow] = field(default_factory=list)
    group: tuple[Path, Path] | None = None

    def count(self, status: str) -> int:
        return sum(outcome.status == status for outcome in self.outcomes)


@dataclass(frozen=True)
class BidsSelection:
    """Which visits of a BIDS dataset, paired how."""

    participant_labels: Sequence[str] = ()
    session_labels: Sequence[str] = ()
    acquisition: str | None = None
    policy: PairPolicy = "consecutive"


def _check_output(output_dir: Path, inputs: Sequence[Path]) -> Path:
    output_dir = output_dir.absolute()
    if output_dir.exists() and not output_dir.is_dir():
        raise MSNewLesionsError(f"{output_dir} exists and is not a folder; give a folder.")
    for source in inputs:
        if source.absolute() == output_dir:
            raise MSNewLesionsError(f"the output folder {output_dir} is the input; choose another.")
    return output_dir


def bids_pairs(bids_dir: Path, output_dir: Path, selection: BidsSelection) -> CohortRun:
    """The pairs of the dataset and their places in the derivatives dataset."""
    discovery = discover_bids(
        bids_dir, selection.participant_labels, selection.session_labels, selection.acquisition
    )
    pairs = pair_visits(discovery.visits, selection.policy)
    outputs: list[PairOutputs] = [BidsPairOutputs(output_dir, pair) for pair in pairs]
    return CohortRun(outputs, notes=list(discovery.notes))


def dataset_description(bids_dir: Path, settings: SegmentSettings) -> dict[str, Any]:
    record = settings.record()
    source = bids_dir.absolute().as_uri()
    return {
        "Name": "msnewlesions: new multiple sclerosis lesions between FLAIR visits",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [
            {
                "Name": "msnewlesions",
                "Version": version("msnewlesions"),
                "Description": f"nnU-Net new-lesion segmentation; model: {record['model']}",
                "Settings": record,
            }
        ],
        "SourceDatasets": [{"URL": source}],
        "DatasetLinks": {"raw": source},
    }


def bids_participant(
    bids_dir: str | Path,
    output_dir: str | Path,
    settings: SegmentSettings,
    selection: BidsSelection | None = None,
    jobs: int | None = None,
    scheduler: str | None = None,
) -> CohortRun:
    """Participant level: segment every selected pair not yet complete."""
    bids_dir = Path(bids_dir)
    output_dir = _check_output(Path(output_dir), [bids_dir])
    run = bids_pairs(bids_dir, output_dir, selection or BidsSelection())
    if not run.pairs:
        raise MSNewLesionsError(
            f"no pair of sessions to compare in {bids_dir} (a pair needs two sessions of one "
            "subject with a FLAIR each)" + (f": {run.notes[0]}" if run.notes else ".")
        )
    describe_run(
        output_dir / "dataset_description.json",
        settings.record(),
        dataset_description(bids_dir, settings),
    )
    bidsignore(output_dir)
    run.outcomes = run_pairs(run.pairs, settings, jobs, scheduler)
    return run


def bids_group(
    bids_dir: str | Path, output_dir: str | Path, selection: BidsSelection | None = None
) -> CohortRun:
    """Group level: the cohort table and page from the participant level's outputs."""
    bids_dir = Path(bids_dir)
    output_dir = _check_output(Path(output_dir), [bids_dir])
    if not (output_dir / "dataset_description.json").is_file():
        raise MSNewLesionsError(
            f"{output_dir} holds no participant-level results; run the participant level first."
        )
    run = bids_pairs(bids_dir, output_dir, selection or BidsSelection())
    run.rows = group_rows(run.pairs, output_dir)
    run.group = write_group(run.rows, output_dir, f"New lesions: {bids_dir.absolute().name}")
    return run


def batch(
    manifest: str | Path,
    output_dir: str | Path,
    settings: SegmentSettings,
    jobs: int | None = None,
    scheduler: str | None = None,
) -> CohortRun:
    """Every pair of a CSV manifest, then the group table and page."""
    manifest = Path(manifest)
    output_dir = _check_output(Path(output_dir), [manifest])
    pairs = read_manifest(manifest)
    run = CohortRun([FolderPairOutputs(output_dir, pair) for pair in pairs])
    record = settings.record()
    describe_run(output_dir / BATCH_RECORD, record, {"GeneratedBy": [{"Settings": record}]})
    run.outcomes = run_pairs(run.pairs, settings, jobs, scheduler)
    run.rows = group_rows(run.pairs, output_dir)
    run.group = write_group(run.rows, output_dir, f"New lesions: {manifest.name}")
    return run
