"""The tables ``socialroi bench`` prints (rich); ``--json`` prints the same result as JSON."""

from __future__ import annotations

from typing import Any

__all__ = ["render"]


def _short_windows(setup: dict[str, Any]) -> str:
    counts = setup["window_specs"].split(" (")[0].split()  # "3 tumbling + 2 hopping"
    return f"{setup['windows']} ({counts[0]}T+{counts[3]}H)"


def render(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(140, Console().width))
    table = Table(title="socialroi bench: medians (runs in JSON)", caption=result["note"])
    for column in (
        "events", "campaigns", "windows", "producer ev/s", "raw ev/s", "worker ev/s",
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
