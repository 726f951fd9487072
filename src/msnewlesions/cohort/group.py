"""The cohort at a glance: ``group/new_lesions.tsv`` (one row per pair) and ``group/report.html``.

Each row comes from the pair's own outputs (its summary) or its failure record, so the table
always agrees with the per-pair results; a pair with neither is ``not run``.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from msnewlesions.atomic import write_text_atomically
from msnewlesions.cohort.outputs import GROUP_FOLDER, PairOutputs, read_failure
from msnewlesions.cohort.pairs import natural_key


@dataclass(frozen=True)
class GroupRow:
    pair: str
    subject: str
    baseline_session: str
    followup_session: str
    days_apart: float | None
    new_lesion_count: int | None
    new_lesion_volume_mm3: float | None
    qc_warnings: str  # the QC warnings, "; "-separated
    status: str  # done, failed or not run
    reason: str  # why it failed
    report: str  # the pair's report, relative to the group folder
    reviewed_lesion_count: int | None = None  # after a reader's review (review apply), if any
    reviewed_lesion_volume_mm3: float | None = None

    @classmethod
    def of(cls, outputs: PairOutputs, group_folder: Path) -> GroupRow:
        pair = outputs.pair
        summary = outputs.summary() if outputs.is_complete() else None
        failure = None if summary is not None else read_failure(outputs.root, pair.key)
        status = "done" if summary is not None else "failed" if failure else "not run"
        report = os.path.relpath(outputs.report(), group_folder) if summary is not None else ""
        count = volume = None
        review = (summary or {}).get("review") or {}
        if summary is not None:
            count = int(summary["new_lesion_count"])
            volume = float(summary["new_lesion_volume_mm3"])
        return cls(
            pair=pair.key,
            subject=pair.subject,
            baseline_session=pair.baseline.session,
            followup_session=pair.followup.session,
            days_apart=pair.days_apart,
            new_lesion_count=count,
            new_lesion_volume_mm3=volume,
            qc_warnings="; ".join(summary.get("warnings", [])) if summary else "",
            status=status,
            reason=failure or "",
            report=report,
            reviewed_lesion_count=review.get("lesions_after"),
            reviewed_lesion_volume_mm3=review.get("total_volume_mm3_after"),
        )

    @property
    def needs_a_look(self) -> bool:
        return self.status != "done" or bool(self.qc_warnings) or bool(self.new_lesion_count)


COLUMNS = tuple(f.name for f in fields(GroupRow))


def group_rows(pairs: Sequence[PairOutputs], root: Path) -> list[GroupRow]:
    return [GroupRow.of(outputs, root / GROUP_FOLDER) for outputs in pairs]


def _cell(value: object) -> str:
    if value is None or value == "":
        return "n/a"
    if isinstance(value, float):
        return f"{value:.10g}"
    return " ".join(str(value).split()).replace("\t", " ")


def group_table(rows: Sequence[GroupRow]) -> str:
    """The rows as a BIDS-style TSV (``n/a`` for unknown)."""
    lines = ["\t".join(COLUMNS)]
    lines += ["\t".join(_cell(value) for value in asdict(row).values()) for row in rows]
    return "\n".join(lines) + "\n"


def write_group(rows: Sequence[GroupRow], root: Path, title: str) -> tuple[Path, Path]:
    """``group/new_lesions.tsv`` and ``group/report.html`` under ``root``."""
    folder = root / GROUP_FOLDER
    table, page = folder / "new_lesions.tsv", folder / "report.html"
    write_text_atomically(table, group_table(rows))
    write_text_atomically(page, render_group_report(rows, title))
    return table, page


# ------------------------------------------------------------------------------------ the page

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; font-size: 0.9em; }
td.number { text-align: right; }
tr.failed td { background: #fde2e2; } tr.warning td { background: #fff4d6; }
.subjects { display: flex; flex-wrap: wrap; gap: 1em; }
.subject { border: 1px solid #ddd; padding: 0.5em; }
.note { color: #555; }
"""


