"""The lab's scan store: the concurrency cap, TTL expiry, deterministic data, the counters."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from crisisctl.lab.scanstore import WORKER_NICE, Scan, ScanStore, StoreSettings

TINY: dict[str, Any] = {"steps": 2, "step_cpu_ms": 0.1, "step_io_ms": 1.0, "read_cpu_ms": 0.0,
        "read_io_ms": 0.0, "report_cpu_ms": 0.1, "result_kb": 4}  # fmt: skip


@pytest.fixture
def blocked() -> Iterator[tuple[ScanStore, threading.Event]]:
    """A one-thread store whose only worker is held until the event is set."""
    store = ScanStore(StoreSettings(workers=1, ttl_s=5.0, **TINY), "fixed")
    gate = threading.Event()
    store.pool.submit(gate.wait, 10.0)
    yield store, gate
    gate.set()
    store.close()


def finish(store: ScanStore, scan: Scan) -> dict[str, object]:
    """Read `scan` once it has completed (a read queues behind the scan on a 1-thread pool)."""
    doc = store.read(scan).result(timeout=10.0)
    assert doc["status"] == "completed", doc
    return doc


def test_every_scan_is_accepted_and_its_work_future_ends_with_it(
    blocked: tuple[ScanStore, threading.Event],
) -> None:
    store, gate = blocked
    first, second, third = store.start("a"), store.start("b"), store.start("c")
    stats = store.stats()
    assert stats["scans_active"] == 3 and stats["scans_waiting"] == 3
    assert stats["scans_accepted"] == 3
    assert stats["pool_waiting"] == 3  # the held worker runs a task of the test, not a scan
    assert first.work is not None and not first.work.done()
    gate.set()
    for scan in (first, second, third):
        assert scan.work is not None
        scan.work.result(timeout=10.0)
        assert scan.status == "completed"
    finish(store, first)


def test_unlimited_store_accepts_everything() -> None:
    store = ScanStore(StoreSettings(workers=1, **TINY), "sick")
    try:
        scans = [store.start(f"s{i}") for i in range(20)]
        assert store.stats()["scans_accepted"] == len(scans) == 20
        assert store.expire(now=1e12) == 0  # no TTL: kept forever
    finally:
        store.close()


def test_ttl_drops_only_finished_scans_unread_for_the_ttl(
    blocked: tuple[ScanStore, threading.Event],
) -> None:
    store, gate = blocked
    done = store.start("done")
    waiting = store.start("waiting")
    assert done is not None and waiting is not None
    gate.set()
    finish(store, done)
    finish(store, waiting)
    waiting.finished = None  # pretend it still runs: never dropped
    assert store.expire(now=done.last_read + 4.9) == 0
    assert store.expire(now=done.last_read + 5.1) == 1
    assert store.get(done.id) is None and store.get(waiting.id) is waiting
    assert store.stats()["scans_expired"] == 1


def test_results_are_deterministic_and_sized() -> None:
    docs = []
    for _ in range(2):
        store = ScanStore(StoreSettings(workers=1, seed=11, **TINY), "sick")
        try:
            scan = store.start("x")
            assert scan is not None
            docs.append((finish(store, scan)["findings"], scan.result))
            assert len(scan.result) == 4 * 1024
            report = store.report(scan).result(timeout=5.0)
            assert report["result_bytes"] == 4 * 1024 and report["id"] == scan.id == "000001"
            stats = store.stats()
            assert stats["scans_stored"] == 1 and stats["stored_result_mb"] == 0.0
            assert stats["scans_completed"] == 1 and stats["recent_scan_p50_ms"] > 0
        finally:
            store.close()
    assert docs[0] == docs[1]


@pytest.mark.parametrize(
    "bad",
    [{"workers": 0}, {"steps": 0}, {"step_io_ms": -1.0}, {"ttl_s": 0.0}],
)
def test_invalid_settings_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        StoreSettings(**bad)


def test_the_workers_run_at_a_lower_cpu_priority_than_the_event_loop() -> None:
    """On a 2-core host, six threads burning PBKDF2 at the loop's own priority starved it: a
    validation burst then reached the guard at the rate it was served, and nothing was shed
    (make demo, 2026-12-06). Linux nice values are per thread."""
    store = ScanStore(StoreSettings(workers=2, **TINY), "fixed")
    try:
        mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        worker = store.pool.submit(
            lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        ).result(timeout=10.0)
        assert worker == min(19, mine + WORKER_NICE)
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine
    finally:
        store.close()
