"""The KPI catalogue: every counter and ratio the pipeline reports, declared once.

Snapshots store counters, never ratios, so readers can sum any set of rows and compute the
ratio of the sums (averaging ratios is wrong). Money is integer micro-units of the base
currency so sums are exact; a conversion's fractional attribution credit is micro-units too.

:data:`CATALOGUE` is the one place a KPI is declared: its name, kind, what increments it (a
counter) or its formula (a sum or a ratio), its unit and what it means. Everything else
derives from it or is checked against it by a test: the pane state's and the writer's
columns (:data:`KPI_COUNTERS`, in pane-state order: a new counter goes last), the reader
views' column lists and SQL formulas (``sinks.views``, ``sinks.view_ddl``), the report's and
the demo's ratios (:func:`ratios`), the truth and ``verify`` (which compare every counter),
and the Grafana panels' units (``deploy/grafana/build_dashboards.py``).

Formulas are arithmetic over counters and sums: names, integer literals, ``+``, ``-``,
``*`` and parentheses. A ratio is ``numerator / denominator``, ``None`` (SQL ``NULL``) when
the denominator is 0. The same text is evaluated here and rendered as SQL by ``sinks``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "CATALOGUE",
    "KPI_COUNTERS",
    "MICROS",
    "RATIOS",
    "SUMS",
    "UNITS",
    "Kpi",
    "KpiValues",
    "expand",
    "ratios",
    "sum_value",
]

MICROS: Final = 1_000_000

Kind = Literal["counter", "sum", "ratio"]
UNITS: Final = frozenset(
    {"count", "micros", "credit", "ms", "share", "score", "roi", "multiple", "money", "seconds"}
)
"""``count``: a number of things; ``micros``: base-currency micro-units (shown in base units);
``credit``: attributed conversions in millionths (shown as fractional conversions); ``ms``:
a duration in milliseconds; ``seconds``: a duration per thing (a ratio);
``share``: a fraction of 1 (shown as a percentage); ``score``: from -1 to 1; ``roi``: a
return on spend (a percentage, red below 0); ``multiple``: times the spend; ``money``: base
currency per thing (a ratio of micro-units to a count in micro-units)."""


@dataclass(frozen=True, slots=True)
class Kpi:
    """One KPI.

    ``counter``: stored in every pane (``counted_from`` says what increments it);
    ``sum``: a formula over counters, stored nowhere, summed like a counter;
    ``ratio``: ``numerator / denominator`` of summed counters and sums.
    ``shown_as`` names a micro-unit value's column in base units in the reader views
    (``revenue_micros`` is shown as ``revenue``); ``internal`` marks a counter the views
    fold into others instead of showing it.
    """

    name: str
    kind: Kind
    unit: str
    description: str
    counted_from: str = ""
    formula: str = ""
    denominator: str = ""
    shown_as: str = ""
    internal: bool = False

    @property
    def column(self) -> str:
        """Its column in the reader views."""
        return self.shown_as or self.name


def _counter(
    name: str,
    counted_from: str,
    description: str,
    shown_as: str = "",
    unit: str = "",
    internal: bool = False,
) -> Kpi:
    unit = unit or ("micros" if name.endswith("_micros") else "count")
    return Kpi(
        name,
        "counter",
        unit,
        description,
        counted_from=counted_from,
        shown_as=shown_as,
        internal=internal,
    )


def _sum(name: str, formula: str, unit: str, description: str, shown_as: str = "") -> Kpi:
    return Kpi(name, "sum", unit, description, formula=formula, shown_as=shown_as)


def _ratio(name: str, numerator: str, denominator: str, unit: str, description: str) -> Kpi:
    return Kpi(name, "ratio", unit, description, formula=numerator, denominator=denominator)


_SOCIAL = "social.interactions"
CATALOGUE: Final[tuple[Kpi, ...]] = (
    # Counters, in pane-state order: a new counter goes last (pipeline/panes.py reads a
    # shorter state of an older format with 0 for it).
    _counter("events", "every event folded into the window", "source events counted"),
    _counter("impressions", f"{_SOCIAL} impression (its count)", "times content was shown"),
    _counter(
        "reach",
        f"the user of any {_SOCIAL} event (a distinct-count sketch, not summed)",
        "distinct users reached",
    ),
    _counter("likes", f"{_SOCIAL} like (its count)", "likes"),
    _counter("comments", f"{_SOCIAL} comment (its count)", "comments"),
    _counter("shares", f"{_SOCIAL} share (its count)", "shares"),
    _counter("saves", f"{_SOCIAL} save (its count)", "saves"),
    _counter("clicks", f"{_SOCIAL} click (its count)", "clicks to the site"),
    _counter("follows", f"{_SOCIAL} follow", "new followers"),
    _counter("unfollows", f"{_SOCIAL} unfollow", "followers lost"),
    _counter("mentions_positive", f"{_SOCIAL} mention, sentiment positive", "positive mentions"),
    _counter("mentions_neutral", f"{_SOCIAL} mention, sentiment neutral", "neutral mentions"),
    _counter("mentions_negative", f"{_SOCIAL} mention, sentiment negative", "negative mentions"),
    _counter("service_contacts", f"{_SOCIAL} service_contact", "customer-service contacts"),
    _counter(
        "service_resolved", f"{_SOCIAL} service_contact, resolved", "contacts resolved on social"
    ),
    _counter(
        "service_savings_micros",
        f"{_SOCIAL} service_contact, resolved: call-centre cost - social cost (settings)",
        "after-sales cost saved by answering on social",
        shown_as="service_savings",
    ),
    _counter("visits", "web.events page_view", "site visits"),
    _counter(
        "conversion_credit_micros",
        "web.events conversion: the campaign's attribution share, in millionths",
        "conversions credited by the attribution model",
        shown_as="conversions",
        unit="credit",
    ),
    _counter(
        "revenue_micros",
        "web.events conversion: its revenue x the attribution share",
        "attributed revenue",
        shown_as="revenue",
    ),
    _counter(
        "profit_micros",
        "web.events conversion with a margin: revenue x margin x the attribution share",
        "attributed profit (the views add the declared margin of unmargined revenue)",
        shown_as="profit",
    ),
    _counter("media_spend_micros", "campaign.costs media_spend", "media spend", "media_spend"),
    _counter(
        "effort_spend_micros",
        "campaign.costs staff_hours x staff_hourly_rate (or the setting)",
        "staff effort spent",
        shown_as="effort_spend",
    ),
    _counter("tools_spend_micros", "campaign.costs tools_cost", "tools spend", "tools_spend"),
    _counter(
        "follower_revenue_micros",
        "web.events conversion by a user who followed the campaign before it",
        "attributed revenue from followers",
        shown_as="follower_revenue",
    ),
    _counter(
        "unmargined_revenue_micros",
        "web.events conversion without a margin: its attributed revenue",
        "revenue the views give the campaign's declared margin (sinks/migrations/0010)",
        internal=True,
    ),
    _counter("video_views", f"{_SOCIAL} video_view", "video views"),
    _counter(
        "video_completions",
        f"{_SOCIAL} video_view, completed",
        "video views watched to the end (or the platform's completed-view mark)",
    ),
    _counter(
        "video_watch_ms",
        f"{_SOCIAL} video_view: its watch_seconds in milliseconds (rounded)",
        "time spent watching the videos",
        unit="ms",
    ),
    # Sums: formulas over counters, summed like them.
    _sum("engagements", "likes + comments + shares + saves", "count", "engagements"),
    _sum("net_follower_growth", "follows - unfollows", "count", "net follower growth"),
    _sum(
        "spend_micros",
        "media_spend_micros + effort_spend_micros + tools_spend_micros",
        "micros",
        "spend: media + effort + tools",
        shown_as="spend",
    ),
    # Ratios of sums: never an average of ratios.
    _ratio("engagement_rate", "engagements", "impressions", "share", "engagements per impression"),
    _ratio("applause_rate", "likes", "impressions", "share", "likes per impression"),
    _ratio("conversation_rate", "comments", "impressions", "share", "comments per impression"),
    _ratio("amplification_rate", "shares", "impressions", "share", "shares per impression"),
    _ratio("ctr", "clicks", "impressions", "share", "click-through rate"),
    _ratio(
        "net_sentiment",
        "mentions_positive - mentions_negative",
        "mentions_positive + mentions_negative",
        "score",
        "(positive - negative) / (positive + negative) mentions",
    ),
    _ratio(
        "roi",
        "revenue_micros + service_savings_micros - spend_micros",
        "spend_micros",
        "roi",
        "return on investment: (revenue + service savings - spend) / spend",
    ),
    _ratio(
        "roi_on_profit",
        "profit_micros + service_savings_micros - spend_micros",
        "spend_micros",
        "roi",
        "ROI on profit: (profit + service savings - spend) / spend",
    ),
    _ratio("roas", "revenue_micros", "spend_micros", "multiple", "return on ad spend"),
    _ratio("cpa", "spend_micros", "conversion_credit_micros", "money", "cost per conversion"),
    _ratio("cpc", "spend_micros", "clicks * 1000000", "money", "cost per click"),
    _ratio("cpm", "spend_micros", "impressions * 1000", "money", "cost per 1000 impressions"),
    _ratio(
        "cost_per_engagement",
        "spend_micros",
        "engagements * 1000000",
        "money",
        "cost per engagement",
    ),
    _ratio(
        "conversion_rate",
        "conversion_credit_micros",
        "visits * 1000000",
        "share",
        "credited conversions per visit",
    ),
    _ratio(
        "value_per_follower",
        "follower_revenue_micros",
        "follows * 1000000",
        "money",
        "revenue from followers per new follower",
    ),
    _ratio(
        "cost_per_new_follower",
        "spend_micros",
        "net_follower_growth * 1000000",
        "money",
        "spend per net new follower (negative when more left than came)",
    ),
    _ratio(
        "view_through_rate",
        "video_completions",
        "video_views",
        "share",
        "video views watched to the end",
    ),
    _ratio(
        "watch_seconds_per_view",
        "video_watch_ms",
        "video_views * 1000",
        "seconds",
        "average watch time of a video view",
    ),
    _ratio(
        "resolution_rate",
        "service_resolved",
        "service_contacts",
        "share",
        "customer-service contacts resolved on social",
    ),
)

_BY_NAME: Final = {kpi.name: kpi for kpi in CATALOGUE}
KPI_COUNTERS: Final[tuple[str, ...]] = tuple(k.name for k in CATALOGUE if k.kind == "counter")
"""The stored counters, in pane-state order."""
SUMS: Final[tuple[Kpi, ...]] = tuple(k for k in CATALOGUE if k.kind == "sum")
RATIOS: Final[tuple[Kpi, ...]] = tuple(k for k in CATALOGUE if k.kind == "ratio")

_NAME = re.compile(r"\b[a-z_][a-z0-9_]*\b")
_OPERATOR = re.compile(r"[-+*/]")


def expand(formula: str, name: Callable[[str], str] = lambda n: n) -> str:
    """``formula`` with every sum replaced by its own formula in parentheses, and every
    counter by ``name(counter)``; the whole in parentheses when it is not a single name.
    (``spend_micros`` -> ``(media_spend_micros + effort_spend_micros + tools_spend_micros)``,
    the form the reader views' SQL uses.)"""

    def one(match: re.Match[str]) -> str:
        kpi = _BY_NAME.get(match[0])
        if kpi is None:
            raise ValueError(f"{match[0]!r} is not in the KPI catalogue")
        if kpi.kind == "sum":
            return expand(kpi.formula, name) if _OPERATOR.search(kpi.formula) else name(kpi.name)
        if kpi.kind != "counter":
            raise ValueError(f"{kpi.name!r} is a ratio: formulas use counters and sums")
        return name(kpi.name)

    text = _NAME.sub(one, formula)
    return f"({text})" if _OPERATOR.search(formula) else text


def _compile(formula: str) -> Callable[[Mapping[str, int]], int]:
    """``formula`` (counters, integers, + - * and parentheses) as a function of counters."""
    tree = ast.parse(expand(formula), mode="eval").body
    operators: dict[type, Callable[[int, int], int]] = {
        ast.Add: lambda a, b: a + b,
        ast.Sub: lambda a, b: a - b,
        ast.Mult: lambda a, b: a * b,
    }

    def build(node: ast.expr) -> Callable[[Mapping[str, int]], int]:
        if isinstance(node, ast.Name):
            key = node.id
            return lambda c: c.get(key, 0)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            value: int = node.value
            return lambda c: value
        if isinstance(node, ast.BinOp) and type(node.op) in operators:
            op, left, right = operators[type(node.op)], build(node.left), build(node.right)
            return lambda c: op(left(c), right(c))
        raise ValueError(f"{formula!r}: only counters, integers, + - * and () are allowed")

    return build(tree)


_RATIO_PARTS: Final = tuple(
    (kpi.name, _compile(kpi.formula), _compile(kpi.denominator)) for kpi in RATIOS
)
_SUM_VALUES: Final = {kpi.name: _compile(kpi.formula) for kpi in SUMS}


def sum_value(name: str, counters: Mapping[str, int]) -> int:
    """A catalogue sum (``engagements``, ``spend_micros``, ...) of summed counters."""
    return _SUM_VALUES[name](counters)


_POSITION: Final = {name: i for i, name in enumerate(KPI_COUNTERS)}


class KpiValues(Mapping[str, int]):
    """Every counter of the catalogue, in its order (``ordered``), read by name like a
    dict: the worker writes a row per pane it touches, and a dict of names per row cost
    more than the row itself. Nothing copies ``ordered``: the list must not change later."""

    __slots__ = ("ordered",)

    def __init__(self, ordered: list[int]) -> None:
        if len(ordered) != len(KPI_COUNTERS):
            raise ValueError(f"{len(ordered)} values for {len(KPI_COUNTERS)} KPI counters")
        self.ordered = ordered

    def __getitem__(self, name: str) -> int:
        return self.ordered[_POSITION[name]]

    def __iter__(self) -> Iterator[str]:
        return iter(KPI_COUNTERS)

    def __len__(self) -> int:
        return len(KPI_COUNTERS)

    def __repr__(self) -> str:
        return f"KpiValues({dict(self)!r})"


def ratios(c: Mapping[str, int]) -> dict[str, float | None]:
    """Every ratio of the catalogue from summed counters (missing ones count as 0).

    Sum the counters of any set of windows first, then call this: a ratio of sums, never
    an average of ratios. A zero denominator gives ``None``, not an error or infinity.
    """
    out: dict[str, float | None] = {}
    for name, numerator, denominator in _RATIO_PARTS:
        below = denominator(c)
        out[name] = None if below == 0 else numerator(c) / below
    return out
