"""``socialroi replay``: validate JSONL/CSV files line by line, then produce them."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from pipeline.contract import Contract
from pipeline.files import BadLine, FileEvent, read_events
from pipeline.settings import Settings
from streams.present.progress import Reporter
from streams.producer import EventProducer, OutgoingMessage, ensure_topics, topic_for_kind

__all__ = ["run_replay"]


def run_replay(
    settings: Settings, files: list[Path], rate: float | None, skip_invalid: bool, dry_run: bool
) -> int:
    """Exit code: 0 all sent, 1 bad lines found (nothing sent unless ``skip_invalid``)."""
    contract = Contract(
        max_message_bytes=settings.limits.max_message_bytes,
        max_future_skew_ms=settings.windows.max_future_skew_seconds * 1000,
    )
    now_ms = int(time.time() * 1000)
    good: list[FileEvent] = []
    bad: list[BadLine] = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            print(f"replay: cannot read {path}: {exc}", file=sys.stderr)
            return 2
        for item in read_events(str(path), text, contract, now_ms):
            (bad if isinstance(item, BadLine) else good).append(item)  # type: ignore[arg-type]
    for line in bad:
        print(f"replay: {line}", file=sys.stderr)
    if bad and not skip_invalid:
        print(
            f"replay: {len(bad)} bad lines, nothing sent (fix them or use --skip-invalid)",
            file=sys.stderr,
        )
        return 1
    if dry_run:
        print(f"replay: {len(good)} valid events, {len(bad)} bad lines (dry run, nothing sent)")
        return 1 if bad else 0
    ensure_topics(settings)
    topics = topic_for_kind(settings)
    producer = EventProducer(settings, client_id="socialroi-replay")
    producer.start()
    progress = Reporter("replay", "events sent", len(good))
    try:
        producer.send_all(
            progress.counted(
                OutgoingMessage(
                    topics[item.kind],
                    (item.event.user_id or item.event.campaign_id).encode() or None,
                    item.raw,
                )
                for item in good
            ),
            rate=rate,
        )
    finally:
        progress.close()
        producer.close()
    print(f"replay: sent {len(good)} events; {len(bad)} bad lines skipped")
    return 1 if bad else 0
