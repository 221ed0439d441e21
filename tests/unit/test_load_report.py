"""Recording, merging, live figures, JSON and HTML reports — without a network."""

from __future__ import annotations

import gc
import json
import random
import re
import tracemalloc
from datetime import UTC, datetime
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from unittest.mock import patch

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from crisisctl.cli.load import live_view, render
from crisisctl.load.html_report import nice_ticks, render_html
from crisisctl.load.processes import LiveStats
from crisisctl.load.recorder import Recorder
from crisisctl.load.recording import LoadResult, OperationStats
from crisisctl.load.report import build_report
from crisisctl.load.scenario import load_scenario
from crisisctl.load.thresholds import evaluate, parse_threshold, with_defaults
from crisisctl.stats import LatencyHistogram

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "scenarios"


def fake_run(
    seed: int, requests: int, ops: tuple[str, ...] = ("a", "b"), t0: float = 1000.0
) -> tuple[LoadResult, list[int], list[object]]:
    """Feed a Recorder as the engine does: `requests` over ~4 s, some errors and 5xx."""
    rng = random.Random(seed)
    result = LoadResult("open", "http://127.0.0.1/", 4.0, 1.0, target_rate=requests / 4)
    result.latency_uncorrected = LatencyHistogram()
    stats = [OperationStats(name) for name in ops]
    rec = Recorder(result, t0, stats)
    ticks: list[object] = []
    values = []
    for i in range(requests):
        op = stats[rng.randrange(len(stats))]
        now = t0 + 4.0 * i / requests
        rec.sent(op)
        if rng.random() < 0.02:
            rec.error(op, "timeout", now)
        else:
            us = int(rng.lognormvariate(8, 1))
            values.append(us)
            rec.response(op, 500 if rng.random() < 0.05 else 200, 10, us, us // 2, now)
        ticks += rec.ticks(now)
    ticks += rec.finish(t0 + 4.2, connects=3)
    return result, values, ticks


def test_recorder_counts_and_series() -> None:
    result, values, ticks = fake_run(1, 4000)
    assert result.requests == 4000 == result.completed + result.error_total
    assert result.latency.count == len(values) == result.completed
    assert sum(op.requests for op in result.operations.values()) == 4000
    assert sum(op.latency.count for op in result.operations.values()) == len(values)
    assert result.unexpected == result.status_counts[500]
    assert [p["second"] for p in result.per_second] == [0, 1, 2, 3]
    assert sum(p["requests"] for p in result.per_second) == 4000
    # one tick per second, the last for the partial second the run ended in
    assert [t.second for t in ticks] == [0, 1, 2, 3, 4]  # type: ignore[attr-defined]
    assert sum(t.stats.requests for t in ticks) == 4000  # type: ignore[attr-defined]
    for name, op in result.operations.items():
        assert sum(t.ops[name].requests for t in ticks) == op.requests  # type: ignore[attr-defined]


def test_single_operation_figures_are_the_runs() -> None:
    result, values, _ = fake_run(2, 500, ops=("only",))
    op = result.operations["only"]
    assert (op.requests, op.completed, op.unexpected) == (
        result.requests, result.completed, result.unexpected,
    )  # fmt: skip
    assert op.latency.count == len(values) and op.latency is not result.latency


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(min_value=50, max_value=800), min_size=2, max_size=4))
def test_results_of_processes_merge_exactly(sizes: list[int]) -> None:
    parts = [fake_run(seed, n) for seed, n in enumerate(sizes)]
    merged = LoadResult.from_dict(json.loads(json.dumps(parts[0][0].to_dict(histograms=True))))
    for result, _, _ in parts[1:]:
        merged.merge(LoadResult.from_dict(result.to_dict(histograms=True)))
    single = LatencyHistogram()
    for _, values, _ in parts:
        for us in values:
            single.record_us(us)
    assert merged.requests == sum(r.requests for r, _, _ in parts)
    assert merged.latency.count == single.count == sum(r.latency.count for r, _, _ in parts)
    for pct in (50.0, 90.0, 99.0, 99.9, 100.0):
        assert merged.latency.percentile(pct) == single.percentile(pct)
    assert merged.latency.summary() == single.summary()
    for name in ("a", "b"):
        op = merged.operations[name]
        assert op.requests == sum(r.operations[name].requests for r, _, _ in parts)
    assert merged.processes == len(sizes)


