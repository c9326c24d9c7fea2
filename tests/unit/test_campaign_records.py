"""Campaign records in the pure core: one campaign whatever the case on each path, tags,
default margins, and the newest record declaring the campaign (pipeline.campaigns is the
reference of what the views of migration 0010 compute)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from pipeline.campaigns import declare, newest_records, owners
from pipeline.contract import Contract
from pipeline.ingest import ServiceCosts
from pipeline.kpi import MICROS
from pipeline.money import Rates
from pipeline.ports import CampaignRow, KpiSnapshot
from pipeline.settings import AttributionModel
from pipeline.stage_one import Ingestor, Message

NOW = 1_900_000_000_000
T0 = 1_790_812_800_000  # 2026-10-01T00:00:00Z
DAY = 86_400_000
RATES = Rates("EUR", {"USD": Decimal("0.5")})


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


class Store(dict[str, Any]):
    def put(self, key: str, value: Any) -> None:
        self[key] = orjson.loads(orjson.dumps(value))

    def delete(self, key: str) -> None:
        self.pop(key, None)


def ingestor() -> Ingestor:
    return Ingestor(
        Contract(max_message_bytes=65536, max_future_skew_ms=300_000),
        RATES,
        ServiceCosts(6 * MICROS, 2 * MICROS),
        30.0,
        600_000,
        model=AttributionModel.LAST_TOUCH,
    )


def event(n: int, etype: str, ms: int, **fields: Any) -> bytes:
    body = {"event_id": f"e{n}", "event_type": etype, "event_time": iso(ms), **fields}
    return orjson.dumps(body)


def run_all(ing: Ingestor, batches: dict[str, list[bytes]]) -> tuple[list[Any], list[Any], Any]:
    """Every topic's messages on partition 0, then the release of conversions."""
    store = Store()
    forwards, records = [], []
    for kind, values in batches.items():
        result = ing.run(kind, 0, [Message(i, v) for i, v in enumerate(values)], store, NOW)
        assert result.rejected == [], result.rejected
        forwards += [f for _, f in result.forwards]
        records += result.campaigns
    release = ing.release(0, store)
    forwards += [f for _, f in release.forwards]
    return forwards, records, release


def windows(forwards: list[Any]) -> dict[tuple[str, str, str, int, int], KpiSnapshot]:
    """One daily window per (key, channel), as kpi_key_current would show them."""
    sums: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for f in forwards:
        for name, value in f.deltas.items():
            sums[(f.campaign_id, f.channel)][name] += value
    return {
        (key, channel, "tumbling", 86400, T0): KpiSnapshot(
            key, channel, "tumbling", 86400, T0, T0 + DAY, True, 2, dict(counters)
        )
        for (key, channel), counters in sums.items()
    }


