"""`source: {prometheus: URL}` against a real Prometheus scraping a real guarded app: the series
come back under the names and labels the scraper writes, and a failing source (bad PromQL, an
unreachable server) is one sentence per problem and missing data, never a crashed cycle."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from guard_servers import free_port, guard_servers
from prom_stack import Process, prometheus

from crisisctl.watch.config import WatchConfig, parse_watch_text
from crisisctl.watch.loop import Watch
from crisisctl.watch.promsource import PrometheusScraper


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    folder = tmp_path_factory.mktemp("promsource")
    with guard_servers({}) as (app,):
        config = f"""\
global: {{scrape_interval: 1s}}
scrape_configs:
  - job_name: shop
    metrics_path: /_crisis/metrics
    static_configs: [{{targets: ["{app.url.removeprefix("http://")}"], labels: {{service: shop}}}}]
"""
        with prometheus(config, folder) as server, httpx.Client(trust_env=False) as client:
            for _ in range(20):
                client.get(f"{app.url}/ok")
            deadline = time.monotonic() + 15
            while not server.query("crisisctl_http_requests_total"):
                assert time.monotonic() < deadline, server.output()
                time.sleep(0.2)
            yield server


def config(url: str, tmp_path: Path, extra: str = "") -> WatchConfig:
    text = f"interval: 1s\nstate_dir: {tmp_path}\nsource: {{prometheus: '{url}'{extra}}}\n"
    text += "rules: [{name: hot, kind: threshold, metric: process_cpu_seconds_total, above: 1e9}]\n"
    return parse_watch_text(text, "watch.yaml")


def scraper(url: str, tmp_path: Path, extra: str = "") -> PrometheusScraper:
    return PrometheusScraper(config(url, tmp_path, extra))


async def test_the_guard_series_come_back_as_the_scraper_names_and_labels_them(
    prom: Process, tmp_path: Path
) -> None:
    source = scraper(prom.url, tmp_path)
    samples = await source.scrape()
    assert source.last_errors == []
    by_name: dict[str, list[dict[str, str]]] = {}
    for key, _value in samples:
        by_name.setdefault(key.name, []).append(dict(key.labels))
    names = ["guard_requests_total", "guard_errors_total", "guard_duration_count_total"]
    names += ["guard_duration_le_total", "guard_in_flight", "guard_rejected_total", "up"]
    for name in names:
        assert name in by_name, name
        assert all(labels["service"] == "shop" for labels in by_name[name])
    assert {labels["le"] for labels in by_name["guard_duration_le_total"]} >= {"0.1", "+Inf"}
    values = dict(
        (key.name, value) for key, value in samples if key.name != "guard_duration_le_total"
    )
    assert values["guard_requests_total"] >= 20 and values["up"] == 1.0


async def test_bad_promql_is_one_sentence_per_problem_and_the_cycle_goes_on(
    prom: Process, tmp_path: Path
) -> None:
    source = scraper(prom.url, tmp_path, ", selector: '{job=~\"(\"}'")
    assert await source.scrape() == []
    assert source.last_errors
    assert all(e.startswith(f"Prometheus at {prom.url} answered 400") for e in source.last_errors)
    assert all(e.count("\n") == 0 and e.endswith(".") for e in source.last_errors)
    watch = Watch(config(prom.url, tmp_path, ", selector: '{job=~\"(\"}'"))
    assert await watch.cycle() == []  # missing data, no crash, nothing fires


async def test_an_unreachable_prometheus_is_missing_data_not_a_crash(tmp_path: Path) -> None:
    source = scraper(f"http://127.0.0.1:{free_port()}", tmp_path, ", timeout: 1s")
    assert await source.scrape() == []
    assert source.last_errors and "could not be reached" in source.last_errors[0]


async def test_a_starting_watch_reads_the_rules_windows_back_from_prometheus(
    prom: Process, tmp_path: Path
) -> None:
    await asyncio.sleep(3)  # a few scrapes of history
    watch = Watch(config(prom.url, tmp_path))
    assert await watch.backfill() > 0
    [key] = list(watch.store.select("guard_requests_total"))
    series = watch.store.get(key)
    assert series is not None
    assert series.covered_s(time.time()) >= 2.0  # history, not a single look
    none = Watch(config(prom.url, tmp_path, ", backfill: 0s"))
    assert await none.backfill() == 0 and len(none.store) == 0
