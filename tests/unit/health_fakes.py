"""A fake worker and a fake clock for the health checks' unit tests (``streams.health``
reads a worker only through these attributes)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FakeSink:
    outage: bool = False


@dataclass
class FakeWorker:
    """What liveness and readiness read of a worker."""

    sink: FakeSink = field(default_factory=FakeSink)
    last_progress_at: float = 0.0
    is_settled: bool = True
    batch_since: float | None = None

    def settled(self) -> bool:
        return self.is_settled and not self.sink.outage


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