def test_one_campaign_whatever_the_case_on_every_path_and_its_tag_and_margin() -> None:
    hour = 3_600_000
    batches = {
        "campaign.meta": [
            event(
                1,
                "campaign",
                T0,
                campaign_id="Camp-E",
                name="Spring launch",
                utm_campaign="Launch_E",
                margin=0.25,
                budget=1000,
                currency="USD",
                starts_at=iso(T0),
                ends_at=iso(T0 + 2 * DAY),
            )
        ],
        "social.interactions": [
            event(2, "click", T0 + hour, campaign_id="CAMP-E", channel="fb", user_id="u1"),
            event(3, "like", T0 + hour, campaign_id="camp-e", channel="ig", user_id="u2"),
            # moves the social watermark past the conversion
            event(4, "impression", T0 + 5 * hour, campaign_id="cAmP-e", channel="fb", count=9),
        ],
        "campaign.costs": [
            event(
                5,
                "cost",
                T0,
                campaign_id="camp-E",
                channel="facebook",
                media_spend=50,
                currency="EUR",
            ),
        ],
        "web.events": [
            event(
                6,
                "page_view",
                T0 + hour + 1000,
                user_id="u1",
                utm_campaign="CAMP-e",
                utm_source="facebook",
                session_id="s",
                url="https://x.example/",
            ),
            event(
                7,
                "page_view",
                T0 + hour + 2000,
                user_id="u2",
                utm_campaign=" launch_E ",
                utm_source="instagram",
                session_id="s",
                url="https://x.example/",
            ),
            # no margin of its own: last touch is u1's visit tagged with the id
            event(
                8,
                "conversion",
                T0 + 2 * hour,
                user_id="u1",
                order_id="o1",
                revenue=80,
                currency="EUR",
            ),
            # its own margin: last touch is u2's visit tagged with the campaign's tag
            event(
                9,
                "conversion",
                T0 + 2 * hour,
                user_id="u2",
                order_id="o2",
                revenue=40,
                currency="EUR",
                margin=0.5,
            ),
            event(
                10,
                "page_view",
                T0 + 5 * hour,
                user_id="u3",
                session_id="s",
                url="https://x.example/",
            ),
        ],
    }
    forwards, records, release = run_all(ingestor(), batches)

    # stage one keys everything in lower case; the tag stays a key of its own
    assert {f.campaign_id for f in forwards} == {"camp-e", "launch_e", ""}
    assert {r.campaign_id for r in release.rows} == {"camp-e", "launch_e"}
    (record,) = records
    assert (record.campaign_key, record.campaign_id, record.utm_campaign) == (
        "camp-e",
        "Camp-E",
        "launch_e",
    )
    assert (record.margin_ppm, record.budget_micros) == (250_000, 500 * MICROS)  # USD at 0.5

    declared = declare(windows(forwards), newest_records(records))
    by_campaign: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for (campaign, *_), row in declared.items():
        for name, value in row.counters.items():
            by_campaign[campaign][name] += value
    assert set(by_campaign) == {"Camp-E", ""}
    camp = by_campaign["Camp-E"]
    assert (camp["clicks"], camp["likes"], camp["impressions"], camp["visits"]) == (1, 1, 9, 2)
    assert camp["media_spend_micros"] == 50 * MICROS
    assert camp["revenue_micros"] == 120 * MICROS
    assert camp["unmargined_revenue_micros"] == 80 * MICROS
    # 40 x its own 0.5, plus 80 x the campaign's 0.25
    assert camp["profit_micros"] == 20 * MICROS + 20 * MICROS


def test_the_newest_record_declares_the_campaign_and_an_id_beats_a_tag() -> None:
    def row(key: str, cid: str, tag: str, margin: int, ms: int, eid: str) -> CampaignRow:
        return CampaignRow(key, cid, cid, tag, margin, 0.0, "", -1, -1, -1, eid, ms)

    directory = newest_records(
        [
            row("a", "A", "promo", 100_000, 2_000, "x1"),
            row("a", "a", "", 300_000, 1_000, "x9"),  # older: ignored
            row("b", "B", "a", -1, 1_000, "y"),  # claims "a", another campaign's id
            row("c", "C", "promo", -1, 5_000, "z"),  # claims "promo" too: "a" < "c" wins
            row("d", "D-old", "", -1, 7_000, "m"),
            row("d", "D-new", "", -1, 7_000, "n"),  # same time: the greater event id
        ]
    )
    assert {k: r.campaign_id for k, r in directory.items()} == {
        "a": "A",
        "b": "B",
        "c": "C",
        "d": "D-new",
    }
    assert owners(directory) == {"a": "a", "b": "b", "c": "c", "d": "d", "promo": "a"}
    window = KpiSnapshot(
        "promo", "x", "tumbling", 60, 0, 60_000, False, 4,
        {"revenue_micros": 10, "unmargined_revenue_micros": 5, "profit_micros": 1},
    )  # fmt: skip
    ((key, got),) = declare({("promo", "x", "tumbling", 60, 0): window}, directory).items()
    assert key[0] == "A"
    assert got.counters["profit_micros"] == 1 + 1  # 5 x 0.1 = 0.5, rounded half up
