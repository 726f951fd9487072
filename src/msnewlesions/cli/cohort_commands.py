"""Commands on many pairs: ``bids`` (a BIDS App) and ``batch`` (a CSV manifest)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from msnewlesions.cli.app import (
    DeviceChoice,
    EngineChoice,
    EngineOption,
    PrecisionChoice,
    PrecisionOption,
    Quiet,
    SendTo,
    SkullStripped,
    SkullStrippedChoice,
    Verbose,
    app,
    configure_logging,
    segment_options,
)
from msnewlesions.errors import MSNewLesionsError

if TYPE_CHECKING:
    from msnewlesions.cohort.pair_job import SegmentSettings
    from msnewlesions.commands.cohort import CohortRun


class AnalysisLevel(str, Enum):
    participant = "participant"
    group = "group"


class PairsChoice(str, Enum):
    consecutive = "consecutive"
    first = "first"


Jobs = Annotated[
    int | None,
    typer.Option(
        help="Pairs segmented at once on this machine (default: one per core, as many as the "
        "memory holds at 3.5 GB each).",
        min=1,
    ),
]
DaskScheduler = Annotated[
    str | None,
    typer.Option(
        help="Run the pairs on the Dask cluster whose scheduler is at this address "
        "(tcp://host:8786; dask-jobqueue or `dask scheduler` + `dask worker`) instead of here.",
    ),
]
Model = Annotated[
    Path | None,
    typer.Option(help="Trained model folder or zip (default: the model shipped inside)."),
]
Threshold = Annotated[
    float | None, typer.Option(help="Probability threshold (default: the model's own).")
]
MinLesion = Annotated[
    float | None,
    typer.Option(help="Lesions of this volume (mm3) or less are dropped (default: the model's)."),
]
MinDepth = Annotated[
    float | None,
    typer.Option(
        help="Lesions that reach less deep inside the brain (mm; the brain mask without the fluid "
        "at its surface) are dropped (default: the model's; 0 turns it off)."
    ),
]
MatchSlices = Annotated[
    bool,
    typer.Option(
        "--match-slices/--no-slice-matching",
        help="Compare the scans through the thicker one's slices (as segment does).",
    ),
]
Tta = Annotated[bool, typer.Option("--tta", help="Mirroring test-time augmentation.")]


LABEL_OPTIONS = ("--participant-label", "--participant_label", "--session-label", "--session_label")


def expand_label_lists(argv: list[str]) -> list[str]:
    """``bids ... --participant_label 01 02 03`` (the BIDS Apps form, a space-separated list)
    as the repeated option the parser reads. Labels are taken up to the next option; only after
    the three positional arguments, so that a label is never mistaken for one of them."""
    if not argv or argv[0] != "bids":
        return argv
    expanded: list[str] = []
    positionals, index = 0, 1
    expanded.append(argv[0])
    while index < len(argv):
        token = argv[index]
        expanded.append(token)
        index += 1
        if token in LABEL_OPTIONS and index < len(argv):
            expanded.append(argv[index])
            index += 1
            while positionals >= 3 and index < len(argv) and not argv[index].startswith("-"):
                expanded += [token, argv[index]]
                index += 1
        elif not token.startswith("-"):
            positionals += 1
    return expanded


def _labels(values: list[str] | None) -> list[str]:
    """Labels given repeatedly or comma-separated."""
    return [part for value in values or [] for part in value.replace(",", " ").split()]


def _settings(
    model: Path | None,
    device: DeviceChoice,
    skull_stripped: SkullStrippedChoice,
    tta: bool,
    threshold: float | None,
    min_lesion_mm3: float | None,
    min_depth_mm: float | None,
    match_slices: bool,
    precision: PrecisionChoice = PrecisionChoice.auto,
    engine: EngineChoice = EngineChoice.auto,
    send_to: str | None = None,
) -> SegmentSettings:
    from msnewlesions.cohort.pair_job import SegmentSettings

    options = segment_options(
        threshold,
        min_lesion_mm3,
        min_depth_mm,
        device,
        skull_stripped,
        match_slices,
        precision,
        engine,
    )
    return SegmentSettings(model, options, device.value, tta, send_to=send_to)


def _finish(run: CohortRun, output_dir: Path) -> None:
    for note in run.notes:
        typer.echo(f"note: {note}", err=True)
    if run.outcomes:
        done, skipped, failed = (run.count(s) for s in ("done", "skipped", "failed"))
        typer.echo(
            f"{output_dir}: {len(run.outcomes)} pair(s): {done} segmented, {skipped} already "
            f"complete, {failed} failed"
        )
    if run.group is not None:
        typer.echo(f"group table: {run.group[0]}; report: {run.group[1]}")
    failed_outcomes = [o for o in run.outcomes if o.status == "failed"]
    for outcome in failed_outcomes:
        typer.echo(f"failed: {outcome.key}: {outcome.reason}", err=True)
    if failed_outcomes:
        raise MSNewLesionsError(
            f"{len(failed_outcomes)} of {len(run.outcomes)} pair(s) failed (reasons above and in "
            f"{output_dir / 'logs'}); fix them and run again: complete pairs are skipped."
        )


@app.command()
def bids(
    bids_dir: Annotated[Path, typer.Argument(help="The BIDS dataset (its root folder).")],
    output_dir: Annotated[
        Path, typer.Argument(help="The derivatives dataset to write (created or resumed).")
    ],
    analysis_level: Annotated[
        AnalysisLevel,
        typer.Argument(help="participant: segment each pair; group: the cohort table and page."),
    ],
    participant_label: Annotated[
        list[str] | None,
        typer.Option(
            "--participant-label",
            "--participant_label",
            help="Only these subjects (with or without sub-; repeat or comma-separate).",
        ),
    ] = None,
    session_label: Annotated[
        list[str] | None,
        typer.Option(
            "--session-label",
            "--session_label",
            help="Only these sessions (with or without ses-; repeat or comma-separate).",
        ),
    ] = None,
    pairs: Annotated[
        PairsChoice,
        typer.Option(
            help="consecutive: each session against the one before; first: against "
            "the first session."
        ),
    ] = PairsChoice.consecutive,
    acquisition: Annotated[
        str | None,
        typer.Option(
            help="Where a session has FLAIRs of several acquisitions, use this acq- "
            "label (without it such sessions are left out, with a note)."
        ),
    ] = None,
    jobs: Jobs = None,
    dask_scheduler: DaskScheduler = None,
    model: Model = None,
    device: Annotated[DeviceChoice, typer.Option(help="Where to run.")] = DeviceChoice.cpu,
    precision: PrecisionOption = PrecisionChoice.auto,
    engine: EngineOption = EngineChoice.auto,
    skull_stripped: SkullStripped = SkullStrippedChoice.auto,
    tta: Tta = False,
    threshold: Threshold = None,
    min_lesion_mm3: MinLesion = None,
    min_depth_mm: MinDepth = None,
    match_slices: MatchSlices = True,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """A BIDS App: the new lesions of every subject's follow-up sessions.

    participant: each pair of sessions (consecutive, or each against the first) with a FLAIR
    (sub-*/ses-*/anat/*_FLAIR.nii.gz, or .nii) is segmented into OUTPUT_DIR, a BIDS derivatives
    dataset; pairs already complete are skipped, a failing pair is recorded and the others go on.
    group: OUTPUT_DIR/group/new_lesions.tsv and report.html. Exit status 1 when a pair failed.

    Example: msnewlesions bids /data/ms-study /data/ms-study/derivatives/msnewlesions participant
    """
    configure_logging(verbose, quiet)
    from msnewlesions.commands.cohort import BidsSelection, bids_group, bids_participant

    selection = BidsSelection(
        _labels(participant_label), _labels(session_label), acquisition, pairs.value
    )
    if analysis_level is AnalysisLevel.group:
        run = bids_group(bids_dir, output_dir, selection)
    else:
        settings = _settings(
            model,
            device,
            skull_stripped,
            tta,
            threshold,
            min_lesion_mm3,
            min_depth_mm,
            match_slices,
            precision,
            engine,
        )
        run = bids_participant(bids_dir, output_dir, settings, selection, jobs, dask_scheduler)
    _finish(run, output_dir)


@app.command()
def batch(
    manifest: Annotated[
        Path, typer.Argument(help="CSV with columns id,baseline,followup (one row per pair).")
    ],
    output_dir: Annotated[Path, typer.Argument(help="Output folder (created or resumed).")],
    jobs: Jobs = None,
    dask_scheduler: DaskScheduler = None,
    model: Model = None,
    device: Annotated[DeviceChoice, typer.Option(help="Where to run.")] = DeviceChoice.cpu,
    precision: PrecisionOption = PrecisionChoice.auto,
    engine: EngineOption = EngineChoice.auto,
    skull_stripped: SkullStripped = SkullStrippedChoice.auto,
    tta: Tta = False,
    threshold: Threshold = None,
    min_lesion_mm3: MinLesion = None,
    min_depth_mm: MinDepth = None,
    match_slices: MatchSlices = True,
    send_to: SendTo = None,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Every pair of a CSV manifest, for data without BIDS.

    Each pair's segment outputs go to OUTPUT_DIR/<id>/; then OUTPUT_DIR/group/new_lesions.tsv
    and report.html. Optional columns: subject, baseline_date, followup_date. Pairs already
    complete are skipped; exit status 1 when a pair failed.

    Example: msnewlesions batch pairs.csv results/ --jobs 2
    """
    configure_logging(verbose, quiet)
    from msnewlesions.commands.cohort import batch as run_batch

    settings = _settings(
        model,
        device,
        skull_stripped,
        tta,
        threshold,
        min_lesion_mm3,
        min_depth_mm,
        match_slices,
        precision,
        engine,
        send_to,
    )
    run = run_batch(manifest, output_dir, settings, jobs, dask_scheduler)
    _finish(run, output_dir)
