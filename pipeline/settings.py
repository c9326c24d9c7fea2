"""The one settings object: every variable the pipeline reads, with its default and meaning.

Built once at the entry point (``Settings()`` reads ``SOCIALROI_*`` variables and an optional
``.env`` file) and passed down; nothing else reads the environment. Nested sections use ``__``
in variable names: ``SOCIALROI_KAFKA__BOOTSTRAP_SERVERS``. ``env_reference()`` lists them all
for ``socialroi --help`` and ``socialroi config``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Self
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "DAILY_PERIOD_SECONDS",
    "AttributionModel",
    "AttributionSettings",
    "ClickHouseSettings",
    "CollectorSettings",
    "CostSettings",
    "KafkaSettings",
    "LimitSettings",
    "LogSettings",
    "MetricsSettings",
    "Settings",
    "TopicSettings",
    "WindowSettings",
    "WorkerSettings",
    "env_reference",
    "redact_url",
    "unknown_variables",
]

ENV_PREFIX = "SOCIALROI_"
# SOCIALROI_* variables that are not settings: those of the scripts in deploy/ (local
# services, compose) and, with the SOCIALROI_TEST_ prefix, of the tests. A test checks that
# every such name the repository uses is listed here.
OTHER_VARIABLES = frozenset(
    {
        "SOCIALROI_CACHE_DIR",
        "SOCIALROI_CH_ADMIN_PASSWORD",
        "SOCIALROI_CH_HTTP_PORT",
        "SOCIALROI_CH_INGEST_PASSWORD",
        "SOCIALROI_CH_INTERSERVER_PORT",
        "SOCIALROI_CH_PORT",
        "SOCIALROI_CH_READER_PASSWORD",
        "SOCIALROI_COLLECTOR_PUBLISH",
        "SOCIALROI_COLLECTOR_TOKEN",
        "SOCIALROI_GRAFANA_ADMIN_PASSWORD",
        "SOCIALROI_GRAFANA_CH_HOST",
        "SOCIALROI_GRAFANA_CH_PASSWORD",
        "SOCIALROI_GRAFANA_CH_PORT",
        "SOCIALROI_GRAFANA_IMAGE",
        "SOCIALROI_GRAFANA_PROMETHEUS_URL",
        "SOCIALROI_IMAGE",
        "SOCIALROI_KAFKA_CONTROLLER_PORT",
        "SOCIALROI_KAFKA_HEAP",
        "SOCIALROI_KAFKA_PORT",
        "SOCIALROI_KAFKA_SASL_PORT",
        "SOCIALROI_PROM_CONFIG",
        "SOCIALROI_PROM_PORT",
        "SOCIALROI_STATE_DIR",
        "SOCIALROI_VENV",
        "SOCIALROI_VERSION",
        "SOCIALROI_ZK_HEAP",
        "SOCIALROI_ZK_PORT",
    }
)
TEST_PREFIX = "SOCIALROI_TEST_"
# Settings that were removed, and why: a deployment still setting one is told, not guessed at.
REMOVED_VARIABLES = {
    name: "the worker writes ClickHouse once per batch, before committing its offsets; "
    "SOCIALROI_WORKER__BATCH_MAX_EVENTS and SOCIALROI_WORKER__BATCH_WITHIN_SECONDS size "
    "and pace the inserts"
    for name in ("SOCIALROI_CLICKHOUSE__BATCH_ROWS", "SOCIALROI_CLICKHOUSE__FLUSH_INTERVAL_SECONDS")
}


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Section):
    bootstrap_servers: str = Field(
        "127.0.0.1:19092", description="Comma-separated host:port list of Kafka brokers."
    )
    security_protocol: str = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    sasl_mechanism: str | None = Field(
        None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 when SASL is used."
    )
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(None, description="SASL password (secret).")
    ssl_cafile: Path | None = Field(None, description="CA bundle to verify the brokers.")
    ssl_certfile: Path | None = Field(None, description="Client certificate (mutual TLS).")
    ssl_keyfile: Path | None = Field(None, description="Client key (mutual TLS).")
    partitions: int = Field(4, ge=1, description="Partitions of the topics the pipeline creates.")
    replication_factor: int = Field(1, ge=1, description="Replication of the created topics.")

    @field_validator("security_protocol")
    @classmethod
    def _protocol(cls, value: str) -> str:
        value = value.upper()
        if value not in {"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"}:
            raise ValueError("must be PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
        return value


class TopicSettings(_Section):
    social: str = Field("social.interactions", description="Social interactions topic.")
    web: str = Field("web.events", description="Web visits and conversions topic.")
    costs: str = Field("campaign.costs", description="Campaign spend and effort topic.")
    campaigns: str = Field("campaign.meta", description="Campaign metadata topic.")
    dead_letters: str = Field(
        "socialroi.dead-letters", description="Invalid messages, with reason and original bytes."
    )
    late: str = Field("socialroi.late-events", description="Events later than allowed lateness.")

    def ingest(self) -> tuple[str, str, str, str]:
        """The topics producers write to, in contract order."""
        return (self.social, self.web, self.costs, self.campaigns)


DAILY_PERIOD_SECONDS: Final = 86400
"""The period of the reader views that total days (``roi_by_campaign``, ``spend_vs_return``,
``social_traffic_share``, ``follower_growth``, ``service_savings``) and of the board report's
daily series: their SQL reads the one-day tumbling windows."""


class WindowSettings(_Section):
    tumbling_seconds: tuple[int, ...] = Field(
        (60, 3600, DAILY_PERIOD_SECONDS),
        description="Tumbling window sizes in seconds (JSON list); must include "
        "report_period_seconds.",
    )
    hopping: tuple[tuple[int, int], ...] = Field(
        ((86400, 3600), (604800, 86400)),
        description="Rolling windows as [size, step] pairs in seconds (JSON list of pairs).",
    )
    allowed_lateness_seconds: int = Field(
        600,
        ge=0,
        description="How far behind a partition's newest event time an event may arrive "
        "and still update its window; later events go to the late topic.",
    )
    max_future_skew_seconds: int = Field(
        300, ge=0, description="Events stamped further ahead of the clock are clock skew."
    )
    report_period_seconds: int = Field(
        DAILY_PERIOD_SECONDS,
        description="The tumbling window the daily reader views, the board report and "
        f"`socialroi report` read: {DAILY_PERIOD_SECONDS}, the one-day windows the views are "
        "built for, or 0 for a worker whose store no report reads (benchmarks): the daily "
        "views then stay empty.",
    )

    @model_validator(mode="after")
    def _report_period(self) -> Self:
        # Without this, dropping 86400 from the tumbling sizes empties the daily views and
        # the reports without a word.
        period = self.report_period_seconds
        if period not in (0, DAILY_PERIOD_SECONDS):
            raise ValueError(
                f"SOCIALROI_WINDOWS__REPORT_PERIOD_SECONDS is {period}: the reader views are "
                f"built for daily periods, so it must be {DAILY_PERIOD_SECONDS} (or 0: no "
                "reports)"
            )
        if period and period not in self.tumbling_seconds:
            sizes = ",".join(map(str, self.tumbling_seconds))
            raise ValueError(
                f"SOCIALROI_WINDOWS__TUMBLING_SECONDS [{sizes}] lacks the report period "
                f"{period}: the daily views and the reports read those windows (add "
                f"{period}, or set SOCIALROI_WINDOWS__REPORT_PERIOD_SECONDS=0 if no report "
                "reads this store)"
            )
        return self


class AttributionModel(StrEnum):
    LAST_TOUCH = "last_touch"
    FIRST_TOUCH = "first_touch"
    LINEAR = "linear"
    TIME_DECAY = "time_decay"
    POSITION_BASED = "position_based"


class AttributionSettings(_Section):
    model: AttributionModel = Field(
        AttributionModel.LAST_TOUCH, description="Model that credits conversions."
    )
    lookback_seconds: int = Field(
        7 * 86400, ge=1, description="Touchpoints older than this before a conversion are ignored."
    )
    half_life_seconds: int = Field(86400, ge=1, description="Half-life of the time-decay model.")
    engagements_are_touchpoints: bool = Field(
        True, description="Count likes, comments, shares and saves as touchpoints, not only clicks."
    )


class CostSettings(_Section):
    base_currency: str = Field("EUR", description="Currency every money figure is reported in.")
    rates_file: Path | None = Field(
        None,
        description="CSV 'currency,rate' of base-currency units per unit of each currency.",
    )
    staff_hourly_rate: float = Field(
        60.0, ge=0, description="Cost of one staff hour, when a cost event gives hours only."
    )
    call_centre_contact_cost: float = Field(
        6.0, ge=0, description="Cost of one customer contact handled by the call centre."
    )
    social_contact_cost: float = Field(
        2.0, ge=0, description="Cost of one customer contact handled on social media."
    )


class LimitSettings(_Section):
    max_message_bytes: int = Field(
        65536, ge=256, description="Messages larger than this are dead-lettered as oversize."
    )


class ClickHouseSettings(_Section):
    url: SecretStr = Field(
        SecretStr("chdb://.local/chdb"),
        description="clickhouse://user:password@host:9000/db (native protocol; "
        "clickhouses:// or ?secure=1 for TLS, ?ca_certs=FILE, ?cluster=NAME for replicated "
        "tables ON CLUSTER) or chdb://PATH for the embedded engine (the default, on local "
        "disk).",
    )
    retry_initial_seconds: float = Field(0.5, gt=0, description="First back-off after a failure.")
    retry_max_seconds: float = Field(30.0, gt=0, description="Longest back-off between retries.")
    raw_retention_days: int = Field(
        400,
        ge=0,
        description="Days the raw event archive keeps (whole months are dropped by "
        "`socialroi migrate`); 0 keeps everything.",
    )


class MetricsSettings(_Section):
    host: str = Field("127.0.0.1", description="Address of /metrics, /healthz and /readyz.")
    port: int = Field(9464, ge=0, le=65535, description="Port of the metrics server (0: off).")
    liveness_seconds: float = Field(
        120.0,
        gt=0,
        description="/healthz answers 503 once the process's event loop has not turned for "
        "this long, or (worker) messages have waited this long with no batch taking any; "
        "a ClickHouse outage does not count (readiness reports it), a rebalance or table "
        "recovery that lasts this long does.",
    )


class WorkerSettings(_Section):
    app_id: str = Field("socialroi", description="Faust app id: consumer group and state prefix.")
    batch_max_events: int = Field(
        8000,
        ge=1,
        description="Events handled in one batch (fewer waits for Kafka and ClickHouse per "
        "event; batch_within_seconds bounds the latency).",
    )
    batch_within_seconds: float = Field(0.5, gt=0, description="Longest wait to fill a batch.")
    data_dir: Path = Field(Path(".local/worker"), description="Worker's local state directory.")
    store: str = Field(
        "rocksdb",
        pattern=r"^(rocksdb|memory)$",
        description="Where table state lives: rocksdb (files under the data dir, so a "
        "restart reads only the changelog's tail) or memory (tests: the whole changelog "
        "is read again at every assignment).",
    )
    stage: str = Field(
        "all",
        pattern=r"^(all|ingest|aggregate)$",
        description="Which stages this process runs: all, or one of ingest (validation, "
        "dedup, attribution) and aggregate (panes, finality), each in its own process and "
        "consumer group, so the two use two cores (they talk only through Kafka).",
    )
    instance_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._-]{1,200}$",
        description="Static consumer group membership id: stable across this worker's "
        "restarts, unique in the group (a restart within the session timeout keeps the "
        "partitions, no rebalance). Default: host name + a hash of the data dir.",
    )

    @property
    def group_id(self) -> str:
        """The consumer group (and Faust app id) of this process: the app id when it runs
        both stages, else the app id and its stage. The state's changelog topics keep the
        app id's name whichever process runs the stage."""
        return self.app_id if self.stage == "all" else f"{self.app_id}-{self.stage}"


