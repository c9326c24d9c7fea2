"""What the board report's page (``streams.present.html_report``) is made of: number and day
formats, tables that carry each figure's exact value in ``data-value``, and the page
shell (inline CSS, the ten-line check script, the template)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from html import escape
from typing import Any, Final

import orjson

from streams.present.charts import NEGATIVE, POSITIVE

__all__ = [
    "CSS",
    "DASH",
    "MODELS",
    "PAGE",
    "SCRIPT",
    "Column",
    "Fmt",
    "campaign",
    "day_label",
    "integer",
    "label",
    "long_day",
    "marked",
    "number",
    "open_days",
    "open_note",
    "pct",
    "signed_integer",
    "table",
    "times",
]

DASH: Final = "\u2013"
_SYMBOLS: Final = {"EUR": "€", "USD": "$", "GBP": "£", "JPY": "¥", "CHF": "CHF "}
MODELS: Final = {
    "last_touch": "last touch (the last social touchpoint before a purchase gets all the credit)",
    "first_touch": "first touch (the first social touchpoint gets all the credit)",
    "linear": "linear (every touchpoint before a purchase gets an equal share)",
    "time_decay": "time decay (touchpoints closer to the purchase get more credit)",
    "position_based": "position based (40% first, 40% last, 20% shared by the middle)",
}


def campaign(cid: str) -> str:
    return cid if cid else "(no campaign)"


def label(row: dict[str, Any]) -> str:
    """A campaign as people call it: its declared name, and its id when that differs."""
    cid, name = row["campaign_id"], row.get("campaign_name") or ""
    return f"{name} ({cid})" if name and name != cid else campaign(cid)


class Fmt:
    """Number formats in the report's currency."""

    def __init__(self, currency: str) -> None:
        self.currency = currency
        self.symbol = _SYMBOLS.get(currency, currency + " ")

    def money(self, v: float | None) -> str:
        if v is None:
            return DASH
        sign = "\u2212" if v < 0 else ""
        return f"{sign}{self.symbol}{abs(v):,.2f}"

    def money_short(self, v: float | None) -> str:
        if v is None:
            return DASH
        sign = "\u2212" if v < 0 else ""
        a = abs(v)
        for limit, suffix in ((1e9, "bn"), (1e6, "M"), (1e3, "k")):
            if a >= limit:
                return f"{sign}{self.symbol}{a / limit:,.1f}{suffix}"
        return f"{sign}{self.symbol}{a:,.0f}"

    def axis_money(self, v: float) -> str:
        return self.money_short(v)


def pct(v: float | None, digits: int = 1, signed: bool = False) -> str:
    if v is None:
        return DASH
    text = f"{abs(v) * 100:,.{digits}f}%"
    if v < 0:
        return "\u2212" + text
    return ("+" + text) if signed and v > 0 else text


def times(v: float | None) -> str:
    return DASH if v is None else f"{v:,.2f}\u00d7"


def integer(v: int | None) -> str:
    if v is None:
        return DASH
    return f"\u2212{abs(v):,}" if v < 0 else f"{v:,}"


def signed_integer(v: int | None) -> str:
    if v is None:
        return DASH
    return f"+{v:,}" if v > 0 else integer(v)


def number(v: float | None, digits: int = 2) -> str:
    if v is None:
        return DASH
    return f"\u2212{abs(v):,.{digits}f}" if v < 0 else f"{v:,.{digits}f}"


def day_label(day: str) -> str:
    d = date.fromisoformat(day)
    return f"{d.day} {d.strftime('%b')}"


def open_days(doc: dict[str, Any]) -> set[str]:
    """Days whose windows are still open somewhere in the report (``is_final`` false)."""
    days = set(doc["summary"]["provisional_days"])
    days |= {d["day"] for d in doc["social_traffic"] if not d["is_final"]}
    days |= {d["day"] for d in doc["daily"] if not d["is_final"]}
    return days | {r["day"] for r in doc["followers"] if not r.get("is_final", True)}


def marked(day: str, open_days: set[str]) -> str:
    """A day's axis label, with an asterisk while it is provisional."""
    return day_label(day) + ("*" if day in open_days else "")


def open_note(days: list[str], open_days: set[str]) -> str:
    shown = [d for d in days if d in open_days]
    if not shown:
        return ""
    names = ", ".join(day_label(d) for d in shown)
    return (
        f'<p class="provisional-note">* Provisional: {names} '
        f"{'is' if len(shown) == 1 else 'are'} still open, so late data may still change "
        "the figures (hollow points, pale bars, rows marked provisional).</p>"
    )


def long_day(day: str | None) -> str:
    if day is None:
        return "the first stored day"
    d = date.fromisoformat(day)
    return f"{d.day} {d.strftime('%B %Y')}"


# -- tables --------------------------------------------------------------------------------

Column = tuple[str, str, Callable[[Any], str]]  # (key, header, format)


