"""Store URLs: which ClickHouse to talk to, and how.

Two forms are accepted:

``clickhouse://user:password@host:9000/db?secure=1&ca_certs=/ca.pem&verify=0``
    A ClickHouse server over the native protocol (clickhouse-driver). ``clickhouses://`` is the
    same with TLS; TLS moves the default port from 9000 to 9440. User and password are
    percent-decoded. The database defaults to ``socialroi``. Optional parameters:
    ``secure`` (0/1), ``ca_certs`` (CA bundle file), ``verify`` (0/1, default 1),
    ``connect_timeout`` and ``send_receive_timeout`` (seconds), ``cluster`` (a cluster of the
    server's ``remote_servers``: tables become ReplicatedReplacingMergeTree behind
    Distributed tables, DDL runs ``ON CLUSTER``; see :func:`sinks.migrate.cluster_ddl`).

``chdb://PATH`` (relative to the working directory) or ``chdb:///abs/path``
    The embedded engine (chDB) storing on local disk at PATH. ``?database=NAME`` picks the
    database (default ``socialroi``).

Parsing is pure: no file or network access. Unknown parameters are errors, so a typo never
silently falls back to a default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from pipeline.settings import redact_url
from sinks.errors import InvalidUrl

__all__ = ["DEFAULT_DATABASE", "ChdbUrl", "NativeUrl", "StoreUrl", "parse_store_url"]

DEFAULT_DATABASE = "socialroi"
_NATIVE_PARAMS = frozenset(
    {
        "secure",
        "ca_certs",
        "verify",
        "connect_timeout",
        "send_receive_timeout",
        "database",
        "cluster",
    }
)
_CHDB_PARAMS = frozenset({"database"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True, slots=True)
class NativeUrl:
    """A ClickHouse server reached over the native protocol."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    database: str
    secure: bool = False
    ca_certs: str | None = None
    verify: bool = True
    connect_timeout: float = 10.0
    send_receive_timeout: float = 300.0
    cluster: str | None = None
    kind: Literal["native"] = "native"

    @property
    def display(self) -> str:
        """The URL without its password, for logs and messages."""
        scheme = "clickhouses" if self.secure else "clickhouse"
        cluster = f"?cluster={self.cluster}" if self.cluster else ""
        return f"{scheme}://{self.user}@{self.host}:{self.port}/{self.database}{cluster}"


@dataclass(frozen=True, slots=True)
class ChdbUrl:
    """The embedded chDB engine, storing under ``path``."""

    path: str
    database: str = DEFAULT_DATABASE
    kind: Literal["chdb"] = "chdb"

    @property
    def display(self) -> str:
        """The URL for logs and messages (it holds no secret)."""
        return f"chdb://{self.path}?database={self.database}"


StoreUrl = NativeUrl | ChdbUrl


def _redacted(url: str) -> str:
    """``redact_url`` that also copes with URLs too broken for ``urlsplit`` (a bad port)."""
    try:
        return redact_url(url)
    except ValueError:
        return re.sub(r"://[^@/?#]*@", "://***@", url)


def _flag(name: str, value: str, url: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise InvalidUrl(f"{_redacted(url)}: {name} must be 0 or 1, not {value!r}")


def _seconds(name: str, value: str, url: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise InvalidUrl(f"{_redacted(url)}: {name} must be a positive number of seconds")
    return seconds


def _database(name: str, url: str, what: str = "database") -> str:
    if not name or not all(ch.isalnum() or ch == "_" for ch in name):
        raise InvalidUrl(f"{_redacted(url)}: {what} name {name!r} must be letters, digits and '_'")
    return name


def _params(query: str, allowed: frozenset[str], url: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if key not in allowed:
            raise InvalidUrl(
                f"{_redacted(url)}: unknown parameter {key!r} (known: {', '.join(sorted(allowed))})"
            )
        params[key] = value
    return params


def _parse_chdb(url: str, raw_path: str, query: str) -> ChdbUrl:
    path = unquote(raw_path)
    if not path or path == "/":
        raise InvalidUrl(f"{_redacted(url)}: chdb:// needs a directory, e.g. chdb://.local/chdb")
    params = _params(query, _CHDB_PARAMS, url)
    return ChdbUrl(path=path, database=_database(params.get("database", DEFAULT_DATABASE), url))


def _parse_native(url: str, scheme: str) -> NativeUrl:
    parts = urlsplit(url)
    params = _params(parts.query, _NATIVE_PARAMS, url)
    secure = scheme == "clickhouses"
    if "secure" in params:
        secure = _flag("secure", params["secure"], url)
    try:
        port = parts.port
    except ValueError as exc:
        raise InvalidUrl(f"{_redacted(url)}: bad port") from exc
    if not parts.hostname:
        raise InvalidUrl(f"{_redacted(url)}: missing host")
    path_db = parts.path.strip("/")
    database = path_db or params.get("database", DEFAULT_DATABASE)
    return NativeUrl(
        host=parts.hostname,
        port=port if port is not None else (9440 if secure else 9000),
        user=unquote(parts.username) if parts.username else "default",
        password=unquote(parts.password) if parts.password else "",
        database=_database(database, url),
        secure=secure,
        ca_certs=params.get("ca_certs") or None,
        verify=_flag("verify", params["verify"], url) if "verify" in params else True,
        connect_timeout=_seconds("connect_timeout", params["connect_timeout"], url)
        if "connect_timeout" in params
        else 10.0,
        send_receive_timeout=_seconds("send_receive_timeout", params["send_receive_timeout"], url)
        if "send_receive_timeout" in params
        else 300.0,
        cluster=_database(params["cluster"], url, "cluster") if "cluster" in params else None,
    )


def parse_store_url(url: str) -> StoreUrl:
    """Parse a store URL; raise :class:`InvalidUrl` (password redacted) if it is not valid."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise InvalidUrl(f"{_redacted(url)}: expected clickhouse://... or chdb://...")
    scheme = scheme.lower()
    if scheme == "chdb":
        raw_path, _, query = rest.partition("?")
        return _parse_chdb(url, raw_path, query)
    if scheme in {"clickhouse", "clickhouses"}:
        return _parse_native(url, scheme)
    raise InvalidUrl(
        f"{_redacted(url)}: unknown scheme {scheme!r} (clickhouse, clickhouses or chdb)"
    )
