"""Commands that make and move models: ``dataset``, ``synthesize``, ``train``, ``predict``,
``model export`` / ``model import``."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from msnewlesions.cli.app import (
    ConfigChoice,
    DeviceChoice,
    EngineChoice,
    EngineOption,
    Quiet,
    Verbose,
    app,
    configure_logging,
)


class NetworkChoice(str, Enum):
    concatenation = "concatenation"
    difference_weighting = "difference-weighting"


class LayoutChoice(str, Enum):
    msseg2 = "msseg2"
    open_ms_data = "open_ms_data"
    bids = "bids"


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

    Example: msnewlesions dataset --layout msseg2 --input msseg2_training --out raw/ --id 501
    """
    configure_logging(verbose, quiet)
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
    real_pair: Annotated[
        list[str] | None,
        typer.Option(
            "--real-pair",
            metavar="PATIENT",
            help="Also train on this patient's complete real pair (e.g. patient03; repeatable): "
            "leave-one-out models, scored on the pair left out.",
        ),
    ] = None,
    real_pair_copies: Annotated[
        int,
        typer.Option(
            min=1,
            help="Times each real pair is named in the training split (how much more often "
            "than a synthetic pair it is sampled).",
        ),
    ] = 1,
    realistic: Annotated[
        bool,
        typer.Option(
            "--realistic",
            help="Model v2's synthesis: shapes and sizes of real changes (open_ms_data's 13 "
            "change masks), enlarging old lesions (labelled), per-tissue contrast changes, "
            "signal left in the CSF at some visits.",
        ),
    ] = False,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Make synthetic training pairs from real anatomy and real lesion shapes.

    Scans of the hold-out patients (the two complete real pairs) become validation pairs only
    (fold 0's split); every other FLAIR becomes training pairs. With --real-pairs the two real
    pairs join the training side, and the hold-out pairs, made from the same patients' scans, are
    no longer independent of training: score such a model on other real pairs. With --real-pair
    PATIENT only that patient's pair joins: score the model on the other. Resumes where it
    stopped.

    Example: msnewlesions synthesize --open-ms-data open_ms_data --out raw/ --pairs 8
    """
    configure_logging(verbose, quiet)
    from msnewlesions.model.synthesis import SyntheticDatasetPlan, synthesize_dataset

    if real_pairs and real_pair:
        raise typer.BadParameter("give --real-pairs (all) or --real-pair, not both.")
    plan = SyntheticDatasetPlan(
        dataset_id=dataset_id,
        pairs_per_anatomy=pairs,
        holdout_pairs_per_anatomy=holdout_pairs,
        seed=seed,
        preprocessed_pairs_per_anatomy=preprocessed_pairs,
        real_pairs=("all",) if real_pairs else tuple(real_pair or ()),
        real_pair_copies=real_pair_copies,
        realistic=realistic,
    )
    folder, split = synthesize_dataset(open_ms_data, out, plan, cache)
    training, names = len(set(split["train"])), len(split["train"])
    weighted = f" ({names} names in the split)" if training < names else ""
    typer.echo(f"{folder}: {training} training{weighted} and {len(split['val'])} hold-out pairs")


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
    network: Annotated[
        NetworkChoice,
        typer.Option(
            help="concatenation: both visits as two channels of one U-Net (the paper's); "
            "difference-weighting: one encoder for each visit, their features merged by their "
            "difference (Rokuss et al. 2024; --initial-weights may be a concatenation model's)."
        ),
    ] = NetworkChoice.concatenation,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Train one fold of a raw dataset with the paper's nnU-Net trainer.

    The dataset is planned and preprocessed once; cases added later are preprocessed with the
    same plans.

    Example: msnewlesions train --dataset raw/Dataset501_MSNewLesions --fold 0 --epochs 10
    """
    configure_logging(verbose, quiet)
    from msnewlesions.commands.train import train_dataset

    changes = {
        "epochs": epochs,
        "iterations_per_epoch": iterations,
        "validation_iterations": validation_iterations,
        "checkpoint_every": checkpoint_every,
        "anneal_epochs": anneal_epochs,
    }
    folder = train_dataset(
        dataset,
        fold,
        work,
        config.value,
        device.value,
        changes,
        learning_rate,
        initial_weights,
        resume,
        network.value,
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
    engine: EngineOption = EngineChoice.auto,
    tta: Annotated[bool, typer.Option("--tta", help="Mirroring test-time augmentation.")] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing output folder.")
    ] = False,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Segment preprocessed pairs with a trained model, as segment does.

    The model's folds are ensembled; the probability is zero outside the brain (where both inputs
    are zero); the model's threshold, minimum lesion size and minimum depth inside that brain
    apply.

    Example: msnewlesions predict --model my-model --input preprocessed/ --out masks/
    """
    configure_logging(verbose, quiet)
    from msnewlesions.commands.predict import predict_files

    masks = predict_files(model, input, out, folds, device.value, tta, overwrite, engine.value)
    typer.echo(f"predicted: {out} ({len(masks)} case(s))")


model_app = typer.Typer(
    help="Move trained models between machines; prepare them for the CPU engines.",
    no_args_is_help=True,
)
app.add_typer(model_app, name="model")


@model_app.command("export")
def model_export(
    model: Annotated[Path, typer.Option("--model", help="Trained nnU-Net model folder.")],
    out: Annotated[Path, typer.Option("--out", help="Zip file to write.")],
    keep_optimizer: Annotated[
        bool, typer.Option("--keep-optimizer", help="Keep the optimizer state (to resume).")
    ] = False,
) -> None:
    """Zip a model in nnU-Net's export layout (checkpoints without optimizer state).

    Example: msnewlesions model export --model my-model --out my-model.zip
    """
    from msnewlesions.model import nnunet

    nnunet.export_model(model, out, strip_optimizer=not keep_optimizer)
    typer.echo(f"exported: {out} ({out.stat().st_size / 1e6:.1f} MB)")


@model_app.command("import")
def model_import(
    zip_file: Annotated[Path, typer.Option("--zip", help="Model zip (ours or nnU-Net's).")],
    out: Annotated[Path, typer.Option("--out", help="Folder to unpack the model into.")],
) -> None:
    """Unpack a model zip; prints the model folder to pass to --model.

    Example: msnewlesions model import --zip my-model.zip --out models/
    """
    from msnewlesions.model import nnunet

    typer.echo(str(nnunet.import_model(zip_file, out)))


@model_app.command("prepare")
def model_prepare(
    model: Annotated[
        Path | None,
        typer.Option(help="Trained model folder or zip (default: the model shipped inside)."),
    ] = None,
    engine: EngineOption = EngineChoice.auto,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Export HD-BET and a model's networks for the CPU engines, ahead of the first run.

    segment does this itself on first use (a few seconds, once per model and machine); prepare
    does it in advance, e.g. when a container image is built. The graphs go to the cache folder:
    MSNEWLESIONS_ENGINE_CACHE, else ~/.cache/msnewlesions/engines.

    Example: msnewlesions model prepare --model my-model
    """
    configure_logging(verbose, quiet)
    from msnewlesions.commands.engines import prepare_engines

    graphs = prepare_engines(model, engine.value)
    if not graphs:
        typer.echo("nothing to prepare: the torch engine runs the checkpoints themselves")
    for graph in graphs:
        typer.echo(str(graph))
