"""Commands on one pair of scans: ``preprocess``, ``segment``, ``evaluate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from msnewlesions.cli.app import (
    DeviceChoice,
    EngineChoice,
    EngineOption,
    PrecisionChoice,
    PrecisionOption,
    Quiet,
    SendTo,
    SkullstripChoice,
    SkullStripped,
    SkullStrippedChoice,
    Verbose,
    app,
    configure_logging,
    segment_options,
)
from msnewlesions.errors import MSNewLesionsError


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
    precision: PrecisionOption = PrecisionChoice.auto,
    engine: EngineOption = EngineChoice.auto,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing output folder.")
    ] = False,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Preprocess a pair as the paper does: registration to MNI152, skull stripping, N4, z-score.

    Rigid registration with the skull, HD-BET (unless the scans are already brain-extracted), N4
    bias correction, a crop to the brain and a z-score.

    Writes baseline_mni.nii.gz, followup_mni.nii.gz, brainmask_mni.nii.gz, baseline_to_mni.tfm,
    followup_to_mni.tfm (ITK files mapping MNI points to each native image) and qc.json.

    Example: msnewlesions preprocess --baseline visit1.nii.gz --followup visit2.nii.gz --out pre/
    """
    configure_logging(verbose, quiet)
    from msnewlesions.preprocessing.pipeline import PreprocessOptions, preprocess_files

    options = PreprocessOptions(
        skullstrip_mode=skullstrip.value,
        device=device.value,
        skull_stripped=skull_stripped.as_option(),
        precision=precision.value,
        engine=engine.value,
    )
    pair = preprocess_files(baseline, followup, out, options, overwrite=overwrite)
    qc = pair.qc
    typer.echo(
        f"{out}: brain {qc.brain_volume_ml:.0f} ml, timepoints correlate "
        f"{qc.timepoint_correlation_in_brain:.2f} in the brain, {qc.seconds_total:.0f} s"
    )
    for warning in qc.warnings:
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

    Example: msnewlesions evaluate --pred result/new_lesions.nii.gz --ref truth.nii.gz --out m.json
    """
    configure_logging(verbose, quiet)
    from msnewlesions.evaluation import evaluate_files, format_table

    result, plot = evaluate_files(pred, ref, out, csv, min_lesion_mm3, label, jobs, overwrite)
    if table:
        typer.echo(format_table(result))
    summary = result.summary
    dice_text = "n/a" if summary["dice_mean"] is None else f"{summary['dice_mean']:.3f}"
    typer.echo(f"{summary['n_cases']} case(s), mean Dice {dice_text}: {out} ({plot.name})")


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
    precision: PrecisionOption = PrecisionChoice.auto,
    engine: EngineOption = EngineChoice.auto,
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
    min_depth_mm: Annotated[
        float | None,
        typer.Option(
            help="Lesions that reach less deep inside the brain (mm; the brain mask without the "
            "fluid at its surface) are dropped (default: the model's own, else none; 0 turns it "
            "off)."
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
    dicom_out: Annotated[
        bool,
        typer.Option(
            "--dicom-out/--no-dicom-out",
            help="When the follow-up is a DICOM series, also write new_lesions.seg.dcm: a DICOM "
            "Segmentation on its frames, one segment per lesion (default: on).",
        ),
    ] = True,
    send_to: SendTo = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing output.")
    ] = False,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Find the new lesions of the follow-up: the mask on the follow-up's own grid and more.

    --out DIR writes new_lesions.nii.gz (on the follow-up's grid), new_lesions_mni.nii.gz,
    lesions.csv, summary.json and report.html; -t1 B -t2 F -o mask.nii.gz writes just the mask.
    When the follow-up is a DICOM series, also new_lesions.seg.dcm and new_lesions.sr.dcm.

    Example: msnewlesions segment --baseline visit1.nii.gz --followup visit2.nii.gz --out result/
    """
    configure_logging(verbose, quiet)
    from msnewlesions.commands.segment import segment_files

    if baseline is None or followup is None:
        raise MSNewLesionsError("give both scans: --baseline B --followup F (or -t1 B -t2 F).")
    destination = out if mask is None else mask
    if destination is None or (out is not None and mask is not None):
        raise MSNewLesionsError("give exactly one of --out DIR and -o MASK.")
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
    result = segment_files(
        baseline,
        followup,
        destination,
        model,
        options,
        device.value,
        tta,
        overwrite,
        mask_only=mask is not None,
        dicom_out=dicom_out,
        send_to=send_to,
    )
    volume = result.total_volume_mm3
    typer.echo(f"{destination}: {len(result.lesions)} new lesion(s), {volume:.0f} mm3")
