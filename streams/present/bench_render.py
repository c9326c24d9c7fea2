"""The tables ``socialroi bench`` prints (rich); ``--json`` prints the same result as JSON."""

from __future__ import annotations

from typing import Any

__all__ = ["render", "render_soak"]


def _short_windows(setup: dict[str, Any]) -> str:
    counts = setup["window_specs"].split(" (")[0].split()  # "3 tumbling + 2 hopping"
    return f"{setup['windows']} ({counts[0]}T+{counts[3]}H)"


def render(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(140, Console().width))
    table = Table(title="socialroi bench: medians (runs in JSON)", caption=result["note"])
    for column in (
        "events", "campaigns", "windows", "procs", "producer ev/s", "raw ev/s", "worker ev/s",
        "worker/raw", "startup s", "peak RSS MiB", "state keys", "B/key", "B/key k+o",
        "B reach/key",
    ):  # fmt: skip
        table.add_column(column, justify="left" if column == "windows" else "right")
    for row in result["setups"]:
        s, st = row["setup"], row["state"]
        table.add_row(
            f"{s['events']:,}",
            f"{s['campaigns']:,}",
            _short_windows(s),
            str(s.get("processes", 1)),
            f"{row['producer_events_per_s']['median']:,.0f}",
            f"{row['raw_consume_events_per_s']['median']:,.0f}",
            f"{row['worker_drain_events_per_s']['median']:,.0f}",
            f"{row['worker_vs_raw']:.3f}",
            f"{row['worker_startup_seconds']['median']:.1f}",
            f"{row['worker_peak_rss_bytes']['median'] / 2**20:,.0f}",
            f"{st['active_keys']:,}",
            f"{st['bytes_per_key']:,.0f}",
            f"{st['counters_offsets_bytes_per_key']:,.0f}",
            f"{st['reach_bytes_per_key_with_reach']:,.0f}",
        )
    console.print(table)
    first = result["setups"][0]["setup"]
    console.print(
        f"setup: backend {first['backend']}, {first['partitions']} partitions, batches of "
        f"{first['batch_max_events']} events or {first['batch_within_seconds']}s, "
        f"{first['days']} days of event time, {result['setups'][0]['repeats']} repeats; "
        "B/key = JSON bytes of a (campaign, channel, window) state at its last write to the "
        "changelog, over every such key the run created; "
        "k+o = counters + offsets; reach = the sketch, per key that has one"
    )
    fresh = result["freshness"]
    if fresh:
        f = fresh["setup"]
        console.print(
            f"freshness at {f['rate']:,.0f}/s for {f['seconds']:.0f}s "
            f"(achieved {fresh['rate_achieved']['median']:,.0f}/s; one campaign, "
            f"windows {f['windows']}, {f['backend']}): p50 "
            f"{fresh['p50_seconds']['median']:.3f}s, p99 {fresh['p99_seconds']['median']:.3f}s, "
            f"p50 of the last second {fresh['last_second_p50_seconds']['median']:.3f}s "
            f"({f['method']})"
        )
    console.print(f"[bold]{result['note']}[/]")


def _hours_behind(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 3600:,.1f} h"


def render_soak(result: dict[str, Any]) -> None:
    """The soak: one row per minute of production, the drain, and the verdict."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(140, Console().width))
    setup, produced, drain = result["setup"], result["produced"], result["drain"]
    table = Table(
        title=f"socialroi bench --soak: {setup['rate']:,.0f} events/s for "
        f"{setup['minutes']:g} min, {setup['days']} days of event time",
        caption="lag = messages sent but not consumed by the worker yet (s: at the target "
        "rate); behind = the input's event time minus the gauge, in event time (the "
        "watermark is the lowest source's: costs come once a day)",
    )
    for column in (
        "minute", "sent", "sent/s", "worker ev/s", "lag msgs", "lag s", "RSS MiB",
        "input event time", "watermark behind", "ClickHouse behind",
    ):  # fmt: skip
        table.add_column(column, justify="right")
    for m in result["minutes"]:
        event_time = m["input_event_time"]
        table.add_row(
            str(m["minute"]),
            f"{m['sent']:,}",
            f"{m['sent'] / m['seconds']:,.0f}" if m["seconds"] > 0 else "-",
            f"{m['worker_events_per_s']:,.0f}",
            f"{m['lag_messages']:,}",
            f"{m['lag_seconds']:.1f}",
            f"{m['rss_bytes'] / 2**20:,.0f}",
            _utc(event_time) if event_time else "-",
            _hours_behind(m["watermark_behind_seconds"]),
            _hours_behind(m["freshness_behind_seconds"]),
        )
    console.print(table)
    console.print(
        f"setup: {setup['campaigns']:,} campaigns, windows {setup['window_specs']}, "
        f"lookback {setup['lookback_seconds'] / 86400:g} days, {setup['backend']}, "
        f"{setup['partitions']} partitions; event time from {produced['event_time_from']} at "
        f"{setup['event_time_pace']:,.0f}x the wall clock; worker start-up "
        f"{result['startup_seconds']:.1f} s"
    )
    console.print(
        f"produced {produced['messages']:,} messages in {produced['seconds']:.1f} s "
        f"({produced['events_per_s']:,.0f}/s of {setup['rate']:,.0f}/s asked), event time "
        f"up to {produced['event_time_to']}"
    )
    if drain["complete"]:
        console.print(f"drain: everything in ClickHouse {drain['seconds']:.1f} s after the end")
    else:
        console.print(
            f"drain: stopped after {drain['seconds']:.0f} s with {drain['left']:,} messages "
            f"of the {drain.get('stage', '?')} stage left"
        )
    passed = result["verdict"]["passed"]
    console.print(f"[bold {'green' if passed else 'red'}]{result['verdict']['line']}[/]")


def _utc(epoch: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).strftime("%m-%d %H:%M")
