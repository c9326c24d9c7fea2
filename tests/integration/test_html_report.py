"""``socialroi report --format html`` and ``--format report-json`` through the real CLI.

The chDB store holds the snapshot set of views_data.py (plus a few dead letters). The page's
numbers must equal the JSON document's, which must equal the reader views and the plain
Python answers of views_data.py; the per-campaign rows must be exactly ``--format json``.
Then headless Chromium renders the page offline: a non-trivial screenshot, every chart drawn,
no script error.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import struct
import subprocess
import sys
from datetime import date
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from pipeline.ports import DeadLetterRow
from pipeline.settings import ClickHouseSettings
from sinks.backends import open_backend
from sinks.views import (
    campaign_report,
    follower_growth,
    social_traffic_share,
    spend_vs_return,
)
from sinks.writer import ClickHouseSink
from tests.integration import views_data as data

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHARTS = 11
PERIOD = ("--from", "2026-10-01", "--to", "2026-10-03")
DEAD = [
    DeadLetterRow("invalid_json", "x", "social.interactions", 0, 5, 1_790_000_000_000, b"{"),
    DeadLetterRow("invalid_json", "x", "social.interactions", 0, 6, 1_790_000_000_000, b"["),
    DeadLetterRow("unknown_currency", "XYZ", "web.events", 1, 9, 1_790_000_000_000, b"{}"),
]


def load(url: str) -> None:
    async def write() -> None:
        sink = ClickHouseSink(ClickHouseSettings(url=SecretStr(url)))
        await sink.start()
        sink.add_snapshots(data.build_snapshots())
        sink.add_campaigns(data.CAMPAIGN_RECORDS)
        sink.add_dead_letters(DEAD)
        sink.add_skipped_events(data.SKIPPED)
        await sink.flush()
        await sink.close()  # releases the chDB store for the subprocess

    asyncio.run(write())


def cli(url: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCIALROI_")}
    env.update(
        {
            "SOCIALROI_CLICKHOUSE__URL": url,
            "SOCIALROI_ATTRIBUTION__MODEL": "linear",
            "SOCIALROI_COSTS__BASE_CURRENCY": "EUR",
            "PYTHONPATH": str(ROOT),
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "report", *args],
        env=env,
        cwd=cwd,
        text=True,
        capture_output=True,
        timeout=120,
        check=False,
    )


class Page(HTMLParser):
    """Tables (``data-value`` per cell, by row key), tiles, meta and the embedded JSON."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[dict[str, Any]]] = {}
        self.tiles: dict[str, Any] = {}
        self.meta: dict[str, str] = {}
        self.svgs: list[dict[str, Any]] = []
        self.embedded = ""
        self.text: list[str] = []
        self._table: str | None = None
        self._row: dict[str, Any] | None = None
        self._meta: str | None = None
        self._json = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self._table = a["id"]
            self.tables[a["id"] or ""] = []
        elif tag == "tr" and self._table is not None:
            self._row = {"_key": a.get("data-key"), "_total": a.get("class") == "total"}
        elif tag == "td" and self._row is not None:
            self._row[a["data-col"] or ""] = orjson.loads(a["data-value"] or "")
        elif tag == "div" and "data-kpi" in a:
            self.tiles[a["data-kpi"] or ""] = orjson.loads(a["data-value"] or "")
        elif tag == "dd":
            self._meta = a.get("data-meta")
        elif tag == "svg" and "chart" in (a.get("class") or ""):
            self.svgs.append({"id": a.get("data-chart"), "marks": 0})
        elif self.svgs and "mark" in (a.get("class") or "").split():
            if tag != "path" or (a.get("d") or "").strip():
                self.svgs[-1]["marks"] += 1
        elif tag == "script" and a.get("id") == "report-data":
            self._json = True

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr" and self._row is not None and self._table is not None:
            if len(self._row) > 2:
                self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "script":
            self._json = False
        elif tag == "dd":
            self._meta = None

    def handle_data(self, text: str) -> None:
        if self._json:
            self.embedded += text
        elif self._meta is not None:
            self.meta[self._meta] = text
        else:
            self.text.append(text)


def rows_of(page: Page, table: str) -> list[dict[str, Any]]:
    return [r for r in page.tables[table] if not r["_total"]]