def test_live_stats_merge_ticks_of_all_processes() -> None:
    runs = [fake_run(seed, 1000) for seed in range(3)]
    live = LiveStats(3, ["a", "b"], duration_s=4.0)
    for seconds in zip(*(ticks for _, _, ticks in runs), strict=True):
        for tick in seconds:
            live.add(tick)  # type: ignore[arg-type]
    assert live.total.requests == 3000
    series = live.series(end_s=4.2)
    assert [p["requests"] for p in series] == [
        sum(r.per_second[s]["requests"] for r, _, _ in runs) for s in range(4)
    ]
    whole = LatencyHistogram()
    for result, _, _ in runs:
        whole.merge(result.latency)
    scope = live.scope(None)
    assert scope is not None and scope.latency.percentile(99) == whole.percentile(99)
    a = live.scope("a")
    assert a is not None and a.requests == sum(r.operations["a"].requests for r, _, _ in runs)
    assert live.scope("ghost") is None
    text = Console(width=120, record=True)
    text.print(live_view(live))
    assert "3000" in text.export_text()


def test_memory_stays_flat_over_a_million_records() -> None:
    """A million latencies through the engine's recording path: memory does not follow.

    Keeping even one int per request would hold ≥ 28 MB here; the check allows 8 MB of
    RSS noise, and tracemalloc over one second of 20,000 records (it is slow) must see < 100 kB
    retained (one int per request would be 560 kB).
    """
    result = LoadResult("open", "http://127.0.0.1/", 50.0, 1.0)
    result.latency_uncorrected = LatencyHistogram()
    stats = [OperationStats("a"), OperationStats("b")]
    rec = Recorder(result, 0.0, stats)
    rng = random.Random(0)
    pool = [int(rng.lognormvariate(8, 1)) for _ in range(4096)]
    total, warm, rate = 1_000_000, 100_000, 20_000

    def feed(start: int, stop: int) -> None:
        response, a, b = rec.response, stats[0], stats[1]
        for i in range(start, stop):
            us = pool[i & 4095]
            response(a if i & 1 else b, 200, 100, us, us, i / rate)
            if i % rate == 0:
                rec.ticks(i / rate)

    feed(0, warm + 1)  # every bucket these latencies touch exists now
    gc.collect()
    process = psutil.Process()
    rss = process.memory_info().rss
    tracemalloc.start()
    try:
        traced = tracemalloc.get_traced_memory()[0]
        # one whole second, from just after one tick to just after the next: the closed
        # second's histogram has left with its tick, as in a run
        feed(warm + 1, warm + rate + 1)
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - traced
    finally:
        tracemalloc.stop()
    feed(warm + rate + 1, total)
    rec.finish(total / rate, 1)
    gc.collect()
    grown = process.memory_info().rss - rss
    print(f"1M latencies recorded: RSS +{grown / 1e6:.2f} MB, 20k traced: +{retained} B")
    assert result.completed == total and len(result.per_second) == total // rate
    assert retained < 100_000
    assert grown < 8_000_000


# -- reports ---------------------------------------------------------------------------------
def make_report() -> dict[str, object]:
    scenario, _ = load_scenario(EXAMPLES / "clients-api.yaml")
    result, _, _ = fake_run(3, 3000, ops=("get client", "create order", "health"))
    thresholds = [*scenario.all_thresholds(), parse_threshold("max < 1ms")]
    verdicts = evaluate(thresholds, result.scope)
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    return build_report(
        result, scenario=scenario, source="clients-api.yaml", thresholds=verdicts,
        started_at=now, finished_at=now,
    )  # fmt: skip


def test_json_report_fields() -> None:
    report = json.loads(json.dumps(make_report()))
    assert report["report"] == "load" and report["crisisctl_version"]
    assert report["started_at"] == "2026-11-23T12:00:00.000Z"
    assert report["config"]["scenario"]["name"] == "clients API ramp"
    assert set(report["operations"]) == {"get client", "create order", "health"}
    assert {"rps", "errors", "p50_ms", "p95_ms", "p99_ms"} <= set(report["per_second"][0])
    assert report["environment"]["cpu_count"] >= 1 and report["environment"]["python"]
    assert not report["thresholds_passed"]
    failed = [t for t in report["thresholds"] if not t["passed"]]
    assert {t["expression"] for t in failed} >= {"max < 1ms"}
    spectrum = report["latency_spectrum_ms"]
    assert spectrum[0]["percentile"] == 0 and spectrum[-1]["percentile"] == 100
    assert [s["latency_ms"] for s in spectrum] == sorted(s["latency_ms"] for s in spectrum)


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.rows: list[list[str]] = []
        self._in_thresholds = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "table" and ("class", "thresholds") in attrs:
            self._in_thresholds = True
        elif tag == "tr" and self._in_thresholds:
            self.rows.append([])
        elif tag in ("td", "th") and self._in_thresholds:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_thresholds = False
        elif tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def test_html_report_is_self_contained_with_charts_and_thresholds() -> None:
    report = make_report()
    page = render_html(report)
    parser = _Collector()
    parser.feed(page)
    names = [tag for tag, _ in parser.tags]
    assert names.count("svg") == 3 and names.count("polyline") >= 5
    assert "script" not in names and "link" not in names and "img" not in names
    for _, attrs in parser.tags:
        for key in ("src", "href", "xlink:href", "action"):
            assert key not in attrs
        assert not any("://" in (value or "") for value in attrs.values())
    assert "url(" not in page and "@import" not in page
    header, *rows = parser.rows
    assert header == ["threshold", "scope", "value", "result"]
    assert len(rows) == len(report["thresholds"])  # type: ignore[arg-type]
    assert rows[-1][:2] == ["max < 1ms", "whole run"] and rows[-1][3].startswith("FAIL")
    assert any(r[:2] == ["p95 < 200ms", "get client"] for r in rows)


