"""``sinks.connected``: the one way a command opens, starts and closes a backend."""

from __future__ import annotations

import pytest

import sinks.backends
from sinks import BackendUnavailable, connected
from sinks.memory import MemoryBackend

URL = "clickhouse://default@127.0.0.1:1/db"


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> MemoryBackend:
    double = MemoryBackend()

    def open_backend(url: str) -> MemoryBackend:
        assert url == URL
        return double

    monkeypatch.setattr(sinks.backends, "open_backend", open_backend)
    return double


def test_the_block_gets_a_started_backend_closed_afterwards(backend: MemoryBackend) -> None:
    with connected(URL) as got:
        assert got is backend and backend.started and not backend.closed
    assert backend.closed


def test_it_is_closed_when_the_block_raises(backend: MemoryBackend) -> None:
    with pytest.raises(ZeroDivisionError), connected(URL):
        _ = 1 / 0
    assert backend.closed


def test_it_is_closed_when_start_fails_and_the_block_never_runs(backend: MemoryBackend) -> None:
    backend.fail_next(BackendUnavailable("down"))
    ran = False
    with pytest.raises(BackendUnavailable), connected(URL):
        ran = True
    assert backend.closed and not ran
