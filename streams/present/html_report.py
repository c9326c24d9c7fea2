"""The board report as ONE self-contained HTML page (``socialroi report --format html``).

It renders the document of ``sinks.report.build_report`` and nothing else, so every number on
the page is in ``--format report-json`` too (the document is also embedded in the page, in
``<script type="application/json" id="report-data">``). Works offline: inline CSS, charts
drawn here as inline SVG (:mod:`streams.present.charts`), system fonts, no network request. A
ten-line inline script only records, on ``<html>``, how many charts hold marks
(``data-charts-rendered``) and any script error (``data-script-errors``), for tests and
monitoring; the page reads the same without it.

Tables carry the exact value of every figure in ``data-value`` (JSON text, ``null`` for an
undefined ratio); the visible text rounds it. Undefined ratios show as an en dash with a footnote.
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from typing import Any

import orjson

from streams.present import html_parts as h
from streams.present.charts import PALETTE, bar_chart, grouped_bar_chart, line_chart
from streams.present.charts import scatter as scatter_chart

__all__ = ["render_html"]

# -- page ----------------------------------------------------------------------------------


def render_html(doc: dict[str, Any]) -> str:
    """The page for report document ``doc`` (see :mod:`sinks.report`)."""
    f = h.Fmt(doc["currency"])
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
    return h.PAGE.format(
        title=escape(title),
        heading=escape("Social media ROI report"),
        subtitle=escape(_period_text(doc)),
        meta=_meta(doc),
        sections="\n".join(sections),
        css=h.CSS,
        script=h.SCRIPT,
        charts=len(charts),
        data=data,
    )


def _period_text(doc: dict[str, Any]) -> str:
    s = doc["summary"]
    first = doc["period"]["from"] or s["first_day"]
    last = doc["period"]["to"] or s["last_day"]
    if first is None and last is None:
        return "no data stored yet"
    return f"{h.long_day(first)} to {h.long_day(last)}"


def _meta(doc: dict[str, Any]) -> str:
    chosen = doc["campaign_filter"]
    campaigns = "all" if chosen is None else ", ".join(h.campaign(c) for c in chosen) or "none"
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


def _against_previous(doc: dict[str, Any], f: h.Fmt) -> str:
    """One sentence comparing the period with the one before it, of the same length."""
    previous = doc.get("previous_period")
    if previous is None:
        return ""
    span = (
        f"the previous {previous['days']} day{'s' if previous['days'] != 1 else ''} "
        f"({h.day_label(previous['from'])} to {h.day_label(previous['to'])})"
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
        parts.append(f"ROI {h.pct(before['roi'], signed=True)}{moved}")
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


def _summary(doc: dict[str, Any], f: h.Fmt) -> str:
    t, s = doc["totals"], doc["summary"]
    paid = [r for r in doc["campaigns"] if r["campaign_id"] != ""]
    model = doc["attribution_model"].replace("_", "-")
    sentences = [
        f"Over {_period_text(doc)}, {len(paid)} campaign{'s' if len(paid) != 1 else ''} "
        f"cost <b>{f.money(t['spend'])}</b> (media, staff effort and tools) and brought "
        f"<b>{f.money(t['revenue'])}</b> of revenue credited to social by the {model} model, "
        f"plus <b>{f.money(t['service_savings'])}</b> saved by answering "
        f"{h.integer(t['service_resolved'])} customer questions on social instead of the call "
        "centre."
    ]
    if t["roi"] is not None:
        verdict = "a gain" if t["roi"] >= 0 else "a loss"
        sentences.append(
            f"Return on investment was <b>{h.pct(t['roi'], signed=True)}</b> ({verdict}): "
            f"every {f.symbol.strip()}1 spent brought back {f.money(t['roas'])} in revenue "
            f"(ROAS {h.times(t['roas'])})."
        )
    else:
        sentences.append("No spend was recorded, so ROI and ROAS are not defined.")
    best, worst = s["best_campaign"], s["worst_campaign"]
    if best is not None:
        name, roi = escape(h.campaign(best["campaign_id"])), h.pct(best["roi"], signed=True)
        text = f"Best campaign: <b>{name}</b> (ROI {roi})"
        if worst is not None:
            name, roi = escape(h.campaign(worst["campaign_id"])), h.pct(worst["roi"], signed=True)
            text += f"; weakest: <b>{name}</b> (ROI {roi})"
        sentences.append(text + ".")
    if s["social_share"] is not None:
        text = f"Social media brought <b>{h.pct(s['social_share'])}</b> of all site visits"
        first, last = s["social_share_first_day"], s["social_share_last_day"]
        if first is not None and last is not None and s["first_day"] != s["last_day"]:
            change = (last - first) * 100
            direction = "up" if change > 0 else "down" if change < 0 else "flat"
            text += (
                f", {direction} from {h.pct(first)} on the first day to {h.pct(last)} on the last"
                f" ({change:+.1f} points)"
            )
        sentences.append(text + ".")
    if s["provisional_days"]:
        days = ", ".join(h.day_label(d) for d in s["provisional_days"])
        sentences.append(f"Figures for {days} are provisional: late data may still arrive.")
    sentences.append(_against_previous(doc, f))
    tiles = [
        ("Total spend", f.money_short(t["spend"]), "spend", t["spend"], ""),
        ("Attributed revenue", f.money_short(t["revenue"]), "revenue", t["revenue"], ""),
        ("ROI", h.pct(t["roi"], 0, signed=True), "roi", t["roi"], _sign_class(t["roi"])),
        ("ROAS", h.times(t["roas"]), "roas", t["roas"], ""),
        ("Service savings", f.money_short(t["service_savings"]), "service_savings",
         t["service_savings"], ""),
        ("Social share of traffic", h.pct(s["social_share"]), "social_share",
         s["social_share"], ""),
        ("Net new followers", h.signed_integer(t["net_follower_growth"]), "net_follower_growth",
         t["net_follower_growth"], _sign_class(t["net_follower_growth"])),
        ("Video views", h.integer(t["video_views"]), "video_views", t["video_views"], ""),
        ("View-through rate", h.pct(t["view_through_rate"]), "view_through_rate",
         t["view_through_rate"], ""),
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


def _roi_section(doc: dict[str, Any], f: h.Fmt, chart: Callable[[str], str]) -> str:
    rows = doc["campaigns"]
    c = f.currency
    columns: list[h.Column] = [
        ("campaign_id", "Campaign", h.campaign),
        ("campaign_name", "Name", lambda v: v or ""),
        ("spend", f"Spend ({c})", f.money),
        ("budget_used", "Budget used", lambda v: h.pct(v, 0)),
        ("revenue", f"Attributed revenue ({c})", f.money),
        ("service_savings", f"Service savings ({c})", f.money),
        ("conversions", "Conversions", lambda v: h.number(v, 1)),
        ("roi", "ROI", lambda v: h.pct(v, signed=True)),
        ("roas", "ROAS", h.times),
        ("cpa", f"CPA ({c})", f.money),
        ("cpc", f"CPC ({c})", f.money),
        ("engagement_rate", "Engagement rate", lambda v: h.pct(v, 2)),
    ]
    total = {**doc["totals"], "campaign_id": "All campaigns"}
    table = h.table("campaigns", rows, columns, key="campaign_id", total=total)
    charted = [r for r in rows if r["campaign_id"] != ""]
    labels = [h.label(r) for r in charted]
    roi = chart(
        bar_chart(
            "roi", "ROI per campaign", labels, [r["roi"] for r in charted], "Campaign",
            "ROI (%)", lambda v: h.pct(v, 0), lambda v: h.pct(v, 0, signed=True),
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
        f"{h.open_note(sorted(h.open_days(doc)), h.open_days(doc))}</section>"
    )


def _spend_vs_return_section(doc: dict[str, Any], f: h.Fmt, chart: Callable[[str], str]) -> str:
    c = f.currency
    points = [
        (h.label(r), r["spend"], r["revenue"] + r["service_savings"])
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
            f"Total spend per campaign ({c})", "ROI (%)", lambda v: h.pct(v, 0),
            lambda v: h.pct(v, 0, signed=True),
        )
    )  # fmt: skip
    columns: list[h.Column] = [
        ("spend_bucket_label", f"Spend level ({c})", str),
        ("campaigns", "Campaigns", h.integer),
        ("campaigns_with_revenue", "With revenue", h.integer),
        ("spend", f"Spend ({c})", f.money),
        ("revenue", f"Revenue ({c})", f.money),
        ("revenue_per_campaign", f"Revenue per campaign ({c})", f.money),
        ("roi", "ROI", lambda v: h.pct(v, signed=True)),
        ("roas", "ROAS", h.times),
    ]
    paid = [b for b in buckets if b["spend_bucket"] > 0 and b["roas"] is not None]
    verdict = ""
    if len(paid) >= 2:
        low, high = paid[0], paid[-1]
        better = high["roas"] > low["roas"]
        verdict = (
            f'<p class="callout">Campaigns in the highest spend level '
            f"({escape(high['spend_bucket_label'])}) returned {h.times(high['roas'])} their "
            f"spend, against {h.times(low['roas'])} in the lowest "
            f"({escape(low['spend_bucket_label'])}): here bigger efforts "
            f"{'<b>did</b>' if better else '<b>did not</b>'} bring proportionally bigger "
            "returns.</p>"
        )
    table = h.table("spend-vs-return-table", buckets, columns, key="spend_bucket")
    return (
        '<section id="spend-vs-return"><h2>Does bigger effort bring bigger returns?</h2>'
        "<p>Each point is a campaign in the period; above the dashed line it returned more "
        "than it cost. Spend levels group campaigns by their total spend over every stored "
        "day; direct traffic, which is no campaign, is in neither."
        f'</p>{verdict}<div class="grid">{sc}{bars}</div>{table}</section>'
    )


def _traffic_section(doc: dict[str, Any], chart: Callable[[str], str]) -> str:
    days = doc["social_traffic"]
    open_days = h.open_days(doc)
    labels = [h.marked(d["day"], open_days) for d in days]
    still_open = [d["day"] in open_days for d in days]
    line = chart(
        line_chart(
            "social-share", "Share of site visits from social, per day", labels,
            [("Social share", [d["social_share"] for d in days], PALETTE[0])],
            "Day (UTC)", "Visits from social (%)", lambda v: h.pct(v, 0),
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
    columns: list[h.Column] = [
        ("day", "Day (UTC)", lambda v: f"{v} (provisional)" if v in open_days else v),
        ("visits", "All visits", h.integer),
        ("social_visits", "From social", h.integer),
        ("direct_visits", "Direct", h.integer),
        ("other_visits", "Other", h.integer),
        ("social_share", "Social share", h.pct),
    ]
    table = h.table("traffic", days, columns, key="day")
    return (
        '<section id="traffic"><h2>Site traffic from social</h2>'
        "<p>Visits arriving from a social network (UTM tags or click ids), against all site "
        "visits, whatever the campaign filter.</p>"
        f'<div class="grid">{line}{visits}</div>{table}'
        f"{h.open_note([d['day'] for d in days], open_days)}</section>"
    )


def _followers_section(doc: dict[str, Any], f: h.Fmt, chart: Callable[[str], str]) -> str:
    rows = doc["followers"]
    days = sorted({r["day"] for r in rows})
    by_campaign: dict[str, dict[str, int]] = {}
    for r in rows:
        by_campaign.setdefault(r["campaign_id"], {})[r["day"]] = r["cumulative_net_follower_growth"]
    series = [
        (h.campaign(cid), [values.get(d) for d in days], PALETTE[i % len(PALETTE)])
        for i, (cid, values) in enumerate(sorted(by_campaign.items()))
        if cid != ""
    ]
    open_days = h.open_days(doc)
    line = chart(
        line_chart(
            "followers", "Net new followers, cumulative", [h.marked(d, open_days) for d in days],
            series, "Day (UTC)", "Followers (net, cumulative)", lambda v: f"{v:,.0f}",
            provisional=[d in open_days for d in days],
        )
    )  # fmt: skip
    audience = [r for r in doc["audience"] if r["campaign_id"] != ""]
    c = f.currency
    columns: list[h.Column] = [
        ("campaign_id", "Campaign", h.campaign),
        ("follows", "Follows", h.integer),
        ("unfollows", "Unfollows", h.integer),
        ("net_follower_growth", "Net growth", h.signed_integer),
        ("follower_revenue", f"Revenue from followers ({c})", f.money),
        ("value_per_follower", f"Value per follower ({c})", f.money),
        ("cost_per_new_follower", f"Cost per new follower ({c})", f.money),
        ("video_views", "Video views", h.integer),
        ("view_through_rate", "View-through rate", h.pct),
    ]
    table = h.table("followers-table", audience, columns, key="campaign_id")
    value = chart(
        bar_chart(
            "value-per-follower", f"Measured value per new follower ({c})",
            [h.campaign(r["campaign_id"]) for r in audience],
            [r["value_per_follower"] for r in audience], "Campaign",
            f"Revenue per follow ({c})", f.axis_money, f.money, signed_colors=False,
        )
    )  # fmt: skip
    return (
        '<section id="followers"><h2>Followers and what they are worth</h2>'
        "<p>Value per follower is the revenue from purchases by users who followed, traced "
        "follower → visit → order, divided by the follows; cost per new follower is the "
        "spend divided by the net new followers. The video columns count video views and "
        "the share of them watched to the end (view-through rate).</p>"
        f'<div class="grid">{line}{value}</div>{table}{h.open_note(days, open_days)}</section>'
    )


def _service_section(doc: dict[str, Any], f: h.Fmt, chart: Callable[[str], str]) -> str:
    rows = [r for r in doc["audience"] if r["campaign_id"] != ""]
    c = f.currency
    costs = doc["service_costs"]
    columns: list[h.Column] = [
        ("campaign_id", "Campaign", h.campaign),
        ("service_contacts", "Contacts on social", h.integer),
        ("service_resolved", "Resolved", h.integer),
        ("resolution_rate", "Resolution rate", h.pct),
        ("service_savings", f"Cost saved ({c})", f.money),
    ]
    table = h.table("service", rows, columns, key="campaign_id")
    bars = chart(
        bar_chart(
            "service-savings", f"Customer-service cost saved on social ({c})",
            [h.campaign(r["campaign_id"]) for r in rows], [r["service_savings"] for r in rows],
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
    open_days = h.open_days(doc)
    labels = [h.marked(d["day"], open_days) for d in days]
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
            "Day (UTC)", "Share of impressions (%)", lambda v: h.pct(v, 1),
            provisional=still_open,
        )
    )  # fmt: skip
    return (
        '<section id="sentiment"><h2>Sentiment and engagement</h2>'
        "<p>Net sentiment = (positive \u2212 negative mentions) ÷ (positive + negative). "
        "Engagement rate = (likes + comments + shares + saves) ÷ impressions.</p>"
        f'<div class="grid">{sentiment}{engagement}</div>'
        f"{h.open_note([d['day'] for d in days], open_days)}</section>"
    )


def _quality_section(doc: dict[str, Any]) -> str:
    q = doc["data_quality"]
    columns: list[h.Column] = [
        ("kpi", "KPI", str),
        ("topics", "Source topics", lambda v: ", ".join(v)),
        ("rejected", "Rejected (dead letters)", h.integer),
        ("late", "Late (after the grace period)", h.integer),
        ("duplicates", "Duplicates (skipped)", h.integer),
    ]
    per_kpi = h.table("quality", q["per_kpi"], columns, key="kpi")
    reasons = [{"reason": k, "letters": v} for k, v in sorted(q["dead_letters_by_reason"].items())]
    by_reason = h.table(
        "dead-letters", reasons,
        [("reason", "Reason", str), ("letters", "Dead letters", h.integer)],
        key="reason",
    )  # fmt: skip
    open_days = h.open_days(doc)
    by_day = h.table(
        "skipped-by-day", q["skipped_by_day"],
        [("day", "Day (event time)", lambda v: f"{v} (provisional)" if v in open_days else v),
         ("late", "Late", h.integer), ("duplicates", "Duplicates", h.integer)],
        key="day",
    )  # fmt: skip
    empty = "" if reasons else "<p>No message was rejected.</p>"
    skipped = (
        by_day if q["skipped_by_day"] else "<p>No event of the period was late or a duplicate.</p>"
    )
    return (
        '<section id="quality"><h2>Data quality</h2>'
        "<p>Rejected messages never count in a KPI: each is kept as a dead letter with its "
        "reason and original bytes (all stored, whatever the period). Late events (older than "
        "the allowed lateness) and duplicates (an event id already counted) are left out too; "
        "each is stored with its campaign and event time, so their counts here cover the "
        "period's days (by event time) for every campaign.</p>"
        # each grid cell a div: a bare table ignores overflow-x and spills over its neighbour
        f'<div class="grid tables"><div>{per_kpi}</div><div>{by_reason}{empty}</div></div>'
        f"<h3>Late and duplicate events per day</h3>{skipped}"
        f"{h.open_note([d['day'] for d in q['skipped_by_day']], open_days)}</section>"
    )


def _notes(doc: dict[str, Any]) -> str:
    model = h.MODELS.get(doc["attribution_model"], doc["attribution_model"])
    notes = [
        f"<sup>*</sup> {h.DASH} marks a ratio that is not defined because its denominator is "
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
