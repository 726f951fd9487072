"""``msnewlesions evaluate``: metrics of predicted against reference new-lesion masks.

Two NIfTI files, or two folders whose NIfTI files are matched by name. Each case's metrics come
from :mod:`msnewlesions.metrics`; the summary gives the mean and the sample standard deviation
(ddof = 1, as the paper's Table 2: its 0.58 +/- 0.35 is reproduced only so) of dice, recall,
lesion_sensitivity, lesion_ppv and lesion_f1 (cases whose value is null are skipped), and, over the
cases with an empty reference, the mean number and volume of false-positive lesions (what MSSEG-2
reports for patients without new lesions).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from msnewlesions.atomic import atomic_file, write_json_atomically
from msnewlesions.errors import MSNewLesionsError
from msnewlesions.lesions import MIN_LESION_MM3
from msnewlesions.metrics import CaseMetrics, case_metrics

logger = logging.getLogger(__name__)

SUMMARY_METRICS = ("dice", "recall", "lesion_sensitivity", "lesion_ppv", "lesion_f1")
TABLE_COLUMNS = (("Dice", "dice"), ("Recall", "recall"), ("Lesion F1", "lesion_f1"))


@dataclass(frozen=True)
class CasePair:
    case: str
    prediction: Path
    reference: Path


@dataclass(frozen=True)
class CaseResult:
    """One case's name and metrics."""

    case: str
    metrics: CaseMetrics

    def as_dict(self) -> dict[str, Any]:
        return {"case": self.case, **self.metrics.as_dict()}


@dataclass(frozen=True)
class EvaluationResult:
    """Every case's metrics and their summary (:func:`summarize`)."""

    cases: list[CaseResult]
    summary: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """The DESIGN.md contract: ``{"cases": [...], "summary": {...}}``."""
        return {"cases": [case.as_dict() for case in self.cases], "summary": self.summary}


