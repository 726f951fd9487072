"""The cross-validation's tables, as the paper prints them, in TSV and Markdown, with a figure.

* Table 1 (``table1_validation.tsv`` / ``.md``): each fold's validation cases, Dice, recall and
  lesion F1 as mean +/- std over its cases;
* Table 2 (``table2_test.tsv`` / ``.md``): every test case's Dice, recall, lesion F1 and false
  lesions, and the ``All`` row: mean +/- std;
* ``crossval.png``: Dice of each fold's validation cases and of the test cases, as box plots.

Means and standard deviations (sample, n - 1) are over the cases where the metric exists: Dice
and recall everywhere (a case without new lesions scores 1 or 0, as the paper counts it), lesion
F1 only where the case has new lesions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from msnewlesions.atomic import atomic_file, write_text_atomically
from msnewlesions.evaluation import box_plot


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    present = np.array([v for v in values if v is not None], dtype=float)
    if present.size == 0:
        return None, None
    return float(present.mean()), (float(present.std(ddof=1)) if present.size > 1 else None)


def _cell(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.2f} +/- {std:.2f}" if std is not None else f"{mean:.2f}"


def _value(value: float | int | None) -> str:
    if value is None:
        return "n/a"
    return str(value) if isinstance(value, int) else f"{value:.2f}"


def table1(record: dict[str, Any]) -> list[list[str]]:
    rows = [["fold", "training cases", "validation cases", "Dice", "recall", "lesion F1"]]
    for fold in record["validation"]:
        cases = fold["cases"]
        rows.append(
            [str(fold["fold"]), str(fold["train"]), str(len(cases))]
            + [_cell(*mean_std([c[m] for c in cases])) for m in ("dice", "recall", "lesion_f1")]
        )
    every = [c for fold in record["validation"] for c in fold["cases"]]
    rows.append(
        ["all", "", str(len(every))]
        + [_cell(*mean_std([c[m] for c in every])) for m in ("dice", "recall", "lesion_f1")]
    )
    return rows


def table2(record: dict[str, Any]) -> list[list[str]]:
    metrics = ("dice", "recall", "lesion_f1", "false_lesions")
    rows = [["case", "Dice", "recall", "lesion F1", "false lesions", "new lesions"]]
    for case in record["test"]:
        rows.append([case["case"], *(_value(case[m]) for m in metrics), str(case["n_ref_lesions"])])
    rows.append(
        ["All"]
        + [_cell(*mean_std([c[m] for c in record["test"]])) for m in metrics]
        + [str(sum(c["n_ref_lesions"] for c in record["test"]))]
    )
    return rows


def as_tsv(rows: list[list[str]]) -> str:
    return "\n".join("\t".join(row) for row in rows) + "\n"


def as_markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + " --- |" * len(rows[0])]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines) + "\n"


def _figure(record: dict[str, Any], path: Path) -> None:
    groups = [(f"fold {f['fold']}", [c["dice"] for c in f["cases"]]) for f in record["validation"]]
    groups.append(("test (ensemble)", [c["dice"] for c in record["test"]]))
    box_plot(
        groups,
        path,
        "validation per fold, and the test split",
        size=(1.3 * len(groups) + 2, 4),
        ylabel="Dice (new lesions)",
    )


def write_tables(record: dict[str, Any], run: Path) -> list[Path]:
    """Tables 1 and 2 (TSV, Markdown) and the figure into ``run``; return their paths."""
    written = []
    for name, rows in (("table1_validation", table1(record)), ("table2_test", table2(record))):
        for suffix, text in ((".tsv", as_tsv(rows)), (".md", as_markdown(rows))):
            write_text_atomically(run / f"{name}{suffix}", text)
            written.append(run / f"{name}{suffix}")
    with atomic_file(run / "crossval.png") as temporary:
        _figure(record, temporary)
    return [*written, run / "crossval.png"]
