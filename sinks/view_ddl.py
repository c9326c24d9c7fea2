"""The DDL of a migration that adds KPIs, generated from the KPI catalogue.

Adding a counter to :data:`pipeline.kpi.CATALOGUE` changes the table the worker writes
(``kpi_panes``) and every view that lists the counters: ``kpi_pane_latest`` (the newest row
of each pane), ``kpi_key_current`` (windows per campaign key, hopping ones composed),
``kpi_current`` (per declared campaign) and the window views readers use,
``kpi_campaign_windows`` and ``kpi_channel_windows`` (every counter, sum and ratio of the
catalogue). :func:`new_migration` writes those statements for the catalogue as it is now;
``socialroi migrate --new NAME`` saves them as the next numbered migration file, which is
then frozen like any other.

The statements apply everywhere migrations do:

* ``ALTER TABLE kpi_panes ADD COLUMN IF NOT EXISTS c Int64 DEFAULT 0`` for each counter the
  earlier migrations lack: :func:`sinks.migrate.apply_migrations` runs it as a plain
  ``ADD COLUMN`` where the column is missing (ClickHouse 18.16 has no ``IF NOT EXISTS``
  there), ``ON CLUSTER`` on the replicated local tables of a cluster, and re-creates the
  ``Distributed`` table in front of them; rows written before read 0;
* each view is dropped (``DROP TABLE IF EXISTS``: 18.16 has no ``DROP VIEW``) and created
  anew, in the order they read each other; on a cluster both run ``ON CLUSTER``.

A migrator running an older migration at the same moment may re-create a view's older
definition between the drop and the create; it re-creates the new one when it reaches this
migration, so every migrator that finishes leaves the new definitions. Run ``socialroi
migrate`` before starting workers of a release that adds counters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from pipeline.kpi import CATALOGUE, KPI_COUNTERS
from sinks.errors import MigrationError
from sinks.migrate import MIGRATIONS_DIR, Migration, load_migrations, split_statements
from sinks.views import MONEY_EXPRESSIONS, RATIO_EXPRESSIONS

__all__ = [
    "GENERATED_VIEWS",
    "kpi_pane_columns",
    "new_migration",
    "view_statements",
    "write_new_migration",
]

GENERATED_VIEWS: Final[tuple[str, ...]] = (
    "kpi_pane_latest",
    "kpi_key_current",
    "kpi_current",
    "kpi_campaign_windows",
    "kpi_channel_windows",
)
"""The views a generated migration re-creates, in the order they read each other."""

_NAME: Final = re.compile(r"^[a-z0-9_]+$")
_KEYS: Final = ("campaign_id", "channel", "window_kind", "window_seconds", "window_start")
_PROFIT, _UNMARGINED = "profit_micros", "unmargined_revenue_micros"
# Ertl's estimate over a composed window's merged HyperLogLog registers (pipeline.hll).
_COMPOSED_REACH: Final = """        if(
            max(length(reach_users) = 0 AND length(reach_codes) > 0) = 0,
            toInt64(uniqExactArray(reach_users)),
            toInt64(round(16777216 / (2 * ln(2)) / (
                arraySum(arrayMap(c -> exp2(-toFloat64(c % 64)), register_maxima))
                + 4096 * (unset_share + arraySum(arrayMap(
                    k -> pow(unset_share, exp2(k + 1)) * exp2(k), range(64)
                )))
            ))
        )) AS reach,
        arrayReverseSort(groupArrayArray(reach_codes)) AS merged_codes,
        arrayFilter(
            (code, before) -> intDiv(code, 64) != intDiv(before, 64),
            merged_codes,
            arrayPopBack(arrayPushFront(merged_codes, toUInt32(4294967295)))
        ) AS register_maxima,
        (4096 - length(register_maxima)) / 4096 AS unset_share,"""
_FINAL_WATERMARK: Final = """        toUInt8((hop_start + hop_seconds) * 1000 <= (
            SELECT if(count() >= max(partitions), min(latest), 0) FROM (
                SELECT partition, max(partitions) AS partitions, max(watermark_ms) AS latest
                FROM kpi_watermarks
                GROUP BY partition
            )
        )) AS is_final,"""
# UInt8 on every engine: current ones type kpi_current's is_final Nullable, and fix a
# view's column types when it is created.
_FINAL: Final = "toUInt8(ifNull({}, 0))"
# Profit with the declared margin of unmargined revenue, rounded half up to the micro-unit.
_DECLARED_PROFIT: Final = (
    "sum(own_profit_micros + if(margin_ppm > 0, intDiv(unmargined_micros, 1000000) * "
    "margin_ppm + intDiv(unmargined_micros % 1000000 * margin_ppm + 500000, 1000000), 0)) "
    "AS profit_micros"
)


def _lines(items: Iterable[str], indent: int) -> str:
    return "\n".join(" " * indent + item + "," for item in items)


def _pane_latest(counters: tuple[str, ...]) -> str:
    newest = [f"argMax({name}, version) AS {name}" for name in counters]
    sketch = ("hopping_seconds", "reach_users", "reach_codes")
    return f"""CREATE VIEW IF NOT EXISTS kpi_pane_latest AS
