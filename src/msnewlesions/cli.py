"""The ``msnewlesions`` command line: parse, call the library, report. No logic lives here.

Every command is reachable in-process through :func:`main`, which returns the exit status: 0 on
success, 1 for an error the user can fix (one line on stderr), 2 for a usage error.
"""

from __future__ import annotations

import json
import logging
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from msnewlesions.errors import MSNewLesionsError

app = typer.Typer(
    name="msnewlesions",
    help="Find new multiple sclerosis lesions between a baseline and a follow-up FLAIR.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _commands() -> None:
    """Find new multiple sclerosis lesions between a baseline and a follow-up FLAIR."""


class SkullstripChoice(str, Enum):
    fast = "fast"
    accurate = "accurate"


class SkullStrippedChoice(str, Enum):
    auto = "auto"
    yes = "yes"
    no = "no"

    def as_option(self) -> bool | None:
        return {"auto": None, "yes": True, "no": False}[self.value]


SkullStripped = Annotated[
    SkullStrippedChoice,
    typer.Option(
        help="Are the scans already brain-extracted? yes: their non-zero region is the brain "
        "mask; no: HD-BET finds the brain (it needs the skull); auto: yes when both scans lie "
        "inside the template's brain after registration to MNI (default: auto).",
    ),
]


class DeviceChoice(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


def _configure_logging(verbose: bool, quiet: bool) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    root = logging.getLogger("msnewlesions")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Say more about each step.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print only warnings and errors.")]


@app.command()
def preprocess(
    baseline: Annotated[
        Path, typer.Option("--baseline", help="Baseline FLAIR: NIfTI file or DICOM series folder.")
    ],
    followup: Annotated[
        Path, typer.Option("--followup", help="Follow-up FLAIR: NIfTI file or DICOM series folder.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Output folder (created; must not exist).")],
    skullstrip: Annotated[
        SkullstripChoice,
        typer.Option(help="HD-BET mode: fast (1 network) or accurate (5-network ensemble)."),
    ] = SkullstripChoice.fast,
    skull_stripped: SkullStripped = SkullStrippedChoice.auto,
    device: Annotated[DeviceChoice, typer.Option(help="Where HD-BET runs.")] = DeviceChoice.cpu,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing output folder.")
    ] = False,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Register both scans to MNI152 (rigid, with skull), skull-strip (HD-BET, unless the scans
    are already brain-extracted), N4, crop, z-score.

    Writes baseline_mni.nii.gz, followup_mni.nii.gz, brainmask_mni.nii.gz, baseline_to_mni.tfm,
    followup_to_mni.tfm (ITK files mapping MNI points to each native image) and qc.json.
    """
    _configure_logging(verbose, quiet)
    from msnewlesions.preprocessing.pipeline import PreprocessOptions, preprocess_files

    options = PreprocessOptions(
        skullstrip_mode=skullstrip.value,
        device=device.value,
        skull_stripped=skull_stripped.as_option(),
    )
    pair = preprocess_files(baseline, followup, out, options, overwrite=overwrite)
    qc = pair.qc
    typer.echo(
        f"{out}: brain {qc['brain_volume_ml']:.0f} ml, timepoints correlate "
        f"{qc['timepoint_correlation_in_brain']:.2f} in the brain, {qc['seconds_total']:.0f} s"
    )
    for warning in qc["warnings"]:
        typer.echo(f"warning: {warning}", err=True)


@app.command()
def evaluate(
    pred: Annotated[
        Path, typer.Option("--pred", help="Predicted mask, or a folder of them (NIfTI).")
    ],
    ref: Annotated[
        Path, typer.Option("--ref", help="Reference mask, or a folder matched by file name.")
    ],
    out: Annotated[Path, typer.Option("--out", help="metrics.json to write.")],
    csv: Annotated[
        Path | None, typer.Option("--csv", help="Also write one row per case to this CSV.")
    ] = None,
    table: Annotated[
        bool, typer.Option("--table", help="Print a per-case table with an 'All' row.")
    ] = False,
    min_lesion_mm3: Annotated[
        float,
        typer.Option(help="Lesions of this volume or less are ignored in lesion-wise metrics."),
    ] = 3.0,
    label: Annotated[
        int | None,
        typer.Option(help="Evaluate this label of multi-label masks (voxels equal to it)."),
    ] = None,
    jobs: Annotated[int, typer.Option(help="Cases evaluated in parallel.")] = 1,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace existing output files.")
    ] = False,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Per-case Dice and recall (the paper's) and MSSEG-2 lesion-wise metrics, with a summary.

    Writes {"cases": [...], "summary": {...}} to --out and a box plot beside it (same name, .png).
    A case without any new lesion scores Dice and recall 1 when nothing is predicted, else 0; its
    lesion-wise ratios are null and its false positives are counted.
    """
    _configure_logging(verbose, quiet)
    from msnewlesions.evaluation import evaluate as run_evaluation
    from msnewlesions.evaluation import format_table, write_results

    outputs = [out, out.with_suffix(".png"), *([csv] if csv else [])]
    existing = [str(path) for path in outputs if path.exists()]
    if existing and not overwrite:
        raise MSNewLesionsError(
            f"{', '.join(existing)} already exist(s); choose another output or pass --overwrite."
        )
    result = run_evaluation(pred, ref, min_lesion_mm3=min_lesion_mm3, label=label, jobs=jobs)
    plot = write_results(result, out, csv)
    if table:
        typer.echo(format_table(result))
    summary = result["summary"]
    dice_text = "n/a" if summary["dice_mean"] is None else f"{summary['dice_mean']:.3f}"
    typer.echo(f"{summary['n_cases']} case(s), mean Dice {dice_text}: {out} ({plot.name})")


class LayoutChoice(str, Enum):
    msseg2 = "msseg2"
    open_ms_data = "open_ms_data"
    bids = "bids"


class ConfigChoice(str, Enum):
    paper = "paper"
    cpu = "cpu"


@app.command()
def dataset(
    layout: Annotated[LayoutChoice, typer.Option(help="Folder layout of --input.")],
    input: Annotated[Path, typer.Option("--input", help="Folder of cases.")],
    out: Annotated[Path, typer.Option("--out", help="nnU-Net raw folder (created or resumed).")],
    dataset_id: Annotated[int, typer.Option("--id", help="nnU-Net dataset number.")] = 501,
    all_changes: Annotated[
        bool,
        typer.Option(
            "--all-changes",
            help="open_ms_data: keep every changed lesion, also those that shrink or fade.",
        ),
    ] = False,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Preprocess every case into an nnU-Net raw dataset with patient-level 5-fold splits.

    Writes OUT/DatasetNNN_MSNewLesions/ with imagesTr/<case>_0000 (baseline) and _0001
    (follow-up), labelsTr/, dataset.json and splits_final.json. Cases already written are skipped.
    """
    _configure_logging(verbose, quiet)
    from msnewlesions.model.datasets import DatasetOptions, build_dataset

    options = DatasetOptions(dataset_id=dataset_id, new_only=not all_changes)
    folder = build_dataset(layout.value, input, out, options)
    count = len(list((folder / "labelsTr").glob("*.nii.gz")))
    typer.echo(f"{folder}: {count} case(s)")


@app.command()
def synthesize(
    open_ms_data: Annotated[
        Path, typer.Option("--open-ms-data", help="The open_ms_data folder (real anatomy, masks).")
    ],
    out: Annotated[Path, typer.Option("--out", help="nnU-Net raw folder (created or resumed).")],
    cache: Annotated[
        Path | None,
        typer.Option(help="Folder for the prepared anatomy (default: OUT/../anatomy)."),
    ] = None,
    dataset_id: Annotated[int, typer.Option("--id", help="nnU-Net dataset number.")] = 510,
    pairs: Annotated[int, typer.Option(help="Training pairs per training scan.")] = 12,
    holdout_pairs: Annotated[int, typer.Option(help="Validation pairs per hold-out scan.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of every random draw.")] = 2026,
    preprocessed_pairs: Annotated[
        int,
        typer.Option(
            help="More training pairs per training scan, made from the scans as segment sees "
            "them (registration, HD-BET, N4, slice matching; about 30 s each).",
        ),
    ] = 0,
    real_pairs: Annotated[
        bool,
        typer.Option(
            "--real-pairs",
            help="Also train on the complete real pairs (their lesions that gain FLAIR signal).",
        ),
    ] = False,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Make synthetic training pairs: real anatomy + real lesion shapes (see model/synthesis.py).

    Scans of the hold-out patients (the two complete real pairs) become validation pairs only
    (fold 0's split); every other FLAIR becomes training pairs. With --real-pairs the two real
    pairs join the training side, and the hold-out pairs, made from the same patients' scans, are
    no longer independent of training: score such a model on other real pairs. Resumes where it
    stopped.
    """
    _configure_logging(verbose, quiet)
    from msnewlesions.model import datasets, nnunet, synthesis

    sources, masks = synthesis.open_ms_data_sources(open_ms_data)
    cache = cache or out.parent / "anatomy"
    library = synthesis.lesion_library(masks)
    training, holdout = [], []
    for index, source in enumerate(sources):
        anatomy = synthesis.prepare_anatomy(source, cache)
        role = holdout if source.patient in synthesis.HOLDOUT_PATIENTS else training
        role.append((index, anatomy))
    folder = synthesis.write_synthetic_dataset(
        out / nnunet.dataset_name(dataset_id),
        training,
        holdout,
        library,
        pairs,
        holdout_pairs,
        seed,
        real_pairs=datasets.read_open_ms_data(open_ms_data) if real_pairs else (),
        preprocessed_pairs_per_anatomy=preprocessed_pairs,
    )
    split = json.loads((folder / "splits_final.json").read_text())[0]
    typer.echo(f"{folder}: {len(split['train'])} training and {len(split['val'])} hold-out pairs")


@app.command()
def train(
    dataset: Annotated[Path, typer.Option("--dataset", help="nnU-Net raw dataset folder.")],
    fold: Annotated[str, typer.Option(help="Fold 0-4, or all.")],
    work: Annotated[
        Path | None,
        typer.Option(
            help="Folder for nnU-Net's preprocessed data and results (default: beside "
            "the dataset's raw folder)."
        ),
    ] = None,
    config: Annotated[ConfigChoice, typer.Option(help="paper (GPU) or cpu plans.")] = (
        ConfigChoice.cpu
    ),
    device: Annotated[DeviceChoice, typer.Option(help="Where to train.")] = DeviceChoice.cpu,
    epochs: Annotated[int | None, typer.Option(help="Stop after this many epochs.")] = None,
    iterations: Annotated[
        int | None, typer.Option(help="Iterations per epoch (default: 250).")
    ] = None,
    validation_iterations: Annotated[
        int | None, typer.Option(help="Validation batches per epoch (default: 50).")
    ] = None,
    checkpoint_every: Annotated[
        int | None, typer.Option(help="Epochs between checkpoints (default: 25).")
    ] = None,
    anneal_epochs: Annotated[
        int | None,
        typer.Option(
            help="Run the last N epochs at the learning rate / 5, for runs too short for the "
            "paper's plateau rule (default: 0)."
        ),
    ] = None,
    learning_rate: Annotated[
        float | None,
        typer.Option(
            help="Initial learning rate; with --resume, the rate to continue at from the next "
            "epoch (fine-tuning at a lower rate; default: 0.01, or the checkpoint's).",
        ),
    ] = None,
    initial_weights: Annotated[
        Path | None,
        typer.Option(
            "--initial-weights",
            help="Start a new run from this checkpoint's network (same plans; e.g. the shipped "
            "model's fold_0/checkpoint_final.pth) instead of random weights.",
        ),
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the checkpoint.")] = False,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Plan and preprocess (once; cases added later are preprocessed with the same plans) and
    train one fold with the paper's nnU-Net trainer."""
    _configure_logging(verbose, quiet)
    if learning_rate is not None and not learning_rate > 0:
        raise MSNewLesionsError(f"--learning-rate must be above 0 (got {learning_rate}).")
    from msnewlesions.model import nnunet

    nnunet.check_initial_weights(initial_weights, resume)

    dataset_id = nnunet.dataset_id_of(dataset)
    work = work or dataset.parent.parent / "nnunet"
    preprocessed, results = work / "preprocessed", work / "results"
    if not (preprocessed / dataset.name / "nnUNetPlans_cpu.json").exists():
        nnunet.plan_and_preprocess(dataset.parent, preprocessed, dataset_id)
    else:  # the dataset may have grown since: same plans, only the new cases
        added = nnunet.preprocess_new_cases(dataset.parent, preprocessed, dataset_id)
        if added:
            logging.getLogger(__name__).info("preprocessed %d new case(s)", len(added))
    folder = nnunet.train(
        preprocessed,
        results,
        dataset_id,
        fold,
        config.value,
        device.value,
        resume=resume,
        epochs=epochs,
        iterations_per_epoch=iterations,
        validation_iterations=validation_iterations,
        checkpoint_every=checkpoint_every,
        anneal_epochs=anneal_epochs,
        learning_rate=learning_rate,
        initial_weights=initial_weights,
    )
    typer.echo(f"trained: {folder}")


@app.command()
def predict(
    model: Annotated[
        Path, typer.Option("--model", help="Trained nnU-Net model folder, or its zip.")
    ],
    input: Annotated[
        Path, typer.Option("--input", help="Folder of <case>_0000 / <case>_0001 NIfTI files.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for <case>.nii.gz masks.")],
    folds: Annotated[
        list[str] | None, typer.Option("--folds", help="Folds to ensemble (default: all).")
    ] = None,
    device: Annotated[DeviceChoice, typer.Option(help="Where to predict.")] = DeviceChoice.cpu,
    tta: Annotated[bool, typer.Option("--tta", help="Mirroring test-time augmentation.")] = False,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Segment preprocessed pairs with a trained model (its folds ensembled)."""
    _configure_logging(verbose, quiet)
    from msnewlesions.model import nnunet

    nnunet.predict(model, input, out, folds, device.value, tta)
    typer.echo(f"predicted: {out}")


@app.command()
def segment(
    baseline: Annotated[
        Path | None,
        typer.Option("--baseline", "-t1", help="Baseline FLAIR: NIfTI file or DICOM folder."),
    ] = None,
    followup: Annotated[
        Path | None,
        typer.Option("--followup", "-t2", help="Follow-up FLAIR: NIfTI file or DICOM folder."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Output folder for every result.")
    ] = None,
    mask: Annotated[
        Path | None,
        typer.Option("-o", help="MSSEG-2 container form: write just the mask to this file."),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(help="Trained model folder or zip (default: the model shipped inside)."),
    ] = None,
    device: Annotated[DeviceChoice, typer.Option(help="Where to run.")] = DeviceChoice.cpu,
    skull_stripped: SkullStripped = SkullStrippedChoice.auto,
    tta: Annotated[bool, typer.Option("--tta", help="Mirroring test-time augmentation.")] = False,
    threshold: Annotated[
        float | None,
        typer.Option(help="Probability threshold (default: the model's own, else 0.5)."),
    ] = None,
    min_lesion_mm3: Annotated[
        float | None,
        typer.Option(
            help="Lesions of this volume or less are dropped (default: the model's own, else 3)."
        ),
    ] = None,
    match_slices: Annotated[
        bool,
        typer.Option(
            "--match-slices/--no-slice-matching",
            help="Where one scan's slices are thicker along an axis, reslice the other like it "
            "before comparing (fewer false new lesions between 2D and 3D acquisitions).",
        ),
    ] = True,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing output.")
    ] = False,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Find the new lesions of the follow-up: the mask on the follow-up's own grid and more.

    --out DIR writes new_lesions.nii.gz (on the follow-up's grid), new_lesions_mni.nii.gz,
    lesions.csv, summary.json and report.html; -t1 B -t2 F -o mask.nii.gz writes just the mask.
    """
    _configure_logging(verbose, quiet)
    from msnewlesions.preprocessing.pipeline import PreprocessOptions
    from msnewlesions.segment import SegmentOptions, segment_files

    if baseline is None or followup is None:
        raise MSNewLesionsError("give both scans: --baseline B --followup F (or -t1 B -t2 F).")
    if (out is None) == (mask is None):
        raise MSNewLesionsError("give exactly one of --out DIR and -o MASK.")
    options = SegmentOptions(
        threshold,
        min_lesion_mm3,
        PreprocessOptions(device=device.value, skull_stripped=skull_stripped.as_option()),
        match_slices,
    )
    result = segment_files(
        baseline,
        followup,
        out or mask,
        model,
        options,
        device.value,
        tta,
        overwrite,
        mask_only=mask is not None,
    )
    volume = sum(lesion.volume_mm3 for lesion in result.lesions)
    typer.echo(f"{out or mask}: {len(result.lesions)} new lesion(s), {volume:.0f} mm3")


model_app = typer.Typer(help="Move trained models between machines.", no_args_is_help=True)
app.add_typer(model_app, name="model")


@model_app.command("export")
def model_export(
    model: Annotated[Path, typer.Option("--model", help="Trained nnU-Net model folder.")],
    out: Annotated[Path, typer.Option("--out", help="Zip file to write.")],
    keep_optimizer: Annotated[
        bool, typer.Option("--keep-optimizer", help="Keep the optimizer state (to resume).")
    ] = False,
) -> None:
    """Zip a model in nnU-Net's export layout (checkpoints without optimizer state)."""
    from msnewlesions.model import nnunet

    if out.exists():
        raise MSNewLesionsError(f"{out} already exists; choose another file.")
    nnunet.export_model(model, out, strip_optimizer=not keep_optimizer)
    typer.echo(f"exported: {out} ({out.stat().st_size / 1e6:.1f} MB)")


@model_app.command("import")
def model_import(
    zip_file: Annotated[Path, typer.Option("--zip", help="Model zip (ours or nnU-Net's).")],
    out: Annotated[Path, typer.Option("--out", help="Folder to unpack the model into.")],
) -> None:
    """Unpack a model zip; prints the model folder to pass to --model."""
    from msnewlesions.model import nnunet

    typer.echo(str(nnunet.import_model(zip_file, out)))


def _interrupt_on_sigterm() -> None:
    """SIGTERM ends a run like Ctrl-C: outputs in progress are removed, nothing partial stays."""
    import signal
    import threading

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)


INTERRUPTED = "error: interrupted; no output was written (an existing output is left as it was)."


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    _interrupt_on_sigterm()
    try:
        app(args=argv, prog_name="msnewlesions", standalone_mode=True)
    except MSNewLesionsError as error:
        typer.echo(f"error: {error}", err=True)
        return 1
    except KeyboardInterrupt:
        typer.echo(INTERRUPTED, err=True)
        return 130
    except SystemExit as exit_:
        code = exit_.code
        if code == 130:  # typer turns Ctrl-C (and our SIGTERM) into a silent exit 130
            typer.echo(INTERRUPTED, err=True)
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
