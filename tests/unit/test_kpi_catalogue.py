"""The KPI catalogue is the one place a KPI is declared: everything else derives from it or
is checked against it here (a newcomer who adds a KPI learns from these tests what else
must follow)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from pipeline.kpi import CATALOGUE, KPI_COUNTERS, RATIOS, SUMS, UNITS, expand, ratios, sum_value
from pipeline.panes import PANE_COUNTERS
from sinks.migrate import load_migrations
from sinks.tables import KPI_COLUMNS
from sinks.views import MONEY_EXPRESSIONS, RATIO_EXPRESSIONS

ROOT = Path(__file__).resolve().parents[2]
# The reader views that show every KPI of the catalogue, window by window.
WINDOW_VIEWS = ("kpi_campaign_windows", "kpi_channel_windows")


def newest_views() -> dict[str, str]:
    """Each view's newest definition in the migrations."""
    views = {}
    for migration in load_migrations():
        for statement in migration.statements:
            match = re.match(r"\s*CREATE VIEW IF NOT EXISTS (\w+) AS", statement)
            if match:
                views[match[1]] = statement
    return views


def test_every_entry_is_complete_and_named_once() -> None:
    names = [kpi.name for kpi in CATALOGUE]
    assert len(names) == len(set(names))
    columns = [kpi.column for kpi in CATALOGUE]
    assert len(columns) == len(set(columns))
    for kpi in CATALOGUE:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", kpi.name), kpi.name
        assert kpi.unit in UNITS, kpi.name
        assert kpi.description, kpi.name
        if kpi.kind == "counter":
            assert kpi.counted_from and not kpi.formula, kpi.name
        else:
            assert kpi.formula and not kpi.counted_from, kpi.name
        assert (kpi.kind == "ratio") == bool(kpi.denominator), kpi.name
        # micro-units are shown in base units under a name of their own
        shown = kpi.unit in ("micros", "credit") and not kpi.internal
        assert bool(kpi.shown_as) == shown, kpi.name
        assert kpi.name.endswith("_micros") == (kpi.unit in ("micros", "credit")), kpi.name


def test_formulas_use_counters_and_sums_only() -> None:
    assert expand("spend_micros") == (
        "(media_spend_micros + effort_spend_micros + tools_spend_micros)"
    )
    assert expand("engagements * 1000000") == "((likes + comments + shares + saves) * 1000000)"
    with pytest.raises(ValueError, match="not in the KPI catalogue"):
        expand("likes + hearts")
    with pytest.raises(ValueError, match="is a ratio"):
        expand("ctr * 2")
    for kpi in (*SUMS, *RATIOS):
        expand(kpi.formula)
        expand(kpi.denominator or "0")


def test_ratios_and_sums_follow_the_formulas() -> None:
    counters = {name: 3 + i for i, name in enumerate(KPI_COUNTERS)}
    assert sum_value("engagements", counters) == sum(
        counters[n] for n in ("likes", "comments", "shares", "saves")
    )
    assert set(ratios(counters)) == {kpi.name for kpi in RATIOS}
    for kpi in RATIOS:
        # the Python value is the SQL text evaluated with the same counters
        numerator = eval(expand(kpi.formula), {}, dict(counters))
        denominator = eval(expand(kpi.denominator), {}, dict(counters))
        assert ratios(counters)[kpi.name] == numerator / denominator, kpi.name


def test_the_pane_state_and_the_writer_store_every_counter_in_order() -> None:
    assert tuple(n for n in KPI_COUNTERS if n != "reach") == PANE_COUNTERS
    stored = KPI_COLUMNS[KPI_COLUMNS.index("version") + 1 : KPI_COLUMNS.index("hopping_seconds")]
    assert stored == KPI_COUNTERS


def test_the_window_views_show_every_kpi_with_the_catalogue_formula() -> None:
    views = newest_views()
    for view in WINDOW_VIEWS:
        body = views[view]
        for kpi in CATALOGUE:
            if kpi.internal or kpi.name == "reach":
                continue
            if kpi.name in RATIO_EXPRESSIONS:
                assert f"{RATIO_EXPRESSIONS[kpi.name]} AS {kpi.name}" in body, (view, kpi.name)
            elif kpi.column in MONEY_EXPRESSIONS:
                assert f"{MONEY_EXPRESSIONS[kpi.column]} AS {kpi.column}" in body, (view, kpi)
            else:
                assert re.search(rf"\b{kpi.column}\b", body), (view, kpi.name)
    assert "reach_sum" in views["kpi_campaign_windows"]


def builder() -> ModuleType:
    path = ROOT / "deploy" / "grafana" / "build_dashboards.py"
    spec = importlib.util.spec_from_file_location("build_dashboards", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_grafana_shows_each_kpi_in_its_catalogue_unit() -> None:
    build = builder()
    assert set(build.KIND_OF_UNIT) == UNITS
    kinds = build.units("EUR")
    for kpi in CATALOGUE:
        kind = build.COLUMN_KINDS[kpi.column]
        assert kind == build.KIND_OF_UNIT[kpi.unit] and kind in kinds, kpi.name
    assert kinds["percent"]["unit"] == "percentunit"  # a share of 0.05 reads 5 %
    assert kinds["money"]["unit"] == "currencyEUR"


# `t["likes"] + t["comments"]`: a formula spelt out again instead of read from the catalogue
_INLINE = re.compile(r"\[\s*['\"](\w+)['\"]\s*\]\s*[-+*/]\s*\w+\[\s*['\"](\w+)['\"]\s*\]")


def test_no_module_spells_a_kpi_formula_again() -> None:
    counters = set(KPI_COUNTERS)
    offenders = [
        f"{path.relative_to(ROOT)}: {match[0]}"
        for package in ("streams", "sinks", "deploy")
        for path in sorted((ROOT / package).rglob("*.py"))
        for match in _INLINE.finditer(path.read_text(encoding="utf-8"))
        if {match[1], match[2]} <= counters
    ]
    assert offenders == []


def test_grafana_panels_take_their_ratios_from_the_catalogue() -> None:
    """A panel's ratio column is ``ratio(name, ...)`` of deploy/grafana/build_dashboards.py:
    the catalogue's formula over the panel's inputs; no panel writes one out."""
    source = (ROOT / "deploy" / "grafana" / "build_dashboards.py").read_text(encoding="utf-8")
    assert len(re.findall(r"= 0, NULL", source)) == 1  # the one in ratio()
    module = builder()
    cpc = module.ratio("cpc", spend_micros="s", clicks="c")
    # spend in base units per click: (s * 10^6) / (c * 10^6)
    assert cpc == "if((c * 1000000) = 0, NULL, ((s * 1000000)) / (c * 1000000)) AS cpc"
    with pytest.raises(KeyError):
        module.ratio("roi", revenue_micros="r")  # an input the formula needs is missing
