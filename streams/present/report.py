"""``socialroi report``: the per-campaign board report, as a terminal table, CSV or JSON;
the whole board report as one HTML page or one JSON document (:data:`DOCUMENT_FORMATS`).

The numbers come from :func:`sinks.views.campaign_report` (ratios of the period's sums, NULL
when a denominator is 0) and, for the whole report, from ``sinks.report.build_report``; this
module only formats them. CSV and JSON carry the same values
at full precision (JSON numbers, CSV ``repr`` of floats, empty cell for NULL); the table
rounds for reading: money to 2 decimals, rates as percentages, ratios to 2 decimals.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any, Final

import orjson

from pipeline.kpi import CATALOGUE

__all__ = [
    "DOCUMENT_FORMATS",
    "FORMATS",
    "render",
    "render_document",
]

FORMATS: Final = ("table", "csv", "json")
"""Formats of the per-campaign table (one row per campaign, :data:`REPORT_COLUMNS`)."""
DOCUMENT_FORMATS: Final = ("html", "report-json")
"""Formats of the whole report: a self-contained HTML page, or the JSON document it shows."""

# Table formats by the KPI catalogue's units.
_MONEY = frozenset(k.column for k in CATALOGUE if k.unit in ("micros", "money", "credit"))
_PERCENT = frozenset(k.column for k in CATALOGUE if k.unit in ("share", "roi"))
_HEADERS: Final = {
    "campaign_id": "campaign",
    "net_follower_growth": "net followers",
    "service_resolved": "service resolved",
    "service_savings": "service savings",
    "engagement_rate": "engagement",
    "conversion_rate": "conv. rate",
    "cost_per_engagement": "cost/eng.",
}


def render(
    rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: str, title: str = ""
) -> str:
    """``rows`` (dicts with ``columns``) as text in format ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "json":
        return orjson.dumps(
            [{name: row[name] for name in columns} for row in rows], option=orjson.OPT_INDENT_2
        ).decode()
    if fmt == "csv":
        return _csv(rows, columns)
    if fmt == "table":
        return _table(rows, columns, title)
    raise ValueError(f"unknown format {fmt!r}")


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back as the same double
    return str(value)


def _csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(row[name]) for name in columns])
    return out.getvalue()


def _cell(name: str, value: Any) -> str:
    if value is None:
        return "-"
    if name in _PERCENT:
        return f"{value * 100:.2f}%"
    if name in _MONEY:
        return f"{value:,.2f}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value) if value != "" else "(none)"


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title or None, show_lines=False)
    for name in columns:
        table.add_column(_HEADERS.get(name, name.replace("_", " ")), justify=_justify(name))
    for row in rows:
        table.add_row(*(_cell(name, row[name]) for name in columns))
    # Its natural width, never cut: the CLI chooses columns that fit the terminal.
    console = Console(file=io.StringIO(), width=10_000, record=True)
    console.print(table)
    return console.export_text()


def _justify(name: str) -> Any:
    return "left" if name == "campaign_id" else "right"


def render_document(document: dict[str, Any], fmt: str) -> str:
    """The whole report (``sinks.report.build_report``) in ``fmt``, one of
    :data:`DOCUMENT_FORMATS`; ``report-json`` is the document as is (NULL ratios ``null``)."""
    if fmt == "report-json":
        return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode()
    if fmt == "html":
        from streams.present.html_report import render_html

        return render_html(document)
    raise ValueError(f"unknown format {fmt!r}")