def strip(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if not k.startswith("_")}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    root = tmp_path_factory.mktemp("html-report")
    url = f"chdb://{root / 'chdb'}"
    load(url)
    return url, root


def test_html_numbers_equal_the_json_document_and_the_views(store: tuple[str, Path]) -> None:
    url, root = store
    html_file, json_file = root / "report.html", root / "report.json"
    out = cli(url, root, *PERIOD, "--format", "html", "--output", str(html_file))
    assert out.returncode == 0, out.stderr
    out = cli(url, root, *PERIOD, "--format", "report-json", "--output", str(json_file))
    assert out.returncode == 0, out.stderr
    doc = orjson.loads(json_file.read_bytes())
    out = cli(url, root, *PERIOD, "--format", "json")
    assert out.returncode == 0, out.stderr
    per_campaign = orjson.loads(out.stdout)

    page = Page()
    page.feed(html_file.read_text(encoding="utf-8"))
    embedded = orjson.loads(page.embedded.replace("<\\/", "</"))
    embedded.pop("generated_at")
    assert embedded == {k: v for k, v in doc.items() if k != "generated_at"}

    # The per-campaign figures: the same function as --format json, equal to Python's answer.
    current = data.latest(data.build_snapshots())
    expected = data.expected_report(current, date(2026, 10, 1), date(2026, 10, 4))
    assert doc["campaigns"] == per_campaign == expected
    shown = rows_of(page, "campaigns")
    assert [r["_key"] for r in shown] == [r["campaign_id"] for r in expected]
    for row, want in zip(shown, expected, strict=True):
        assert {k: want[k] for k in strip(row)} == strip(row)
    # the declared name and budget used, from spring's newest record
    spring = strip(next(r for r in shown if r["_key"] == "spring"))
    assert spring["campaign_name"] == "Spring sale"
    assert spring["budget_used"] == pytest.approx(spring["spend"] / 3_680)
    total = next(r for r in page.tables["campaigns"] if r["_total"])
    assert total["spend"] == doc["totals"]["spend"]
    assert total["spend"] == pytest.approx(sum(r["spend"] for r in expected), rel=1e-12)
    assert total["revenue"] == pytest.approx(sum(r["revenue"] for r in expected), rel=1e-12)

    # Tiles (the summary's key numbers) are the totals.
    t = doc["totals"]
    assert page.tiles["spend"] == t["spend"] and page.tiles["revenue"] == t["revenue"]
    assert page.tiles["roi"] == t["roi"] and page.tiles["roas"] == t["roas"]
    assert page.tiles["service_savings"] == t["service_savings"]
    spent = sum(r["spend"] for r in expected)
    assert t["roas"] == pytest.approx(sum(r["revenue"] for r in expected) / spent, rel=1e-12)

    # Daily views, through their readers and Python.
    backend = open_backend(url)
    backend.start()
    try:
        traffic = social_traffic_share(backend, date(2026, 10, 1), date(2026, 10, 4))
        buckets = spend_vs_return(backend)
        followers = follower_growth(backend, date(2026, 10, 1), date(2026, 10, 4))
        assert campaign_report(backend, date(2026, 10, 1), date(2026, 10, 4)) == expected
    finally:
        backend.close()
    assert doc["social_traffic"] == traffic
    assert [strip(r) for r in rows_of(page, "traffic")] == [
        {k: d[k] for k in ("day", "visits", "social_visits", "direct_visits", "other_visits",
                           "social_share")}
        for d in data.expected_social_traffic_share(current)
    ]  # fmt: skip
    share = doc["summary"]["social_share"]
    assert page.tiles["social_share"] == share
    assert share == sum(d["social_visits"] for d in traffic) / sum(d["visits"] for d in traffic)
    assert doc["spend_vs_return"] == buckets
    # direct traffic is no campaign: neither in the spend levels nor in the campaign count
    campaigns = {s.campaign_id for s in current if s.campaign_id != ""}
    assert sum(b["campaigns"] for b in buckets) == len(campaigns)
    assert doc["totals"]["campaigns"] == len({r["campaign_id"] for r in expected} - {""})
    assert [strip(r)["roi"] for r in rows_of(page, "spend-vs-return-table")] == [
        b["roi"] for b in data.expected_spend_vs_return(current)
    ]
    assert doc["followers"] == followers
    shown_followers = {r["_key"]: strip(r) for r in rows_of(page, "followers-table")}

    # the per-campaign tables count a campaign's days only (spring's record ends on day 2)
    def within(campaign: str, day_ms: int) -> bool:
        return not (campaign == "spring" and day_ms >= data.DAY0_MS + 2 * data.DAY_S * 1000)

    for campaign in data.CAMPAIGNS:
        days = [
            r
            for r in data.expected_follower_growth(current)
            if r["campaign_id"] == campaign and within(campaign, r["window_start_ms"])
        ]
        follows = sum(r["follows"] for r in days)
        assert shown_followers[campaign]["follows"] == follows
        assert (
            shown_followers[campaign]["net_follower_growth"]
            == days[-1]["cumulative_net_follower_growth"]
        )
        revenue = sum(
            s.counters.get("follower_revenue_micros", 0)
            for s in current
            if s.campaign_id == campaign and s.window_kind == "tumbling"
            and s.window_seconds == data.DAY_S and within(campaign, s.window_start_ms)
        )  # fmt: skip
        assert shown_followers[campaign]["value_per_follower"] == revenue / (follows * 1_000_000)
    service = {r["_key"]: strip(r) for r in rows_of(page, "service")}
    for campaign in data.CAMPAIGNS:
        days = [
            r
            for r in data.expected_service_savings(current)
            if r["campaign_id"] == campaign and within(campaign, r["window_start_ms"])
        ]
        assert service[campaign]["service_resolved"] == sum(r["service_resolved"] for r in days)

    # Best and worst campaign by ROI; NULL ratios as an en dash with the footnote.
    ranked = sorted(
        (r for r in expected if r["campaign_id"] and r["roi"] is not None),
        key=lambda r: -r["roi"],
    )
    assert doc["summary"]["best_campaign"]["campaign_id"] == ranked[0]["campaign_id"]
    assert doc["summary"]["worst_campaign"]["campaign_id"] == ranked[-1]["campaign_id"]
    free = next(r for r in shown if r["_key"] == "free")
    assert free["roi"] is None and free["roas"] is None  # the campaign with no spend
    text = "".join(page.text)
    assert "\u2013*" in text and "not defined because its denominator is zero" in text

    # Model and currency stated; data quality: dead letters by reason, late and duplicate
    # events of the period from the store (the replayed one once, the one after it left out).
    assert page.meta["attribution model"].startswith("linear")
    assert page.meta["currency"].startswith("EUR")
    assert {r["_key"]: r["letters"] for r in rows_of(page, "dead-letters")} == {
        "invalid_json": 2,
        "unknown_currency": 1,
    }
    quality = {r["_key"]: strip(r) for r in rows_of(page, "quality")}
    assert quality["Engagement rate and net sentiment"]["rejected"] == 2
    assert quality["Social share of site traffic"]["rejected"] == 1
    social = quality["Engagement rate and net sentiment"]
    assert (social["late"], social["duplicates"]) == (2, 1)
    web = quality["Social share of site traffic"]
    assert (web["late"], web["duplicates"]) == (1, 0)
    spend = quality["Spend (media, effort, tools)"]
    assert (spend["late"], spend["duplicates"]) == (0, 0)
    by_day = {r["_key"]: (r["late"], r["duplicates"]) for r in rows_of(page, "skipped-by-day")}
    assert by_day == {"2026-10-01": (2, 0), "2026-10-02": (0, 1), "2026-10-03": (1, 0)}
    assert doc["data_quality"]["skipped_by_day"] == [
        {"day": d, "late": n[0], "duplicates": n[1]} for d, n in sorted(by_day.items())
    ]

    # Every chart drew marks; the page asks for nothing from the network.
    html = html_file.read_text(encoding="utf-8")
    assert f'data-charts-expected="{len(page.svgs)}"' in html
    assert len(page.svgs) == CHARTS and all(s["marks"] > 0 for s in page.svgs), page.svgs
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "@import" not in html and "<link" not in html and "url(" not in html
    assert "default-src 'none'" in html  # the browser itself refuses any fetch