def test_html_escapes_report_text() -> None:
    report = make_report()
    report["name"] = "<script>alert(1)</script>"
    page = render_html(report)
    assert "<script>" not in page and "&lt;script&gt;" in page


@pytest.mark.parametrize(("high", "last"), [(0.0, 1.0), (7.3, 8.0), (430.0, 500.0), (0.9, 1.0)])
def test_nice_ticks(high: float, last: float) -> None:
    ticks = nice_ticks(high)
    assert ticks[0] == 0 and ticks[-1] == pytest.approx(last) and ticks == sorted(ticks)


# -- dropped arrivals ------------------------------------------------------------------------
def dropping_report(dropped: int) -> dict[str, object]:
    scenario, _ = load_scenario(EXAMPLES / "clients-api.yaml")
    result, _, _ = fake_run(5, 990, ops=("get client", "create order", "health"))
    result.dropped = dropped
    thresholds = with_defaults(scenario.all_thresholds(), open_model=True)
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    return build_report(
        result, scenario=scenario, source="clients-api.yaml",
        thresholds=evaluate(thresholds, result.scope), started_at=now, finished_at=now,
    )  # fmt: skip


def test_the_report_counts_dropped_arrivals_against_the_scheduled_ones() -> None:
    report = dropping_report(110)
    assert report["dropped"] == 110 and report["scheduled"] == 990 + 110
    assert report["dropped_rate"] == pytest.approx(0.1)
    assert report["error_rate"] < 0.1  # dropped arrivals are their own figure
    assert report["arrival"] == "constant" and report["planned_duration_s"] > 0
    default = next(t for t in report["thresholds"] if t["default"])  # type: ignore[union-attr]
    assert default["expression"] == "dropped_rate < 1%" and not default["passed"]
    assert default["value"] == pytest.approx(0.1) and not report["thresholds_passed"]


def rendered(report: dict[str, object]) -> str:
    console = Console(record=True, width=120, force_terminal=True, color_system="truecolor")
    with patch("crisisctl.cli.load.console", console):
        render(report)
    return console.export_html(inline_styles=True)


def plain(html: str) -> str:
    """The words of an exported console: no tags, no table borders, single spaces."""
    return " ".join(re.sub(r"[│┃]", " ", unescape(re.sub(r"<[^>]+>", "", html))).split())


def test_a_run_that_dropped_over_1_percent_says_so_in_red() -> None:
    shown = rendered(dropping_report(110))
    text = plain(shown)
    assert "dropped arrivals 110 of 1100 (10.00%)" in text
    assert "the load generator dropped 10.0% of the scheduled arrivals (110 of 1,100)" in text
    assert "dropped_rate < 1% (default)" in text
    red = re.findall(r'<span style="color: #800000[^"]*">([^<]*)</span>', shown)
    assert any("dropped 10.0%" in span for span in red)
    page = render_html(dropping_report(110))
    assert 'class="banner fail dropped"' in page and "dropped 10.0% of the scheduled" in page
    assert '<div class="card fail">dropped arrivals<b>10.00 %</b></div>' in page


def test_a_run_within_1_percent_of_drops_raises_no_alarm() -> None:
    report = dropping_report(5)  # 0.5 %
    text = plain(rendered(report))
    assert "dropped arrivals 5 of 995 (0.50%)" in text and "load generator dropped" not in text
    assert "banner fail dropped" not in render_html(report)


def test_html_shows_the_connection_set_up_split_and_lost_workers() -> None:
    report = make_report()
    report.update(connect_ms_mean=0.41, tls_ms_mean=2.5)
    report["distributed"] = {
        "workers": [
            {"worker": "w-a", "host": "10.9.0.2", "state": "done", "sent_requests": 250},
            {"worker": "w-b", "host": "10.9.0.3", "state": "lost", "sent_requests": 100},
        ],
        "lost": [
            {"worker": "w-b", "reason": "its heartbeat expired", "sent_requests": 100,
             "planned_arrivals": 250, "unsent_arrivals": 150},
        ],
    }  # fmt: skip
    text = plain(render_html(report))
    assert "connect 0.41 ms + TLS handshake 2.50 ms" in text
    assert "Distributed workers" in text and "10.9.0.3" in text
    lost = "w-b was lost (its heartbeat expired): 150 of its 250 planned arrivals were not sent"
    assert lost in text
