"""Store URLs: what each form means, and that a password never reaches a message."""

from __future__ import annotations

import pytest

from sinks.backends import open_backend, parse_version, sql_string
from sinks.embedded import ChdbBackend
from sinks.errors import InvalidUrl
from sinks.native import NativeBackend
from sinks.urls import ChdbUrl, NativeUrl, parse_store_url


def test_native_url_with_everything() -> None:
    url = parse_store_url("clickhouse://ingest:p%40ss@db.example:9001/kpis")
    assert url == NativeUrl(
        host="db.example", port=9001, user="ingest", password="p@ss", database="kpis"
    )
    assert url.display == "clickhouse://ingest@db.example:9001/kpis"


def test_native_defaults() -> None:
    url = parse_store_url("clickhouse://localhost")
    assert isinstance(url, NativeUrl)
    assert (url.port, url.user, url.password, url.database, url.secure) == (
        9000,
        "default",
        "",
        "socialroi",
        False,
    )


@pytest.mark.parametrize(
    "text", ["clickhouses://h/db", "clickhouse://h/db?secure=1", "CLICKHOUSES://h/db"]
)
def test_tls_moves_the_default_port(text: str) -> None:
    url = parse_store_url(text)
    assert isinstance(url, NativeUrl)
    assert url.secure and url.port == 9440


def test_tls_options() -> None:
    url = parse_store_url(
        "clickhouses://h:9999/db?ca_certs=/etc/ca.pem&verify=0&connect_timeout=2.5"
        "&send_receive_timeout=30"
    )
    assert isinstance(url, NativeUrl)
    assert (url.port, url.ca_certs, url.verify) == (9999, "/etc/ca.pem", False)
    assert (url.connect_timeout, url.send_receive_timeout) == (2.5, 30.0)


def test_secure_0_overrides_the_scheme() -> None:
    url = parse_store_url("clickhouses://h/db?secure=0")
    assert isinstance(url, NativeUrl)
    assert not url.secure and url.port == 9000


@pytest.mark.parametrize(
    ("text", "path", "database"),
    [
        ("chdb://.local/chdb", ".local/chdb", "socialroi"),
        ("chdb:///var/lib/socialroi", "/var/lib/socialroi", "socialroi"),
        ("chdb://data?database=other_db", "data", "other_db"),
        ("chdb://with%20space/x", "with space/x", "socialroi"),
    ],
)
def test_chdb_urls(text: str, path: str, database: str) -> None:
    assert parse_store_url(text) == ChdbUrl(path=path, database=database)


@pytest.mark.parametrize(
    "text",
    [
        "localhost:9000",
        "postgres://u:topsecret@h/db",
        "clickhouse://u:topsecret@h:notaport/db",
        "clickhouse://u:topsecret@h/db?secure=maybe",
        "clickhouse://u:topsecret@h/db?compression=lz4",
        "clickhouse://u:topsecret@h/db-with-dash",
        "clickhouse://u:topsecret@h/db?connect_timeout=0",
        "clickhouse://u:topsecret@/db",
        "chdb://",
        "chdb:///",
        "chdb://x?verify=0",
        "chdb://x?cluster=c1",
        "clickhouse://u:topsecret@h/db?cluster=bad-name",
    ],
)
def test_bad_urls_fail_without_the_password(text: str) -> None:
    with pytest.raises(InvalidUrl) as failure:
        parse_store_url(text)
    assert "topsecret" not in str(failure.value)


def test_cluster_option() -> None:
    url = parse_store_url("clickhouse://u:topsecret@h/db?cluster=socialroi")
    assert isinstance(url, NativeUrl) and url.cluster == "socialroi"
    assert url.display == "clickhouse://u@h:9000/db?cluster=socialroi"
    assert parse_store_url("clickhouse://h/db").cluster is None  # type: ignore[union-attr]


def test_open_backend_picks_the_engine_without_io() -> None:
    # Nothing listens on port 1 and the chdb path does not exist: constructing must not care.
    server = open_backend("clickhouse://u:topsecret@127.0.0.1:1/db")
    assert isinstance(server, NativeBackend)
    assert "topsecret" not in server.display_url
    assert isinstance(open_backend("chdb:///nonexistent/dir"), ChdbBackend)


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("18.16.1", (18, 16, 1)),
        ("26.9.2.1", (26, 9, 2, 1)),
        ("23.8.1.2992-lts", (23, 8, 1, 2992)),
        ("24.3", (24, 3)),
    ],
)
def test_parse_version(text: str, version: tuple[int, ...]) -> None:
    assert parse_version(text) == version


def test_parse_version_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_version("latest")


def test_sql_string_escapes_quotes_and_backslashes() -> None:
    assert sql_string("it's a \\ test") == "'it\\'s a \\\\ test'"
