"""The board report as ONE self-contained HTML page (``socialroi report --format html``).

It renders the document of ``sinks.report.build_report`` and nothing else, so every number on
the page is in ``--format report-json`` too (the document is also embedded in the page, in
``<script type="application/json" id="report-data">``). Works offline: inline CSS, charts
drawn here as inline SVG (:mod:`streams.charts`), system fonts, no network request. A
ten-line inline script only records, on ``<html>``, how many charts hold marks
(``data-charts-rendered``) and any script error (``data-script-errors``), for tests and
monitoring; the page reads the same without it.

Tables carry the exact value of every figure in ``data-value`` (JSON text, ``null`` for an
undefined ratio); the visible text rounds it. Undefined ratios show as an en dash with a footnote.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from html import escape
from typing import Any, Final

import orjson

from streams.charts import NEGATIVE, PALETTE, POSITIVE, bar_chart, grouped_bar_chart, line_chart
from streams.charts import scatter as scatter_chart

__all__ = ["render_html"]

DASH: Final = "\u2013"
_SYMBOLS: Final = {"EUR": "€", "USD": "$", "GBP": "£", "JPY": "¥", "CHF": "CHF "}
_MODELS: Final = {
    "last_touch": "last touch (the last social touchpoint before a purchase gets all the credit)",
    "first_touch": "first touch (the first social touchpoint gets all the credit)",
    "linear": "linear (every touchpoint before a purchase gets an equal share)",
    "time_decay": "time decay (touchpoints closer to the purchase get more credit)",
    "position_based": "position based (40% first, 40% last, 20% shared by the middle)",
}


def _campaign(cid: str) -> str:
    return cid if cid else "(no campaign)"


def _label(row: dict[str, Any]) -> str:
    """A campaign as people call it: its declared name, and its id when that differs."""
    cid, name = row["campaign_id"], row.get("campaign_name") or ""
    return f"{name} ({cid})" if name and name != cid else _campaign(cid)


class _Fmt:
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


def _pct(v: float | None, digits: int = 1, signed: bool = False) -> str:
    if v is None:
        return DASH
    text = f"{abs(v) * 100:,.{digits}f}%"
    if v < 0:
        return "\u2212" + text
    return ("+" + text) if signed and v > 0 else text


def _times(v: float | None) -> str:
    return DASH if v is None else f"{v:,.2f}\u00d7"


def _int(v: int | None) -> str:
    if v is None:
        return DASH
    return f"\u2212{abs(v):,}" if v < 0 else f"{v:,}"


def _signed_int(v: int | None) -> str:
    if v is None:
        return DASH
    return f"+{v:,}" if v > 0 else _int(v)


def _num(v: float | None, digits: int = 2) -> str:
    if v is None:
        return DASH
    return f"\u2212{abs(v):,.{digits}f}" if v < 0 else f"{v:,.{digits}f}"


def _day_label(day: str) -> str:
    d = date.fromisoformat(day)
    return f"{d.day} {d.strftime('%b')}"


def _open_days(doc: dict[str, Any]) -> set[str]:
    """Days whose windows are still open somewhere in the report (``is_final`` false)."""
    days = set(doc["summary"]["provisional_days"])
    days |= {d["day"] for d in doc["social_traffic"] if not d["is_final"]}
    days |= {d["day"] for d in doc["daily"] if not d["is_final"]}
    return days | {r["day"] for r in doc["followers"] if not r.get("is_final", True)}


def _marked(day: str, open_days: set[str]) -> str:
    """A day's axis label, with an asterisk while it is provisional."""
    return _day_label(day) + ("*" if day in open_days else "")


def _open_note(days: list[str], open_days: set[str]) -> str:
    shown = [d for d in days if d in open_days]
    if not shown:
        return ""
    names = ", ".join(_day_label(d) for d in shown)
    return (
        f'<p class="provisional-note">* Provisional: {names} '
        f"{'is' if len(shown) == 1 else 'are'} still open, so late data may still change "
        "the figures (hollow points, pale bars, rows marked provisional).</p>"
    )