def subject_chart(rows: Sequence[GroupRow]) -> str:
    """One subject's follow-ups left to right: a bar per pair (new lesions), its volume above."""
    width, height, bar = 60 * max(len(rows), 1) + 40, 150, 30
    top = max([row.new_lesion_count or 0 for row in rows] + [1])
    parts = [f'<svg width="{width}" height="{height}" role="img">']
    parts.append(f'<line x1="30" y1="120" x2="{width - 5}" y2="120" stroke="#888"/>')
    for index, row in enumerate(rows):
        x = 40 + 60 * index
        label = html.escape(row.followup_session)
        parts.append(
            f'<text x="{x + bar / 2}" y="135" font-size="10" text-anchor="middle">{label}</text>'
        )
        if row.status != "done":
            parts.append(
                f'<text x="{x + bar / 2}" y="110" font-size="10" fill="#b00" '
                f'text-anchor="middle">{html.escape(row.status)}</text>'
            )
            continue
        count = row.new_lesion_count or 0
        size = 90 * count / top
        colour = "#c0392b" if count else "#7f8c8d"
        parts.append(
            f'<rect x="{x}" y="{120 - size:.1f}" width="{bar}" height="{size:.1f}" '
            f'fill="{colour}"><title>{count} new lesion(s)</title></rect>'
        )
        volume_ml = (row.new_lesion_volume_mm3 or 0) / 1000
        parts.append(
            f'<text x="{x + bar / 2}" y="{115 - size:.1f}" font-size="10" '
            f'text-anchor="middle">{count} · {volume_ml:.2f} ml</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _row_html(row: GroupRow) -> str:
    css = "failed" if row.status != "done" else "warning" if row.qc_warnings else ""
    link = f'<a href="{html.escape(row.report)}">report</a>' if row.report else ""
    days = "" if row.days_apart is None else f"{row.days_apart:g}"
    count = "" if row.new_lesion_count is None else str(row.new_lesion_count)
    volume = "" if row.new_lesion_volume_mm3 is None else f"{row.new_lesion_volume_mm3 / 1000:.2f}"
    cells = [
        html.escape(row.subject),
        html.escape(f"{row.baseline_session} → {row.followup_session}"),
        f'<td class="number">{days}</td>',
        f'<td class="number">{count}</td>',
        f'<td class="number">{volume}</td>',
        html.escape(row.status),
        html.escape(row.reason or row.qc_warnings),
        link,
    ]
    cells = [c if c.startswith("<td") else f"<td>{c}</td>" for c in cells]
    return f'<tr class="{css}">' + "".join(cells) + "</tr>"


def render_group_report(rows: Sequence[GroupRow], title: str) -> str:
    """The cohort page: totals, the pairs that need a look, each subject over time, every pair."""
    done = [r for r in rows if r.status == "done"]
    failed = [r for r in rows if r.status == "failed"]
    not_run = [r for r in rows if r.status == "not run"]
    with_lesions = [r for r in done if r.new_lesion_count]
    header = (
        "<tr><th>subject</th><th>sessions</th><th>days</th><th>new lesions</th>"
        "<th>volume (ml)</th><th>status</th><th>reason / QC warnings</th><th></th></tr>"
    )
    look = sorted(
        (r for r in rows if r.needs_a_look),
        key=lambda r: (r.status == "done", not r.qc_warnings, -(r.new_lesion_count or 0)),
    )
    subjects: dict[str, list[GroupRow]] = {}
    for row in rows:
        subjects.setdefault(row.subject, []).append(row)
    charts = "".join(
        f'<div class="subject"><b>{html.escape(subject)}</b><br>{subject_chart(subject_rows)}</div>'
        for subject, subject_rows in sorted(subjects.items(), key=lambda kv: natural_key(kv[0]))
    )
    look_table = (
        f"<table>{header}{''.join(_row_html(r) for r in look)}</table>"
        if look
        else "<p>None: every pair ran, without QC warnings or new lesions.</p>"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{len(rows)} pair(s) of {len(subjects)} subject(s): {len(done)} done, {len(failed)} failed,
{len(not_run)} not run. {len(with_lesions)} pair(s) with new lesions,
{sum(r.new_lesion_count or 0 for r in done)} new lesion(s) in all.</p>
<p class="note">Diagnostic support only: every result needs an expert's review on its pair's
report.</p>
<h2>Pairs that need a look</h2>
<p class="note">Failed or not run first, then QC warnings, then pairs with new lesions.</p>
{look_table}
<h2>Each subject over time</h2>
<p class="note">New lesions at each follow-up (bars) and their volume.</p>
<div class="subjects">{charts}</div>
<h2>Every pair</h2>
<table>{header}{"".join(_row_html(r) for r in rows)}</table>
</body></html>
"""