class CollectorSettings(_Section):
    host: str = Field("127.0.0.1", description="Address the HTTP collector listens on.")
    port: int = Field(8088, ge=0, le=65535, description="Port of the HTTP collector.")
    token: SecretStr | None = Field(
        None, description="Bearer token the collector requires (required to start it)."
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest accepted request body.")


class LogSettings(_Section):
    level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR.")
    json_logs: bool = Field(False, description="One JSON object per log line (production).")
    repeat_summary_seconds: float = Field(
        30.0,
        ge=0,
        description="A WARNING/ERROR that repeats is logged once, then summarised this often "
        "while it repeats (0: log every repeat).",
    )
    repeat_quiet_seconds: float = Field(
        10.0,
        gt=0,
        description="A repeated message not seen for this long is logged as recovered.",
    )


class Settings(BaseSettings):
    """Everything configurable. Frozen: build it once, pass it down."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        frozen=True,
        extra="ignore",
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    windows: WindowSettings = Field(default_factory=WindowSettings)
    attribution: AttributionSettings = Field(default_factory=AttributionSettings)
    costs: CostSettings = Field(default_factory=CostSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    clickhouse: ClickHouseSettings = Field(default_factory=ClickHouseSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    collector: CollectorSettings = Field(default_factory=CollectorSettings)
    log: LogSettings = Field(default_factory=LogSettings)


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, safe for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username or ''}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _describe_default(value: Any) -> str:
    if isinstance(value, SecretStr):
        return redact_url(value.get_secret_value()) if value.get_secret_value() else "(unset)"
    if value is None:
        return "(unset)"
    if isinstance(value, tuple):
        return str(list(value)).replace("(", "[").replace(")", "]").replace("'", '"')
    return str(value)


def env_reference() -> list[tuple[str, str, str]]:
    """Every environment variable as (name, default, description), in declaration order."""
    rows: list[tuple[str, str, str]] = []
    for section_name, section in Settings.model_fields.items():
        model = section.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        for field_name, field in model.model_fields.items():
            name = f"{ENV_PREFIX}{section_name}__{field_name}".upper()
            rows.append((name, _describe_default(field.default), field.description or ""))
    return rows


def unknown_variables(names: Iterable[str]) -> list[str]:
    """A message for every ``SOCIALROI_*`` name in ``names`` that is no setting (nor one of
    the scripts' or tests' own variables), with the setting it most likely meant: a
    mistyped setting would otherwise be ignored, and its default used in silence."""
    settings = [name for name, _, _ in env_reference()]
    squeezed = {name.replace("_", ""): name for name in settings}
    problems = []
    for name in sorted(set(names)):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper.startswith(TEST_PREFIX):
            continue
        if upper in settings or upper in OTHER_VARIABLES:
            continue
        if upper in REMOVED_VARIABLES:
            problems.append(f"{name} is no longer a setting: {REMOVED_VARIABLES[upper]}")
            continue
        guess = squeezed.get(upper.replace("_", "")) or next(
            iter(difflib.get_close_matches(upper, settings, n=1, cutoff=0.75)), None
        )
        hint = f"; did you mean {guess}?" if guess else " (socialroi --help lists them all)"
        problems.append(f"{name} names no setting{hint}")
    return problems
