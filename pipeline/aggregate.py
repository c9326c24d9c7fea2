"""What stage one hands stage two: contributions, and the watermark that makes panes final.

A pane state (``pipeline.panes``) records, per source topic-partition, the highest source
offset it includes. A contribution whose offset is not above that is a replay (after a
crash, or a re-sent message from stage one) and is skipped, so folding the same input twice
changes nothing. The state is written to the changelog in one message together with its
counters, so the offsets and the aggregates can never disagree after recovery.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.ingest import NO_TIME

__all__ = ["Contribution", "final_watermark"]


@dataclass(slots=True)
class Contribution:
    """A stage-one record: deltas of one source event for one (campaign, channel)."""

    src: str  # "topic:partition" of the source event
    offset: int
    ts_ms: int
    campaign_id: str
    channel: str
    deltas: Mapping[str, int]
    user_id: str = ""  # counted in reach when the source is social

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Contribution:
        return cls(
            src=record["src"],
            offset=record["o"],
            ts_ms=record["ts"],
            campaign_id=record["c"],
            channel=record["ch"],
            deltas=record["d"],
            user_id=record.get("u", ""),
        )


def final_watermark(heard: Mapping[str, int], traffic: Iterable[str]) -> int:
    """The watermark that makes windows final: the lowest over the source partitions heard
    from, once every social and web partition (``traffic``) has been heard; a cost partition
    counts from its first event on. ``NO_TIME`` until then."""
    if not heard or any(src not in heard for src in traffic):
        return NO_TIME
    return min(heard.values())