def case_name(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _nifti_files(folder: Path) -> dict[str, Path]:
    return {
        case_name(p): p
        for p in sorted(folder.iterdir())
        if p.is_file() and (p.name.endswith(".nii.gz") or p.name.endswith(".nii"))
    }


def match_cases(prediction: str | Path, reference: str | Path) -> list[CasePair]:
    """Pair two files, or the NIfTI files of two folders by name (every file must have a match)."""
    prediction, reference = Path(prediction), Path(reference)
    for path, role in ((prediction, "prediction"), (reference, "reference")):
        if not path.exists():
            raise MSNewLesionsError(f"the {role} {path} does not exist.")
    if prediction.is_dir() != reference.is_dir():
        raise MSNewLesionsError("give two files or two folders, not one of each.")
    if not prediction.is_dir():
        return [CasePair(case_name(reference), prediction, reference)]
    predicted, expected = _nifti_files(prediction), _nifti_files(reference)
    missing = sorted(set(expected) - set(predicted))
    extra = sorted(set(predicted) - set(expected))
    if missing:
        raise MSNewLesionsError(
            f"no prediction for {len(missing)} reference case(s) in {prediction}: "
            + ", ".join(missing[:5])
            + (" ..." if len(missing) > 5 else "")
        )
    if extra:
        raise MSNewLesionsError(
            f"{len(extra)} prediction(s) have no reference in {reference}: "
            + ", ".join(extra[:5])
            + (" ..." if len(extra) > 5 else "")
        )
    if not expected:
        raise MSNewLesionsError(f"{reference} holds no NIfTI file.")
    return [CasePair(case, predicted[case], expected[case]) for case in sorted(expected)]


def _read_mask(path: Path, label: int | None) -> tuple[np.ndarray, np.ndarray]:
    try:
        image: Any = nib.load(str(path))
        array = np.asanyarray(image.dataobj)
    except Exception as error:
        raise MSNewLesionsError(f"{path} is not a readable NIfTI image ({error}).") from error
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise MSNewLesionsError(f"{path} has shape {array.shape}; a 3-D mask is expected.")
    if label is not None:
        return array == label, image.affine
    if np.any((array != 0) & (array != 1)):
        values = np.unique(array)
        shown = ", ".join(f"{v:g}" for v in values[:6]) + (" ..." if len(values) > 6 else "")
        raise MSNewLesionsError(
            f"{path} is not a binary mask (values {shown}); choose one label with --label N."
        )
    return array.astype(bool), image.affine


def evaluate_case(
    pair: CasePair, min_lesion_mm3: float = MIN_LESION_MM3, label: int | None = None
) -> CaseResult:
    """The metrics of one case."""
    prediction, prediction_affine = _read_mask(pair.prediction, label)
    reference, reference_affine = _read_mask(pair.reference, label)
    if prediction.shape != reference.shape:
        raise MSNewLesionsError(
            f"case {pair.case}: the prediction has shape {prediction.shape} and the reference "
            f"{reference.shape}; both must be on the same grid."
        )
    if not np.allclose(prediction_affine, reference_affine, atol=1e-3):
        raise MSNewLesionsError(
            f"case {pair.case}: the prediction and the reference have different affines "
            "(voxel-to-world geometry); both must be on the same grid."
        )
    voxel_mm3 = float(abs(np.linalg.det(reference_affine[:3, :3])))
    return CaseResult(pair.case, case_metrics(prediction, reference, voxel_mm3, min_lesion_mm3))


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if len(array) > 1 else None
    return float(array.mean()), std


def summarize(results: Sequence[CaseResult]) -> dict[str, Any]:
    """Means and sample standard deviations, and the false positives of empty cases."""
    cases = [result.metrics.as_dict() for result in results]
    summary: dict[str, Any] = {"n_cases": len(cases)}
    for metric in SUMMARY_METRICS:
        values = [float(v) for case in cases if (v := case[metric]) is not None]
        summary[f"{metric}_mean"], summary[f"{metric}_std"] = _mean_std(values)
    empty = [case for case in cases if case["n_ref_lesions"] == 0]
    summary["n_cases_without_new_lesions"] = len(empty)
    summary["false_positive_lesions_mean_without_new_lesions"] = (
        float(np.mean([c["n_pred_lesions"] for c in empty])) if empty else None
    )
    summary["false_positive_volume_mm3_mean_without_new_lesions"] = (
        float(np.mean([c["pred_lesion_volume_mm3"] for c in empty])) if empty else None
    )
    return summary


def evaluate(
    prediction: str | Path,
    reference: str | Path,
    min_lesion_mm3: float = MIN_LESION_MM3,
    label: int | None = None,
    jobs: int = 1,
) -> EvaluationResult:
    """The metrics of two files or two folders of masks, case by case and summarized."""
    pairs = match_cases(prediction, reference)
    logger.info("evaluating %d case(s)", len(pairs))
    if jobs > 1 and len(pairs) > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            cases = list(
                pool.map(
                    evaluate_case,
                    pairs,
                    [min_lesion_mm3] * len(pairs),
                    [label] * len(pairs),
                    chunksize=max(1, len(pairs) // (4 * jobs)),
                )
            )
    else:
        cases = [evaluate_case(pair, min_lesion_mm3, label) for pair in pairs]
    return EvaluationResult(cases, summarize(cases))


def _format(value: float | None) -> str:
    return "  -  " if value is None else f"{value:.2f}"


def format_table(result: EvaluationResult) -> str:
    """Per-case table ending with an 'All  mean+/-std' row, as the paper's Table 2."""
    cases = [case.as_dict() for case in result.cases]
    width = max([len("Case"), *(len(c["case"]) for c in cases)])
    header = f"{'Case':<{width}}  " + "  ".join(f"{title:>11}" for title, _ in TABLE_COLUMNS)
    lines = [header]
    for case in cases:
        cells = "  ".join(f"{_format(case[key]):>11}" for _, key in TABLE_COLUMNS)
        lines.append(f"{case['case']:<{width}}  {cells}")
    summary = result.summary
    totals = []
    for _, key in TABLE_COLUMNS:
        mean, std = summary[f"{key}_mean"], summary[f"{key}_std"]
        totals.append(f"{_format(mean)}+/-{_format(std)}" if mean is not None else "-")
    lines.append(f"{'All':<{width}}  " + "  ".join(f"{cell:>11}" for cell in totals))
    return "\n".join(lines)


def box_plot(
    groups: Sequence[tuple[str, Sequence[float]]],
    path: Path,
    title: str,
    size: tuple[float, float] = (5, 4),
    ylabel: str = "",
) -> None:
    """Box plots of values between 0 and 1, one per named group, each value a jittered dot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(figure)
    axis = figure.add_subplot()
    axis.boxplot([list(values) or [np.nan] for _, values in groups], showmeans=True)
    axis.set_xticks(range(1, len(groups) + 1), [name for name, _ in groups])
    for position, (_, values) in enumerate(groups, start=1):
        jitter = np.random.default_rng(position).uniform(-0.08, 0.08, len(values))
        axis.scatter(position + jitter, values, s=10, alpha=0.6, color="black")
    axis.set_ylim(-0.05, 1.05)
    if ylabel:
        axis.set_ylabel(ylabel)
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, format="png")


def _write_box_plot(result: EvaluationResult, path: Path) -> None:
    cases = [case.as_dict() for case in result.cases]
    columns = [
        (title, [c[key] for c in cases if c[key] is not None]) for title, key in TABLE_COLUMNS
    ]
    box_plot(columns, path, f"{result.summary['n_cases']} case(s)")


def write_results(
    result: EvaluationResult, json_path: str | Path, csv_path: str | Path | None = None
) -> Path:
    """Write the JSON, an optional CSV (one row per case) and the box plot beside the JSON."""
    json_path = Path(json_path)
    write_json_atomically(json_path, result.as_dict())
    if csv_path is not None:
        rows = [case.as_dict() for case in result.cases]
        with atomic_file(csv_path) as temporary, temporary.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    plot_path = json_path.with_suffix(".png")
    with atomic_file(plot_path) as temporary:
        _write_box_plot(result, temporary)
    return plot_path


def evaluate_files(
    prediction: str | Path,
    reference: str | Path,
    out: str | Path,
    csv_path: str | Path | None = None,
    min_lesion_mm3: float = MIN_LESION_MM3,
    label: int | None = None,
    jobs: int = 1,
    overwrite: bool = False,
) -> tuple[EvaluationResult, Path]:
    """``evaluate``, then :func:`write_results`; existing outputs are kept unless ``overwrite``.

    Returns the result and the box plot's path.
    """
    out = Path(out)
    outputs = [out, out.with_suffix(".png"), *([Path(csv_path)] if csv_path else [])]
    existing = [str(path) for path in outputs if path.exists()]
    if existing and not overwrite:
        raise MSNewLesionsError(
            f"{', '.join(existing)} already exist(s); choose another output or pass --overwrite."
        )
    result = evaluate(prediction, reference, min_lesion_mm3=min_lesion_mm3, label=label, jobs=jobs)
    return result, write_results(result, out, csv_path)