def table(
    table_id: str,
    rows: Sequence[dict[str, Any]],
    columns: Sequence[Column],
    key: str | None = None,
    total: dict[str, Any] | None = None,
) -> str:
    head = "".join(
        f'<th class="{"text" if i == 0 else "num"}">{escape(h)}</th>'
        for i, (_, h, _) in enumerate(columns)
    )
    body = []
    for row in [*rows, *([total] if total is not None else [])]:
        is_total = row is total
        attrs = ' class="total"' if is_total else ""
        if key is not None and not is_total:
            attrs += f' data-key="{escape(str(row[key]))}"'
        cells = []
        for i, (name, _, fmt) in enumerate(columns):
            value = row.get(name)
            text = fmt(value)
            raw = escape(orjson.dumps(value).decode(), quote=True)
            cls = "text" if i == 0 else "num"
            if value is None and text == DASH:
                text = f'{DASH}<sup class="fn">*</sup>'
            else:
                text = escape(text)
            cells.append(f'<td class="{cls}" data-col="{name}" data-value="{raw}">{text}</td>')
        body.append(f"<tr{attrs}>{''.join(cells)}</tr>")
    return (
        f'<table id="{table_id}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


# -- the page shell ----------------------------------------------------------------------

CSS: Final = (
    """
:root { --ink:#1d2939; --muted:#5b6472; --line:#e4e7ec; --bg:#f6f7f9; --brand:#1f4e79;
  --good:"""
    + POSITIVE
    + """; --bad:"""
    + NEGATIVE
    + """; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; }
header { background:var(--brand); color:#fff; padding:28px 48px 22px; }
header h1 { margin:0; font-size:28px; font-weight:650; letter-spacing:-0.01em; }
header .subtitle { margin:2px 0 14px; font-size:17px; opacity:.9; }
header dl { display:flex; flex-wrap:wrap; gap:6px 28px; margin:0; font-size:13px; }
header dt { opacity:.7; } header dd { margin:0; font-weight:600; }
main { max-width:1320px; margin:0 auto; padding:8px 48px 40px; }
section { background:#fff; border:1px solid var(--line); border-radius:10px; padding:22px 26px;
  margin:20px 0; break-inside:avoid; }
h2 { margin:0 0 8px; font-size:20px; color:var(--brand); }
p { margin:6px 0 12px; color:var(--muted); max-width:1050px; }
p.lead { font-size:17px; color:var(--ink); line-height:1.6; }
p.callout { color:var(--ink); background:#eef4fa; border-left:4px solid var(--brand);
  padding:8px 12px; border-radius:4px; }
.tiles { display:grid; grid-template-columns:repeat(7, 1fr); gap:12px; margin-top:14px; }
.tile { border:1px solid var(--line); border-radius:8px; padding:12px 14px; background:#fbfcfd; }
.tile-label { font-size:12px; color:var(--muted); text-transform:uppercase; letter-spacing:.04em; }
.tile-value { font-size:24px; font-weight:650; margin-top:2px; white-space:nowrap; }
.tile.good .tile-value { color:var(--good); } .tile.bad .tile-value { color:var(--bad); }
.tile-change { font-size:12px; color:var(--muted); margin-top:2px; }
.grid { display:grid; grid-template-columns:1fr 1fr; gap:18px; align-items:start; }
.grid.tables { grid-template-columns:2fr 1fr; }
figure { margin:0; }
.grid > * { min-width:0; overflow-x:auto; }
svg.chart { width:100%; height:auto; display:block; font-family:inherit; }
svg .chart-title { font-size:15px; font-weight:650; fill:var(--ink); }
svg .tick { font-size:11px; fill:var(--muted); }
svg .axis-label { font-size:12px; fill:var(--ink); }
svg .value, svg .point-label { font-size:11px; fill:var(--ink); font-weight:600; }
svg .legend { font-size:11px; fill:var(--ink); }
svg .note { font-size:10px; fill:var(--muted); font-style:italic; }
svg .grid { stroke:var(--line); stroke-width:1; }
svg .axis { stroke:#98a2b3; stroke-width:1; }
svg .break-even { stroke:#98a2b3; stroke-dasharray:5 4; stroke-width:1.5; }
svg path.line { fill:none; stroke-width:2.5; stroke-linejoin:round; }
table { width:100%; border-collapse:collapse; margin-top:14px; font-size:13.5px;
  font-variant-numeric:tabular-nums; }
th { text-align:right; font-weight:600; color:var(--muted); border-bottom:2px solid var(--line);
  padding:6px 10px; font-size:12px; }
td { padding:6px 10px; border-bottom:1px solid var(--line); text-align:right; white-space:nowrap; }
th.text, td.text { text-align:left; }
tr.total td { font-weight:650; border-top:2px solid var(--line); }
sup.fn { color:var(--muted); }
code { font-size:12.5px; background:#f1f3f5; padding:1px 4px; border-radius:3px; }
ol.notes { color:var(--muted); font-size:13px; margin:0; padding-left:20px; }
.side table { margin-top:30px; }
@media print { body { background:#fff; } section { border:none; padding:0; }
  header { color:#000; background:#fff; padding:0 0 12px; } main { padding:0; } }
@media (max-width:1000px) { .grid, .grid.tables { grid-template-columns:1fr; }
  .tiles { grid-template-columns:repeat(2, 1fr); } }
"""
)

# Records how many charts drew at least one mark, and any script error, on <html>.
SCRIPT: Final = """
(function () {
  var root = document.documentElement, errors = [];
  window.addEventListener('error', function (e) {
    errors.push(String(e.message)); root.setAttribute('data-script-errors', errors.join(' | '));
  });
  root.setAttribute('data-script-errors', '');
  document.addEventListener('DOMContentLoaded', function () {
    var n = 0, charts = document.querySelectorAll('svg.chart');
    for (var i = 0; i < charts.length; i++) { if (charts[i].querySelector('.mark')) n++; }
    root.setAttribute('data-charts-rendered', String(n));
  });
})();
"""

PAGE: Final = """<!DOCTYPE html>
<html lang="en" data-charts-expected="{charts}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>{title}</title>
<style>{css}</style>
<script>{script}</script>
</head>
<body>
<header><h1>{heading}</h1><div class="subtitle">{subtitle}</div><dl>{meta}</dl></header>
<main>
{sections}
</main>
<script type="application/json" id="report-data">{data}</script>
</body>
</html>
"""
