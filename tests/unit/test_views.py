"""The reader views' SQL (migration 0006) against the formulas and lists in Python."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.normalize import SOCIAL_CHANNELS
from sinks.migrate import load_migrations
from sinks.views import (
    MONEY_EXPRESSIONS,
    RATIO_EXPRESSIONS,
    SOCIAL_CHANNELS_SQL,
    SPEND_BUCKETS,
    VIEW_READERS,
)

TESTS = Path(__file__).resolve().parents[1]
_CREATE_VIEW = re.compile(r"^\s*CREATE\s+VIEW\s+IF\s+NOT\s+EXISTS\s+(\w+)", re.IGNORECASE)
# Views that are internal plumbing, read through other functions (sinks.reader).
INTERNAL_VIEWS = {"kpi_current", "kpi_pane_current", "kpi_pane_latest", "kpi_key_current"}
INTERNAL_VIEWS |= {"campaign_keys"}


def created_views() -> dict[str, str]:
    views = {}
    for migration in load_migrations():
        for statement in migration.statements:
            match = _CREATE_VIEW.match(statement)
            if match:
                views[match.group(1)] = statement
    return views


def test_every_reader_view_has_a_reader_function_and_an_integration_test() -> None:
    views = set(created_views()) - INTERNAL_VIEWS
    assert views == set(VIEW_READERS)
    integration = (TESTS / "integration" / "test_clickhouse_views.py").read_text()
    for view, reader in VIEW_READERS.items():
        assert f"stores, {reader.__name__}" in integration, f"{view}: no integration test"


def test_the_social_channels_in_the_sql_are_the_pipelines() -> None:
    assert set(SOCIAL_CHANNELS_SQL) == SOCIAL_CHANNELS
    assert len(SOCIAL_CHANNELS_SQL) == len(SOCIAL_CHANNELS)
    statement = created_views()["social_traffic_share"]
    listed = re.search(r"channel IN \(([^)]*)\)", statement)
    assert listed is not None
    assert {item.strip().strip("'") for item in listed.group(1).split(",")} == SOCIAL_CHANNELS


def test_the_migration_uses_the_formulas_of_sinks_views() -> None:
    views = created_views()
    for view in ("kpi_campaign_windows", "kpi_channel_windows"):
        for name, expression in {**MONEY_EXPRESSIONS, **RATIO_EXPRESSIONS}.items():
            if name == "resolution_rate":
                continue
            assert f"{expression} AS {name}" in views[view], (view, name)
    for name in ("roi", "roi_on_profit", "roas", "cpa", "spend", "revenue"):
        expression = {**MONEY_EXPRESSIONS, **RATIO_EXPRESSIONS}[name]
        assert f"{expression} AS {name}" in views["roi_by_campaign"], name
    assert f"{RATIO_EXPRESSIONS['resolution_rate']} AS resolution_rate" in views["service_savings"]
    assert (
        f"{RATIO_EXPRESSIONS['value_per_follower']} AS value_per_follower"
        in views["follower_growth"]
    )


def test_every_ratio_is_null_when_its_denominator_is_zero() -> None:
    for name, expression in RATIO_EXPRESSIONS.items():
        assert re.match(r"^if\(.+ = 0, NULL, .+ / .+\)$", expression), name


def test_spend_buckets_in_the_sql_match_the_python_table() -> None:
    statement = created_views()["spend_vs_return"]
    for number, label, upper in SPEND_BUCKETS:
        if upper is None:
            assert f"'{label}'" in statement
        elif upper == 0:
            assert f"spend_bucket = {number}, '{label}'" in statement
        else:
            assert f"< {upper * 1_000_000}, {number}" in statement
            assert f"spend_bucket = {number}, '{label}'" in statement


def test_column_names_are_documented_in_the_migration_header() -> None:
    # the reader views of 0006, and those later migrations add or redefine
    header = "\n".join(
        line
        for m in load_migrations()
        if m.name in ("reader_views", "campaigns", "declared_credits")
        for line in m.path.read_text().splitlines()
        if line.startswith("--")
    )
    for view in VIEW_READERS:
        assert f"-- {view}:" in header, view
    for name in (*MONEY_EXPRESSIONS, *RATIO_EXPRESSIONS):
        assert name in header, name