def _long_day(day: str | None) -> str:
    if day is None:
        return "the first stored day"
    d = date.fromisoformat(day)
    return f"{d.day} {d.strftime('%B %Y')}"


# -- tables --------------------------------------------------------------------------------

Column = tuple[str, str, Callable[[Any], str]]  # (key, header, format)


def _table(
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


# -- page ----------------------------------------------------------------------------------


def render_html(doc: dict[str, Any]) -> str:
    """The page for report document ``doc`` (see :mod:`sinks.report`)."""
    f = _Fmt(doc["currency"])
    charts: list[str] = []

    def chart(svg: str) -> str:
        charts.append(svg)
        return f'<figure class="figure">{svg}</figure>'

    sections = [
        _summary(doc, f),
        _roi_section(doc, f, chart),
        _spend_vs_return_section(doc, f, chart),
        _traffic_section(doc, chart),
        _followers_section(doc, f, chart),
        _service_section(doc, f, chart),
        _sentiment_section(doc, chart),
        _quality_section(doc),
        _notes(doc),
    ]
    data = orjson.dumps(doc).decode().replace("</", "<\\/")
    title = f"Social media ROI report, {_period_text(doc)}"
    return _PAGE.format(
        title=escape(title),
        heading=escape("Social media ROI report"),
        subtitle=escape(_period_text(doc)),
        meta=_meta(doc),
        sections="\n".join(sections),
        css=_CSS,
        script=_SCRIPT,
        charts=len(charts),
        data=data,
    )


def _period_text(doc: dict[str, Any]) -> str:
    s = doc["summary"]
    first = doc["period"]["from"] or s["first_day"]
    last = doc["period"]["to"] or s["last_day"]
    if first is None and last is None:
        return "no data stored yet"
    return f"{_long_day(first)} to {_long_day(last)}"


def _meta(doc: dict[str, Any]) -> str:
    chosen = doc["campaign_filter"]
    campaigns = "all" if chosen is None else ", ".join(_campaign(c) for c in chosen) or "none"
    model = doc["attribution_model"]
    lookback = doc["attribution_lookback_seconds"] / 86400
    window = doc["window_seconds"]
    window_text = "one-day windows" if window == 86400 else f"{window}-second windows"
    items = [
        ("Campaigns", campaigns),
        ("Attribution model", f"{model.replace('_', ' ')} ({lookback:g}-day lookback)"),
        ("Currency", f"{doc['currency']} (every amount)"),
        ("Campaign totals from", f"tumbling {window_text}, UTC"),
        ("Generated", doc["generated_at"].replace("T", " ").replace("+00:00", " UTC")),
    ]
    return "".join(
        f'<div><dt>{escape(k)}</dt><dd data-meta="{escape(k.lower())}">{escape(v)}</dd></div>'
        for k, v in items
    )


def _change(now: float | None, before: float | None) -> str | None:
    """``+12%`` from ``before`` to ``now``; ``None`` when there is no base to compare."""
    if now is None or before is None or before == 0:
        return None
    return f"{(now - before) / abs(before) * 100:+.0f}%"


def _against_previous(doc: dict[str, Any], f: _Fmt) -> str:
    """One sentence comparing the period with the one before it, of the same length."""
    previous = doc.get("previous_period")
    if previous is None:
        return ""
    span = (
        f"the previous {previous['days']} day{'s' if previous['days'] != 1 else ''} "
        f"({_day_label(previous['from'])} to {_day_label(previous['to'])})"
    )
    before, t = previous["totals"], doc["totals"]
    if not before["windows"]:
        return f"Nothing was recorded in {span} to compare with."
    parts = []
    for key, name in (("spend", "spend"), ("revenue", "revenue")):
        change = _change(t[key], before[key])
        was = f.money(before[key])
        parts.append(f"{name} {was}" + (f" ({change} since)" if change else ""))
    if before["roi"] is not None:
        moved = ""
        if t["roi"] is not None:
            moved = f" ({(t['roi'] - before['roi']) * 100:+.1f} points since)"
        parts.append(f"ROI {_pct(before['roi'], signed=True)}{moved}")
    return f"In {span}: {', '.join(parts)}."


def _tile_change(doc: dict[str, Any], key: str) -> str:
    """A summary tile's change against the previous period, when there is one."""
    previous = doc.get("previous_period")
    if previous is None or not previous["totals"]["windows"] or key not in previous["totals"]:
        return ""
    now, before = doc["totals"][key], previous["totals"][key]
    if key == "roi":
        if now is None or before is None:
            return ""
        text = f"{(now - before) * 100:+.1f} pts"
    else:
        change = _change(now, before)
        if change is None:
            return ""
        text = change
    return (
        f'<div class="tile-change" data-change="{escape(text)}">{escape(text)} vs previous '
        f"{previous['days']} days</div>"
    )


def _summary(doc: dict[str, Any], f: _Fmt) -> str:
    t, s = doc["totals"], doc["summary"]
    paid = [r for r in doc["campaigns"] if r["campaign_id"] != ""]
    model = doc["attribution_model"].replace("_", "-")
    sentences = [
        f"Over {_period_text(doc)}, {len(paid)} campaign{'s' if len(paid) != 1 else ''} "
        f"cost <b>{f.money(t['spend'])}</b> (media, staff effort and tools) and brought "
        f"<b>{f.money(t['revenue'])}</b> of revenue credited to social by the {model} model, "
        f"plus <b>{f.money(t['service_savings'])}</b> saved by answering "
        f"{_int(t['service_resolved'])} customer questions on social instead of the call centre."
    ]
    if t["roi"] is not None:
        verdict = "a gain" if t["roi"] >= 0 else "a loss"
        sentences.append(
            f"Return on investment was <b>{_pct(t['roi'], signed=True)}</b> ({verdict}): "
            f"every {f.symbol.strip()}1 spent brought back {f.money(t['roas'])} in revenue "
            f"(ROAS {_times(t['roas'])})."
        )
    else:
        sentences.append("No spend was recorded, so ROI and ROAS are not defined.")
    best, worst = s["best_campaign"], s["worst_campaign"]
    if best is not None:
        name, roi = escape(_campaign(best["campaign_id"])), _pct(best["roi"], signed=True)
        text = f"Best campaign: <b>{name}</b> (ROI {roi})"
        if worst is not None:
            name, roi = escape(_campaign(worst["campaign_id"])), _pct(worst["roi"], signed=True)
            text += f"; weakest: <b>{name}</b> (ROI {roi})"
        sentences.append(text + ".")
    if s["social_share"] is not None:
        text = f"Social media brought <b>{_pct(s['social_share'])}</b> of all site visits"
        first, last = s["social_share_first_day"], s["social_share_last_day"]
        if first is not None and last is not None and s["first_day"] != s["last_day"]:
            change = (last - first) * 100
            direction = "up" if change > 0 else "down" if change < 0 else "flat"
            text += (
                f", {direction} from {_pct(first)} on the first day to {_pct(last)} on the last"
                f" ({change:+.1f} points)"
            )
        sentences.append(text + ".")
    if s["provisional_days"]:
        days = ", ".join(_day_label(d) for d in s["provisional_days"])
        sentences.append(f"Figures for {days} are provisional: late data may still arrive.")
    sentences.append(_against_previous(doc, f))
    tiles = [
        ("Total spend", f.money_short(t["spend"]), "spend", t["spend"], ""),
        ("Attributed revenue", f.money_short(t["revenue"]), "revenue", t["revenue"], ""),
        ("ROI", _pct(t["roi"], 0, signed=True), "roi", t["roi"], _sign_class(t["roi"])),
        ("ROAS", _times(t["roas"]), "roas", t["roas"], ""),
        ("Service savings", f.money_short(t["service_savings"]), "service_savings",
         t["service_savings"], ""),
        ("Social share of traffic", _pct(s["social_share"]), "social_share", s["social_share"], ""),
        ("Net new followers", _signed_int(t["net_follower_growth"]), "net_follower_growth",
         t["net_follower_growth"], _sign_class(t["net_follower_growth"])),
    ]  # fmt: skip
    tile_html = "".join(
        f'<div class="tile {cls}" data-kpi="{key}" data-value="{escape(orjson.dumps(v).decode())}">'
        f'<div class="tile-label">{escape(label)}</div>'
        f'<div class="tile-value">{escape(text)}</div>{_tile_change(doc, key)}</div>'
        for label, text, key, v, cls in tiles
    )
    return (
        '<section id="summary"><h2>Summary</h2>'
        f'<p class="lead">{" ".join(sentences)}</p><div class="tiles">{tile_html}</div></section>'
    )


def _sign_class(v: float | None) -> str:
    if v is None:
        return ""
    return "good" if v > 0 else "bad" if v < 0 else ""


def _roi_section(doc: dict[str, Any], f: _Fmt, chart: Callable[[str], str]) -> str:
    rows = doc["campaigns"]
    c = f.currency
    columns: list[Column] = [
        ("campaign_id", "Campaign", _campaign),
        ("campaign_name", "Name", lambda v: v or ""),
        ("spend", f"Spend ({c})", f.money),
        ("budget_used", "Budget used", lambda v: _pct(v, 0)),
        ("revenue", f"Attributed revenue ({c})", f.money),
        ("service_savings", f"Service savings ({c})", f.money),
        ("conversions", "Conversions", lambda v: _num(v, 1)),
        ("roi", "ROI", lambda v: _pct(v, signed=True)),
        ("roas", "ROAS", _times),
        ("cpa", f"CPA ({c})", f.money),
        ("cpc", f"CPC ({c})", f.money),
        ("engagement_rate", "Engagement rate", lambda v: _pct(v, 2)),
    ]
    total = {**doc["totals"], "campaign_id": "All campaigns"}
    table = _table("campaigns", rows, columns, key="campaign_id", total=total)
    charted = [r for r in rows if r["campaign_id"] != ""]
    labels = [_label(r) for r in charted]
    roi = chart(
        bar_chart(
            "roi", "ROI per campaign", labels, [r["roi"] for r in charted], "Campaign",
            "ROI (%)", lambda v: _pct(v, 0), lambda v: _pct(v, 0, signed=True),
        )
    )  # fmt: skip
    money = chart(
        grouped_bar_chart(
            "spend-revenue", f"Spend and attributed revenue per campaign ({c})", labels,
            [("Spend", [r["spend"] for r in charted], PALETTE[0]),
             ("Revenue", [r["revenue"] for r in charted], PALETTE[1]),
             ("Service savings", [r["service_savings"] for r in charted], PALETTE[4])],
            "Campaign", f"Amount ({c})", f.axis_money,
        )
    )  # fmt: skip
    return (
        '<section id="roi"><h2>Return per campaign</h2>'
        "<p>ROI = (attributed revenue + service savings \u2212 spend) ÷ spend. ROAS = revenue ÷ "
        "spend. CPA = spend ÷ conversions. Spend includes media, staff effort and tools.</p>"
        f'<div class="grid">{roi}{money}</div>{table}'
        f"{_open_note(sorted(_open_days(doc)), _open_days(doc))}</section>"
    )


def _spend_vs_return_section(doc: dict[str, Any], f: _Fmt, chart: Callable[[str], str]) -> str:
    c = f.currency
    points = [
        (_label(r), r["spend"], r["revenue"] + r["service_savings"])
        for r in doc["campaigns"]
        if r["campaign_id"] != ""
    ]
    sc = chart(
        scatter_chart(
            "spend-vs-return", f"Spend vs return per campaign ({c})", points,
            f"Spend ({c})", f"Revenue + service savings ({c})", f.axis_money,
        )
    )  # fmt: skip
    buckets = doc["spend_vs_return"]
    bars = chart(
        bar_chart(
            "spend-buckets", "ROI by spend level (all stored days)",
            [b["spend_bucket_label"] for b in buckets], [b["roi"] for b in buckets],
            f"Total spend per campaign ({c})", "ROI (%)", lambda v: _pct(v, 0),
            lambda v: _pct(v, 0, signed=True),
        )
    )  # fmt: skip
    columns: list[Column] = [
        ("spend_bucket_label", f"Spend level ({c})", str),
        ("campaigns", "Campaigns", _int),
        ("campaigns_with_revenue", "With revenue", _int),
        ("spend", f"Spend ({c})", f.money),
        ("revenue", f"Revenue ({c})", f.money),
        ("revenue_per_campaign", f"Revenue per campaign ({c})", f.money),
        ("roi", "ROI", lambda v: _pct(v, signed=True)),
        ("roas", "ROAS", _times),
    ]
    paid = [b for b in buckets if b["spend_bucket"] > 0 and b["roas"] is not None]
    verdict = ""
    if len(paid) >= 2:
        low, high = paid[0], paid[-1]
        better = high["roas"] > low["roas"]
        verdict = (
            f'<p class="callout">Campaigns in the highest spend level '
            f"({escape(high['spend_bucket_label'])}) returned {_times(high['roas'])} their "
            f"spend, against {_times(low['roas'])} in the lowest "
            f"({escape(low['spend_bucket_label'])}): here bigger efforts "
            f"{'<b>did</b>' if better else '<b>did not</b>'} bring proportionally bigger "
            "returns.</p>"
        )
    table = _table("spend-vs-return-table", buckets, columns, key="spend_bucket")
    return (
        '<section id="spend-vs-return"><h2>Does bigger effort bring bigger returns?</h2>'
        "<p>Each point is a campaign in the period; above the dashed line it returned more "
        "than it cost. Spend levels group campaigns by their total spend over every stored "
        f'day.</p>{verdict}<div class="grid">{sc}{bars}</div>{table}</section>'
    )


def _traffic_section(doc: dict[str, Any], chart: Callable[[str], str]) -> str:
    days = doc["social_traffic"]
    open_days = _open_days(doc)
    labels = [_marked(d["day"], open_days) for d in days]
    still_open = [d["day"] in open_days for d in days]
    line = chart(
        line_chart(
            "social-share", "Share of site visits from social, per day", labels,
            [("Social share", [d["social_share"] for d in days], PALETTE[0])],
            "Day (UTC)", "Visits from social (%)", lambda v: _pct(v, 0),
            y_range=(0.0, max([d["social_share"] or 0 for d in days] + [0.1])),
            provisional=still_open,
        )
    )  # fmt: skip
    visits = chart(
        grouped_bar_chart(
            "visits", "Site visits per day by source", labels,
            [("Social", [d["social_visits"] for d in days], PALETTE[0]),
             ("Direct", [d["direct_visits"] for d in days], PALETTE[5]),
             ("Other campaigns", [d["other_visits"] for d in days], PALETTE[4])],
            "Day (UTC)", "Visits", lambda v: f"{v:,.0f}", provisional=still_open,
        )
    )  # fmt: skip
    columns: list[Column] = [
        ("day", "Day (UTC)", lambda v: f"{v} (provisional)" if v in open_days else v),
        ("visits", "All visits", _int),
        ("social_visits", "From social", _int),
        ("direct_visits", "Direct", _int),
        ("other_visits", "Other", _int),
        ("social_share", "Social share", _pct),
    ]
    table = _table("traffic", days, columns, key="day")
    return (
        '<section id="traffic"><h2>Site traffic from social</h2>'
        "<p>Visits arriving from a social network (UTM tags or click ids), against all site "
        "visits, whatever the campaign filter.</p>"
        f'<div class="grid">{line}{visits}</div>{table}'
        f"{_open_note([d['day'] for d in days], open_days)}</section>"
    )


def _followers_section(doc: dict[str, Any], f: _Fmt, chart: Callable[[str], str]) -> str:
    rows = doc["followers"]
    days = sorted({r["day"] for r in rows})
    by_campaign: dict[str, dict[str, int]] = {}
    for r in rows:
        by_campaign.setdefault(r["campaign_id"], {})[r["day"]] = r["cumulative_net_follower_growth"]
    series = [
        (_campaign(cid), [values.get(d) for d in days], PALETTE[i % len(PALETTE)])
        for i, (cid, values) in enumerate(sorted(by_campaign.items()))
        if cid != ""
    ]
    open_days = _open_days(doc)
    line = chart(
        line_chart(
            "followers", "Net new followers, cumulative", [_marked(d, open_days) for d in days],
            series, "Day (UTC)", "Followers (net, cumulative)", lambda v: f"{v:,.0f}",
            provisional=[d in open_days for d in days],
        )
    )  # fmt: skip
    audience = [r for r in doc["audience"] if r["campaign_id"] != ""]
    c = f.currency
    columns: list[Column] = [
        ("campaign_id", "Campaign", _campaign),
        ("follows", "Follows", _int),
        ("unfollows", "Unfollows", _int),
        ("net_follower_growth", "Net growth", _signed_int),
        ("follower_revenue", f"Revenue from followers ({c})", f.money),
        ("value_per_follower", f"Value per follower ({c})", f.money),
    ]
    table = _table("followers-table", audience, columns, key="campaign_id")
    value = chart(
        bar_chart(
            "value-per-follower", f"Measured value per new follower ({c})",
            [_campaign(r["campaign_id"]) for r in audience],
            [r["value_per_follower"] for r in audience], "Campaign",
            f"Revenue per follow ({c})", f.axis_money, f.money, signed_colors=False,
        )
    )  # fmt: skip
    return (
        '<section id="followers"><h2>Followers and what they are worth</h2>'
        "<p>Value per follower is the revenue from purchases by users who followed, traced "
        "follower → visit → order, divided by the follows.</p>"
        f'<div class="grid">{line}{value}</div>{table}{_open_note(days, open_days)}</section>'
    )


def _service_section(doc: dict[str, Any], f: _Fmt, chart: Callable[[str], str]) -> str:
    rows = [r for r in doc["audience"] if r["campaign_id"] != ""]
    c = f.currency
    costs = doc["service_costs"]
    columns: list[Column] = [
        ("campaign_id", "Campaign", _campaign),
        ("service_contacts", "Contacts on social", _int),
        ("service_resolved", "Resolved", _int),
        ("resolution_rate", "Resolution rate", _pct),
        ("service_savings", f"Cost saved ({c})", f.money),
    ]
    table = _table("service", rows, columns, key="campaign_id")
    bars = chart(
        bar_chart(
            "service-savings", f"Customer-service cost saved on social ({c})",
            [_campaign(r["campaign_id"]) for r in rows], [r["service_savings"] for r in rows],
            "Campaign", f"Saved ({c})", f.axis_money, f.money, signed_colors=False,
        )
    )  # fmt: skip
    return (
        '<section id="service"><h2>Customer service on social</h2>'
        f"<p>Each question resolved on social instead of the call centre saves "
        f"{f.money(costs['call_centre_contact'] - costs['social_contact'])} "
        f"({f.money(costs['call_centre_contact'])} per call-centre contact \u2212 "
        f"{f.money(costs['social_contact'])} per social contact).</p>"
        f'<div class="grid">{bars}<div class="side">{table}</div></div></section>'
    )


def _sentiment_section(doc: dict[str, Any], chart: Callable[[str], str]) -> str:
    days = doc["daily"]
    open_days = _open_days(doc)
    labels = [_marked(d["day"], open_days) for d in days]
    still_open = [d["day"] in open_days for d in days]
    sentiment = chart(
        line_chart(
            "net-sentiment", "Net sentiment of mentions, per day", labels,
            [("Net sentiment", [d["net_sentiment"] for d in days], PALETTE[3])],
            "Day (UTC)", "Net sentiment (\u22121 to +1)", lambda v: f"{v:+.1f}" if v else "0",
            y_range=(-1.0, 1.0), provisional=still_open,
        )
    )  # fmt: skip
    engagement = chart(
        line_chart(
            "engagement-rate", "Engagement rate, per day", labels,
            [("Engagement rate", [d["engagement_rate"] for d in days], PALETTE[1]),
             ("Click-through rate", [d["ctr"] for d in days], PALETTE[2])],
            "Day (UTC)", "Share of impressions (%)", lambda v: _pct(v, 1),
            provisional=still_open,
        )
    )  # fmt: skip
    return (
        '<section id="sentiment"><h2>Sentiment and engagement</h2>'
        "<p>Net sentiment = (positive \u2212 negative mentions) ÷ (positive + negative). "
        "Engagement rate = (likes + comments + shares + saves) ÷ impressions.</p>"
        f'<div class="grid">{sentiment}{engagement}</div>'
        f"{_open_note([d['day'] for d in days], open_days)}</section>"
    )


def _quality_section(doc: dict[str, Any]) -> str:
    q = doc["data_quality"]
    counted = q["stream_counters"] is not None
    columns: list[Column] = [
        ("kpi", "KPI", str),
        ("topics", "Source topics", lambda v: ", ".join(v)),
        ("rejected", "Rejected (dead letters)", _int),
        ("late", "Late (after the grace period)", _int if counted else lambda v: "n/a"),
        ("duplicates", "Duplicates (skipped)", _int if counted else lambda v: "n/a"),
    ]
    per_kpi = _table("quality", q["per_kpi"], columns, key="kpi")
    reasons = [{"reason": k, "letters": v} for k, v in sorted(q["dead_letters_by_reason"].items())]
    by_reason = _table(
        "dead-letters", reasons, [("reason", "Reason", str), ("letters", "Dead letters", _int)],
        key="reason",
    )  # fmt: skip
    if counted:
        source = escape(q["stream_counters_source"] or "the worker")
        note = (
            f"Late and duplicate counts come from {source} (Prometheus counters "
            "<code>socialroi_late_events_total</code> and <code>socialroi_duplicates_total</code>, "
            "since that worker started)."
        )
    else:
        note = (
            "Late and duplicate counts are not stored in ClickHouse: read them from the workers' "
            "Prometheus metrics <code>socialroi_late_events_total</code> and "
            "<code>socialroi_duplicates_total</code>, or pass "
            "<code>--metrics-url http://WORKER:9464/metrics</code> to include them here."
        )
    empty = "" if reasons else "<p>No message was rejected.</p>"
    return (
        '<section id="quality"><h2>Data quality</h2>'
        "<p>Rejected messages never count in a KPI: each is kept as a dead letter with its "
        "reason and original bytes. Late events (older than the allowed lateness) and "
        f"duplicates (an event id already counted) are left out too. {note}</p>"
        # each grid cell a div: a bare table ignores overflow-x and spills over its neighbour
        f'<div class="grid tables"><div>{per_kpi}</div><div>{by_reason}{empty}</div></div>'
        "</section>"
    )


def _notes(doc: dict[str, Any]) -> str:
    model = _MODELS.get(doc["attribution_model"], doc["attribution_model"])
    notes = [
        f"<sup>*</sup> {DASH} marks a ratio that is not defined because its denominator is "
        "zero (no spend, no conversions, no impressions, no follows or no visits).",
        "Ratios are computed from the period's sums, never by averaging daily ratios.",
        f"Revenue is credited to campaigns by the {escape(model)} model; "
        "“(no campaign)” holds direct traffic and purchases with no social touchpoint.",
        f"All amounts are in {escape(doc['currency'])}; other currencies were converted at the "
        "configured rates.",
        "Spend levels and dead letters cover every stored day, not only the period.",
        "The same figures are in <code>socialroi report --format report-json</code> (and, per "
        "campaign, <code>--format csv</code>).",
    ]
    items = "".join(f"<li>{n}</li>" for n in notes)
    return f'<section id="notes"><h2>Notes</h2><ol class="notes">{items}</ol></section>'


_CSS: Final = (
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
_SCRIPT: Final = """
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

_PAGE: Final = """<!DOCTYPE html>
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