SELECT
{_lines(_KEYS, 4)}
    argMax(window_end, version) AS window_end,
    argMax(is_final, version) AS is_final,
    max(version) AS latest_version,
{_lines(newest, 4)}
{_lines((f"argMax({n}, version) AS {n}" for n in sketch), 4)}
    argMax(updated_at, version) AS updated_at
FROM kpi_panes
GROUP BY campaign_id, channel, window_kind, window_seconds, window_start"""


def _key_current(counters: tuple[str, ...]) -> str:
    summed = [name for name in counters if name != "reach"]
    return f"""CREATE VIEW IF NOT EXISTS kpi_key_current AS
SELECT
{_lines(_KEYS, 4)}
    window_end,
    is_final,
    latest_version AS version,
{_lines(counters, 4)}
    updated_at
FROM kpi_pane_latest
WHERE window_kind = 'tumbling'
UNION ALL
SELECT
{_lines(_KEYS, 4)}
    window_end,
    is_final,
    version,
{_lines(counters, 4)}
    updated_at
FROM
(
    SELECT
        campaign_id,
        channel,
        'hopping' AS window_kind,
        hop_seconds AS window_seconds,
        toDateTime(hop_start, 'UTC') AS window_start,
        toDateTime(hop_start + hop_seconds, 'UTC') AS window_end,
{_FINAL_WATERMARK}
        sum(latest_version) + is_final AS version,
{_lines((f"sum({name}) AS {name}" for name in summed), 8)}
{_COMPOSED_REACH}
        max(updated_at) AS updated_at
    FROM
    (
        SELECT
            campaign_id,
            channel,
            hop_seconds,
            -- every start of a hopping window that covers this pane
            toUInt32(toUInt32(window_start)
                - arrayJoin(range(toUInt32(intDiv(hop_seconds, window_seconds)))) * window_seconds
            ) AS hop_start,
            latest_version,
{_lines(summed, 12)}
            reach_users,
            reach_codes,
            updated_at
        FROM kpi_pane_latest
        ARRAY JOIN hopping_seconds AS hop_seconds
    )
    GROUP BY campaign_id, channel, hop_seconds, hop_start
)"""


def _current(counters: tuple[str, ...]) -> str:
    def outer(name: str) -> str:
        if name == _PROFIT:
            return _DECLARED_PROFIT
        if name == _UNMARGINED:
            return f"sum(unmargined_micros) AS {_UNMARGINED}"
        return f"sum({name}) AS {name}"

    def renamed(name: str) -> str:
        if name == _PROFIT:
            return f"{_PROFIT} AS own_profit_micros"
        if name == _UNMARGINED:
            return f"{_UNMARGINED} AS unmargined_micros"
        return name

    window = ("window_end", "is_final", "version")
    return f"""CREATE VIEW IF NOT EXISTS kpi_current AS
SELECT
    if(declared_id = '', owner_key, declared_id) AS campaign_id,
{_lines(_KEYS[1:], 4)}
    any(window_end) AS window_end,
    min(is_final) AS is_final,
    sum(version) AS version,
{_lines(map(outer, counters), 4)}
    max(updated_at) AS updated_at
FROM
(
    SELECT
{_lines((*_KEYS[1:], *window), 8)}
{_lines(map(renamed, counters), 8)}
        updated_at,
        if(owner = '', campaign_key, owner) AS owner_key
    FROM
    (
        SELECT
            lower(campaign_id) AS campaign_key,
{_lines((*_KEYS[1:], *window), 12)}
{_lines(counters, 12)}
            updated_at
        FROM kpi_key_current
    ) AS by_key
    ANY LEFT JOIN
    (
        SELECT key AS campaign_key, owner FROM campaign_keys
    ) AS key_owners USING campaign_key
) AS by_owner
ANY LEFT JOIN
(
    SELECT campaign_key AS owner_key, campaign_id AS declared_id, margin_ppm FROM campaign_directory
) AS declared USING owner_key
GROUP BY campaign_id, channel, window_kind, window_seconds, window_start"""


def _shown(reach: str) -> list[str]:
    """A window view's KPI columns: counts and count sums, money, then ratios."""
    counts, money = [], []
    for kpi in CATALOGUE:
        if kpi.internal or kpi.kind == "ratio":
            continue
        if kpi.name == "reach":
            counts.append(reach)
        elif kpi.column in MONEY_EXPRESSIONS:
            money.append(f"{MONEY_EXPRESSIONS[kpi.column]} AS {kpi.column}")
        elif kpi.kind == "sum":
            counts.append(f"{kpi.formula} AS {kpi.name}")
        else:
            counts.append(kpi.name)
    ratios = [f"{expression} AS {name}" for name, expression in RATIO_EXPRESSIONS.items()]
    return [*counts, *money, *ratios]


