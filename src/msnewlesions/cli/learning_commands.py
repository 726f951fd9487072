"""Commands that learn from data: ``review apply`` (a reader's review -> reviewed outputs),
``finetune`` (reviewed pairs -> a model) and ``crossval`` (the paper's experiment)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from msnewlesions.cli.app import (
    ConfigChoice,
    DeviceChoice,
    Quiet,
    Verbose,
    app,
    configure_logging,
)


@app.command()
def finetune(
    manifest: Annotated[
        Path,
        typer.Argument(
            help="CSV with columns id,baseline,followup,new_lesions: batch's manifest with the "
            "reference mask of each pair's new lesions on its follow-up's grid (review apply's "
            "new_lesions_reviewed.nii.gz, or an expert's mask); or a BIDS derivatives dataset "
            "of bids whose pairs were reviewed (review apply on their reports)."
        ),
    ],
    out: Annotated[Path, typer.Argument(help="The model folder to write.")],
    model: Annotated[
        Path | None,
        typer.Option(help="The model to fine-tune (default: the shipped model)."),
    ] = None,
    device: Annotated[DeviceChoice, typer.Option(help="Where to train.")] = DeviceChoice.cpu,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs of each training.")] = 4,
    iterations: Annotated[int, typer.Option(min=1, help="Iterations per epoch.")] = 150,
    learning_rate: Annotated[float, typer.Option(min=1e-6, help="Initial learning rate.")] = 0.002,
    synthetic_pairs: Annotated[
        int,
        typer.Option(
            min=1,
            help="Synthetic pairs drawn on each reviewed pair's baseline and trained with it.",
        ),
    ] = 8,
    work: Annotated[
        Path | None,
        typer.Option(help="The run's work folder, kept for resuming (default: OUT.work)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing OUT.")] = False,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Fine-tune a model on reviewed pairs and write a model folder that segment --model takes.

    Each pair is trained on with synthetic pairs drawn on its own baseline. With several
    patients, a model is first fine-tuned without each patient (fewer than 10 patients; with
    more, without a fifth of them) and scored, beside the base model, on the pairs it did not
    see; the operating point is chosen on those scores. The final model then trains on every
    pair. Run the same command again after an interruption: it goes on from the last epoch.

    Example: msnewlesions finetune reviewed.csv my-model (then: segment --model my-model ...)
    """
    configure_logging(verbose, quiet)
    from msnewlesions.commands.finetune import finetune_model

    result = finetune_model(
        manifest,
        out,
        model=model,
        device=device.value,
        epochs=epochs,
        iterations=iterations,
        learning_rate=learning_rate,
        synthetic_pairs=synthetic_pairs,
        work=work,
        overwrite=overwrite,
    )
    typer.echo(result.summary())


review_app = typer.Typer(help="A reader's review of a segmentation.", no_args_is_help=True)
app.add_typer(review_app, name="review")


class UndecidedChoice(str, Enum):
    drop = "drop"
    keep = "keep"


@review_app.command("apply")
def review_apply(
    out: Annotated[Path, typer.Argument(help="The segment output folder that was reviewed.")],
    review: Annotated[Path, typer.Argument(help="The review.json saved from its report.html.")],
    undecided: Annotated[
        UndecidedChoice,
        typer.Option(
            help="Lesions the reader left undecided: drop them from the reviewed mask, or keep "
            "them (default: drop; the reviewed mask holds what the reader accepted)."
        ),
    ] = UndecidedChoice.drop,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Apply a review saved from the report: write the reviewed mask and lesion table.

    Writes new_lesions_reviewed.nii.gz (the follow-up's grid) and lesions_reviewed.csv into OUT
    and records the review in summary.json, with the counts before and after. A review saved for
    another pair is refused.

    Example: msnewlesions review apply results/patient01 ~/Downloads/review.json
    """
    configure_logging(verbose, quiet)
    from msnewlesions.commands.review import apply_review

    record = apply_review(out, review, undecided.value)
    typer.echo(
        f"{out}: {record['lesions_before']} lesion(s) before the review, "
        f"{record['lesions_after']} after ({record['confirmed']} confirmed, "
        f"{record['rejected']} rejected, {record['undecided']} undecided ({undecided.value}), "
        f"{record['added_voxels']} voxels added, {record['erased_voxels']} erased); "
        "new_lesions_reviewed.nii.gz written"
    )


class LayoutChoice(str, Enum):
    auto = "auto"
    msseg2 = "msseg2"
    open_ms_data = "open_ms_data"
    bids = "bids"
    nnunet = "nnunet"


@app.command()
def crossval(
    dataset: Annotated[
        Path,
        typer.Argument(
            help="The data: an MSSEG-2, open_ms_data or BIDS folder (as dataset reads them), or "
            "an nnU-Net raw dataset of preprocessed pairs (imagesTr, labelsTr, dataset.json)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="The run's folder (created or resumed).")],
    folds: Annotated[int, typer.Option(min=2, help="Patient-level folds.")] = 5,
    test_fraction: Annotated[
        float, typer.Option(help="Share of the patients held out as the test split.")
    ] = 0.2,
    layout: Annotated[
        LayoutChoice, typer.Option(help="The data's layout (default: found from its files).")
    ] = LayoutChoice.auto,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs per fold (the paper's: 300).")] = 300,
    iterations: Annotated[
        int, typer.Option(min=1, help="Iterations per epoch (the paper's: 250).")
    ] = 250,
    validation_iterations: Annotated[
        int, typer.Option(min=1, help="Validation batches per epoch (nnU-Net's: 50).")
    ] = 50,
    checkpoint_every: Annotated[
        int, typer.Option(min=1, help="Epochs between checkpoints (the paper's: 25).")
    ] = 25,
    config: Annotated[
        ConfigChoice, typer.Option(help="cpu plans (small U-Net) or the paper's (for a GPU).")
    ] = ConfigChoice.cpu,
    device: Annotated[DeviceChoice, typer.Option(help="Where to train.")] = DeviceChoice.cpu,
    dataset_id: Annotated[int, typer.Option("--id", help="nnU-Net dataset number.")] = 600,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """The paper's cross-validation: train each fold, then Tables 1 and 2.

    Holds out a test split of patients, trains each patient-level fold of the rest with the
    paper's trainer, scores each fold on its validation cases (Table 1) and the folds' ensemble
    on the test split (Table 2: Dice, recall, lesion F1, false lesions; a case without new
    lesions scores 1 when nothing is marked). Writes OUT/table1_validation.tsv and .md,
    OUT/table2_test.tsv and .md, OUT/crossval.png and OUT/results.json. Run it again to resume.

    Example: msnewlesions crossval msseg2_training --out runs/crossval --config paper --device cuda
    """
    configure_logging(verbose, quiet)
    from msnewlesions.crossvalidation import CrossValidationOptions, crossvalidate
    from msnewlesions.crossvalidation_tables import as_markdown, table2

    options = CrossValidationOptions(
        folds=folds,
        test_fraction=test_fraction,
        layout=layout.value,
        config=config.value,
        device=device.value,
        epochs=epochs,
        iterations_per_epoch=iterations,
        validation_iterations=validation_iterations,
        checkpoint_every=checkpoint_every,
        dataset_id=dataset_id,
    )
    record = crossvalidate(dataset, out, options)
    typer.echo((out / "table1_validation.md").read_text(encoding="utf-8"))
    typer.echo(as_markdown(table2(record)))