def test_campaign_filter(store: tuple[str, Path]) -> None:
    url, root = store
    out = cli(url, root, *PERIOD, "--campaign", "spring", "--format", "report-json")
    assert out.returncode == 0, out.stderr
    doc = orjson.loads(out.stdout)
    assert [r["campaign_id"] for r in doc["campaigns"]] == ["spring"]
    assert doc["totals"]["spend"] == doc["campaigns"][0]["spend"]
    assert doc["campaign_filter"] == ["spring"]


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def test_the_page_renders_in_headless_chromium(store: tuple[str, Path]) -> None:
    if not CHROMIUM.exists():
        pytest.fail(
            "headless Chromium is missing: apt-get install chromium "
            "(bash deploy/local/services.sh up installs it)",
            pytrace=False,
        )
    url, root = store
    page = root / "board.html"
    out = cli(url, root, *PERIOD, "--format", "html", "--output", str(page))
    assert out.returncode == 0, out.stderr
    flags = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={root / 'chromium'}", "--window-size=1400,4000",
    ]  # fmt: skip
    png = root / "board.png"
    shot = subprocess.run(
        [*flags, f"--screenshot={png}", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert shot.returncode == 0 and png.exists(), shot.stderr[-2000:]
    assert _png_size(png) == (1400, 4000)
    # A blank page compresses to a few kB; the report, with text and charts, does not.
    assert png.stat().st_size > 100_000, png.stat().st_size
    keep = os.environ.get("SOCIALROI_TEST_SCREENSHOT")
    if keep:
        shutil.copy(png, keep)

    dom = subprocess.run(
        [*flags, "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert dom.returncode == 0, dom.stderr[-2000:]
    root_tag = dom.stdout[
        dom.stdout.index("<html") : dom.stdout.index(">", dom.stdout.index("<html"))
    ]
    assert f'data-charts-expected="{CHARTS}"' in root_tag
    assert f'data-charts-rendered="{CHARTS}"' in root_tag, root_tag
    assert 'data-script-errors=""' in root_tag, root_tag


# Added to a copy of the page (its policy allows inline scripts): every table, chart and
# tile as the reader sees it, i.e. clipped by any ancestor that scrolls or hides its
# overflow, must not overlap another one.
_OVERLAPS = """
<script>
addEventListener('load', () => {
  const visible = (el) => {
    let r = el.getBoundingClientRect();
    let box = {left: r.left, right: r.right, top: r.top, bottom: r.bottom};
    for (let a = el.parentElement; a; a = a.parentElement) {
      if (getComputedStyle(a).overflowX === 'visible') continue;
      const c = a.getBoundingClientRect();
      box.left = Math.max(box.left, c.left); box.right = Math.min(box.right, c.right);
    }
    return box;
  };
  const items = [...document.querySelectorAll('table, svg.chart, .tile')];
  const named = (el) => el.id || (el.closest('section') || {}).id + ' ' + el.tagName;
  const boxes = items.map((el) => [named(el), visible(el)]);
  const found = [];
  for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
    const [a, p] = boxes[i], [b, q] = boxes[j];
    const w = Math.min(p.right, q.right) - Math.max(p.left, q.left);
    const h = Math.min(p.bottom, q.bottom) - Math.max(p.top, q.top);
    if (w > 1 && h > 1) found.push(a + ' / ' + b);
  }
  document.documentElement.dataset.boxes = String(boxes.length);
  document.documentElement.dataset.overlaps = found.join('; ');
});
</script>
"""


@pytest.mark.parametrize("width", [1280, 1440, 1920])
def test_no_table_or_chart_overlaps_another_at_common_widths(
    store: tuple[str, Path], width: int
) -> None:
    if not CHROMIUM.exists():
        pytest.fail("headless Chromium is missing: apt-get install chromium", pytrace=False)
    url, root = store
    page = root / f"board-{width}.html"
    out = cli(url, root, *PERIOD, "--format", "html", "--output", str(page))
    assert out.returncode == 0, out.stderr
    html = page.read_text(encoding="utf-8")
    probe = root / f"probe-{width}.html"
    probe.write_text(html.replace("</body>", _OVERLAPS + "</body>"), encoding="utf-8")
    dom = subprocess.run(
        [
            str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={root / f'chromium-{width}'}", f"--window-size={width},3000",
            "--dump-dom", probe.as_uri(),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert dom.returncode == 0, dom.stderr[-2000:]
    root_tag = dom.stdout[
        dom.stdout.index("<html") : dom.stdout.index(">", dom.stdout.index("<html"))
    ]
    boxes = re.search(r'data-boxes="(\d+)"', root_tag)
    assert boxes and int(boxes[1]) >= CHARTS + 5, root_tag  # it measured the page
    overlaps = re.search(r'data-overlaps="([^"]*)"', root_tag)
    assert overlaps is not None and overlaps[1] == "", f"{width}px: {overlaps and overlaps[1]}"


def test_provisional_days_are_marked_in_every_chart_and_table_where_they_appear(
    store: tuple[str, Path],
) -> None:
    """views_data's last day is still open: each daily chart draws it hollow or pale with
    an asterisk on its label, the traffic table says so, and each section with daily data
    (and the per-campaign totals that include it) explains the mark."""
    url, root = store
    page_file = root / "provisional.html"
    out = cli(url, root, *PERIOD, "--format", "html", "--output", str(page_file))
    assert out.returncode == 0, out.stderr
    html = page_file.read_text(encoding="utf-8")
    doc = orjson.loads(cli(url, root, *PERIOD, "--format", "report-json").stdout)
    (open_day,) = doc["summary"]["provisional_days"]
    label = f"{date.fromisoformat(open_day).day} {date.fromisoformat(open_day):%b}"
    charts = dict(re.findall(r'data-chart="([\w-]+)"(.*?)</svg>', html, flags=re.S))
    for chart in ("social-share", "visits", "followers", "net-sentiment", "engagement-rate"):
        svg = charts[chart]
        assert f">{label}*<" in svg, f"{chart}: the open day's label has no asterisk"
        marks = re.findall(r'<(?:circle|rect) class="mark( provisional)?"[^>]*>', svg)
        provisional = [m for m in marks if m]
        assert provisional, f"{chart}: no provisional mark"
        assert all(f"{label}*" in t for t in re.findall(
            r'class="mark provisional".*?<title>(.*?)</title>', svg, flags=re.S
        )), chart  # fmt: skip
    closed = re.findall(r'class="mark"[^>]*><title>([^<]*)</title>', charts["social-share"])
    assert closed and not any("provisional" in t for t in closed)
    sections = dict(re.findall(r'<section id="([\w-]+)">(.*?)</section>', html, flags=re.S))
    for section in ("roi", "traffic", "followers", "sentiment"):
        assert f"* Provisional: {label} is still open" in sections[section], section
    assert f"{open_day} (provisional)" in sections["traffic"]


def test_the_summary_compares_with_the_previous_period_of_equal_length(
    store: tuple[str, Path],
) -> None:
    url, root = store
    one_day = ("--from", "2026-10-02", "--to", "2026-10-02")
    doc = orjson.loads(cli(url, root, *one_day, "--format", "report-json").stdout)
    before = orjson.loads(
        cli(url, root, "--from", "2026-10-01", "--to", "2026-10-01", "--format", "report-json")
        .stdout
    )  # fmt: skip
    previous = doc["previous_period"]
    assert previous == {
        "from": "2026-10-01", "to": "2026-10-01", "days": 1, "totals": before["totals"],
    }  # fmt: skip
    assert previous["totals"]["windows"] > 0
    page_file = root / "compared.html"
    out = cli(url, root, *one_day, "--format", "html", "--output", str(page_file))
    assert out.returncode == 0, out.stderr
    html = page_file.read_text(encoding="utf-8")
    now, was = doc["totals"]["spend"], before["totals"]["spend"]
    change = f"{(now - was) / abs(was) * 100:+.0f}%"
    spend_tile = re.search(r'data-kpi="spend".*?data-change="([^"]+)"', html, flags=re.S)
    assert spend_tile and spend_tile[1] == change, spend_tile
    assert "In the previous 1 day (1 Oct to 1 Oct): spend " in html
    # the three stored days have nothing before them: said, not hidden
    doc = orjson.loads(cli(url, root, *PERIOD, "--format", "report-json").stdout)
    assert doc["previous_period"]["from"] == "2026-09-28"
    assert doc["previous_period"]["totals"]["windows"] == 0
    html = cli(url, root, *PERIOD, "--format", "html").stdout
    assert "Nothing was recorded in the previous 3 days (28 Sep to 30 Sep) to compare with." in html
    assert "data-change=" not in html