def _campaign_windows(counters: tuple[str, ...]) -> str:
    summed = [f"sum({name}) AS {name}" for name in counters if name != "reach"]
    return f"""CREATE VIEW IF NOT EXISTS kpi_campaign_windows AS
SELECT
    campaign_id,
    window_kind,
    window_seconds,
    window_start,
    window_end,
    is_final,
    channels,
{_lines(_shown("reach_sum"), 4).rstrip(",")}
FROM
(
    SELECT
        campaign_id,
        window_kind,
        window_seconds,
        window_start,
        any(window_end) AS window_end,
        {_FINAL.format("min(is_final)")} AS is_final,
        count() AS channels,
{_lines(summed, 8)}
        sum(reach) AS reach_sum
    FROM kpi_current
    GROUP BY campaign_id, window_kind, window_seconds, window_start
)"""


def _channel_windows() -> str:
    return f"""CREATE VIEW IF NOT EXISTS kpi_channel_windows AS
SELECT
{_lines(_KEYS, 4)}
    window_end,
    {_FINAL.format("is_final")} AS is_final,
{_lines(_shown("reach"), 4).rstrip(",")}
FROM kpi_current"""


def view_statements(counters: tuple[str, ...] = KPI_COUNTERS) -> dict[str, str]:
    """The CREATE VIEW statement of every view in :data:`GENERATED_VIEWS` for ``counters``
    (by default the catalogue's), without a terminating ``;``."""
    return {
        "kpi_pane_latest": _pane_latest(counters),
        "kpi_key_current": _key_current(counters),
        "kpi_current": _current(counters),
        "kpi_campaign_windows": _campaign_windows(counters),
        "kpi_channel_windows": _channel_windows(),
    }


def kpi_pane_columns(migrations: Iterable[Migration]) -> list[str]:
    """The columns of ``kpi_panes`` once ``migrations`` have run (created, then added)."""
    columns: list[str] = []
    for migration in migrations:
        for statement in migration.statements:
            created = re.match(r"\s*CREATE TABLE IF NOT EXISTS kpi_panes\s*\((.*)\)\s*ENGINE",
                               statement, re.S)  # fmt: skip
            if created:
                columns = [line.split()[0] for line in created[1].splitlines() if line.strip()]
            added = re.match(r"\s*ALTER TABLE kpi_panes ADD COLUMN IF NOT EXISTS (\w+)", statement)
            if added and added[1] not in columns:
                columns.append(added[1])
    return columns


def new_migration(name: str, migrations: Iterable[Migration]) -> str:
    """The text of a migration that brings the schema after ``migrations`` to the catalogue:
    the counters ``kpi_panes`` lacks, and every generated view anew."""
    missing = [c for c in KPI_COUNTERS if c not in kpi_pane_columns(migrations)]
    shown = ", ".join(k.column for k in CATALOGUE if not k.internal)
    header = [
        f"-- {name}: generated from the KPI catalogue (pipeline/kpi.py) by",
        "-- `socialroi migrate --new`; frozen once released, like every migration.",
        *_wrapped(f"Adds to kpi_panes: {', '.join(missing) or 'no counter'} (older rows: 0)."),
        *_wrapped("Re-creates, in this order: " + ", ".join(GENERATED_VIEWS) + "."),
        *_wrapped(f"kpi_campaign_windows and kpi_channel_windows show every KPI: {shown}."),
    ]
    statements = [
        f"ALTER TABLE kpi_panes ADD COLUMN IF NOT EXISTS {counter} Int64 DEFAULT 0"
        for counter in missing
    ]
    for view, create in view_statements().items():
        statements += [f"DROP TABLE IF EXISTS {view}", create]
    return "\n".join(header) + "\n" + "".join(f"{s};\n\n" for s in statements).rstrip() + "\n"


def _wrapped(text: str, width: int = 92) -> list[str]:
    """``text`` as ``--`` comment lines, continuation lines indented."""
    lines, line = [], "--"
    for word in text.split(" "):
        if len(line) + 1 + len(word) > width:
            lines.append(line)
            line = "--  "
        line = f"{line} {word}"
    return [*lines, line]


def write_new_migration(name: str, directory: Path = MIGRATIONS_DIR) -> Path:
    """Save :func:`new_migration` as the next numbered file in ``directory``.

    Raises :class:`MigrationError` for a name that is not lower case letters, digits and
    ``_``, or when the newest definitions already match the catalogue (nothing to add).
    """
    if not _NAME.match(name):
        raise MigrationError(f"migration name {name!r}: use lower case letters, digits and _")
    migrations = load_migrations(directory)
    generated = {view: split_statements(f"{sql};")[0] for view, sql in view_statements().items()}
    if _current_definitions(migrations) == generated and not [
        c for c in KPI_COUNTERS if c not in kpi_pane_columns(migrations)
    ]:
        raise MigrationError("the migrations already match the KPI catalogue: nothing to add")
    number = len(migrations) + 1
    path = directory / f"{number:04d}_{name}.sql"
    path.write_text(new_migration(name, migrations))
    return path


def _current_definitions(migrations: Iterable[Migration]) -> dict[str, str]:
    newest: dict[str, str] = {}
    for migration in migrations:
        for statement in migration.statements:
            match = re.match(r"\s*CREATE VIEW IF NOT EXISTS (\w+) AS", statement)
            if match and match[1] in GENERATED_VIEWS:
                newest[match[1]] = statement
    return newest
