"""The lab's scanning service in real uvicorn processes on 127.0.0.1, its crowd, and the load
engine against it (what tests/integration/test_openloop.py covered for the old prototype and
test_load_engine.py does not: POST bodies, HEAD, refusing non-loopback URLs).

Timing assertions are lower bounds only (a busy machine makes the sick service slower, never
faster), except where a guard or a cap must answer at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from crisisctl.lab import scan_quota
from crisisctl.lab.crowd import BACKOFF, EVERY_2S, Crowd, CrowdConfig
from crisisctl.lab.process import LabError, ServiceProcess, free_port
from crisisctl.load import run_open

#: one worker, scans of 5 steps × (2 ms CPU + 60 ms wait) ≈ 0.3 s, 64 KB of results each
SICK = {"workers": 1, "steps": 5, "step_cpu_ms": 2.0, "step_io_ms": 60.0, "result_kb": 64}
#: two workers, scans of ≈ 0.6 s, a 1 s TTL checked every 0.2 s (the guard's periodic hook)
FIXED = {"workers": 2, "steps": 2, "step_cpu_ms": 1.0, "step_io_ms": 300.0, "ttl_s": 1.0,
         "cleanup_every_s": 0.2}  # fmt: skip


@pytest.fixture
async def sick(tmp_path: Path) -> AsyncIterator[ServiceProcess]:
    service = ServiceProcess("sick", free_port(), settings=SICK, log_path=tmp_path / "sick.log")
    await service.start()
    yield service
    await asyncio.to_thread(service.stop)


@pytest.fixture
async def fixed(tmp_path: Path) -> AsyncIterator[ServiceProcess]:
    service = ServiceProcess(
        "fixed", free_port(), settings=FIXED, token="t", log_path=tmp_path / "fixed.log"
    )
    await service.start()
    yield service
    await asyncio.to_thread(service.stop)


async def test_sick_service_queues_reads_behind_scans_and_keeps_results(
    sick: ServiceProcess,
) -> None:
    async with httpx.AsyncClient(base_url=sick.url, trust_env=False, timeout=20.0) as client:
        ids = [(await client.post("/api/scans", json={})).json()["id"] for _ in range(4)]
        started = time.monotonic()
        doc = (await client.get(f"/api/scans/{ids[0]}")).json()
        waited = time.monotonic() - started
        # the read queued behind the three scans still waiting for the only worker
        assert waited > 3 * 5 * 0.060
        assert doc["status"] == "completed"
        stats = (await client.get("/api/stats")).json()
        assert stats["scans_accepted"] == 4
        assert stats["scans_stored"] == 4 and stats["stored_result_mb"] == 0.25
        assert stats["pid"] == sick.pid


async def test_fixed_service_caps_limits_and_expires(fixed: ServiceProcess) -> None:
    async with httpx.AsyncClient(base_url=fixed.url, trust_env=False, timeout=10.0) as client:
        answers = [await client.post("/api/scans", json={"name": f"s{i}"}) for i in range(3)]
        assert [a.status_code for a in answers] == [202, 202, 429]
        # the guard's operation quota: the two scans hold its slots after their 202
        assert answers[2].json()["reason"] == "operation_quota"
        assert answers[2].headers["retry-after"] == "1"
        malformed = await client.post(
            "/api/scans", content=b'{"name": ', headers={"content-type": "application/json"}
        )
        assert malformed.status_code == 400  # bad input is told so even while the quota is full
        # 4 of the 10 per minute used: the guard refuses the 11th
        rest = [(await client.post("/api/scans", content=b"{")).status_code for _ in range(7)]
        assert rest[:6] == [400] * 6 and rest[6] == 429
        scan_id = answers[0].json()["id"]
        deadline = time.monotonic() + 10.0
        while (await client.get(f"/api/scans/{scan_id}")).json()["status"] != "completed":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await asyncio.sleep(2.5)  # unread for more than the 1 s TTL (cleanup every 0.2 s)
        assert (await client.get(f"/api/scans/{scan_id}")).status_code == 404
        stats = (await client.get("/api/stats")).json()
        assert stats["scans_expired"] >= 1 and stats["scans_accepted"] == 2
        guard = (await client.get("/_crisis/status")).json()
        scans = guard["policies"]["operations"]["quotas"]["scan"]
        assert scans["max_concurrent"] == 2 and scans["refused_total"]["quota"] == 1
        assert scans["held_here"] == 0 and scans["released_total"] == 2
        # the TTL sweep is the guard's periodic cleanup hook, not a task of the app's own
        (sweep,) = guard["memory"]["periodic"]
        assert sweep["name"] == "ScanStore.expire" and sweep["every_s"] == 0.2
        assert sweep["runs"] >= 5 and sweep["failures"] == 0
        assert guard["service"] == "crisisctl-guard" and guard["pid"] == fixed.pid
        switched = await client.post(
            "/_crisis/mode", json={"mode": "emergency"}, headers={"authorization": "Bearer t"}
        )
        assert switched.status_code == 200 and switched.json()["mode"] == "emergency"


async def test_crowd_polls_every_2s_or_backs_off(sick: ServiceProcess) -> None:
    config = CrowdConfig(users=2, tabs=2, scan_every_s=0.5, max_unfinished=1)
    crowd = Crowd(sick.url, config, EVERY_2S)
    crowd.start()
    try:
        await asyncio.sleep(4.0)
        crowd.pause()
        aggressive = crowd.end_phase()
        await crowd.drain()
        crowd.resume(BACKOFF)
        await asyncio.sleep(3.0)
        backoff = crowd.end_phase()
    finally:
        await crowd.stop()
    assert aggressive["scans_started"] >= 2 and aggressive["polls"] >= 2
    assert aggressive["poll_status"].get("200", 0) >= 1
    # the shared backoff schedule polls first 5 s after a scan starts; one scan per user
    assert backoff["polls"] == 0
    assert 1 <= backoff["scans_started"] <= config.users
    await crowd.stop()  # idempotent


async def test_load_engine_posts_bodies_and_heads(sick: ServiceProcess) -> None:
    created = await run_open(
        f"{sick.url}/api/scans", rate=20, duration_s=0.5, connections=4, method="POST",
        body=b'{"name": "load"}', headers={"Content-Type": "application/json"},
    )  # fmt: skip
    assert created.status_counts == {202: 10} and created.error_total == 0
    broken = await run_open(
        f"{sick.url}/api/scans", rate=20, duration_s=0.25, connections=2, method="POST",
        body=b'{"name": ',
    )  # fmt: skip
    assert broken.status_counts == {400: 5} and broken.unexpected == 5
    heads = await run_open(f"{sick.url}/health", rate=20, duration_s=0.25, method="HEAD")
    assert heads.status_counts == {200: 5} and heads.bytes_received == 0


@pytest.mark.parametrize(
    "url",
    ["http://10.0.0.1/", "http://example.com/", "http://[2001:db8::1]/", "https://127.0.0.1/"],
)
def test_the_lab_crowd_refuses_non_loopback(url: str) -> None:
    with pytest.raises(ValueError):
        Crowd(url, CrowdConfig())


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/", "127.0.0.1:80", "http:///x"])
async def test_load_engine_refuses_what_is_not_an_http_url(url: str) -> None:
    with pytest.raises(ValueError):
        await run_open(url, rate=1, duration_s=0.1)


async def test_a_service_that_cannot_start_says_why(tmp_path: Path) -> None:
    service = ServiceProcess(
        "sick", free_port(), settings={"threads": 3}, log_path=tmp_path / "bad.log"
    )
    with pytest.raises(LabError, match="exited at start"):
        await service.start(timeout_s=20.0)
    assert not service.running


async def test_the_demos_quota_check_shows_the_guard_refusing_an_excess_scan(
    fixed: ServiceProcess,
) -> None:
    shown = await scan_quota.show(fixed.url, 2)
    assert shown["statuses"] == [202, 202, 429] and shown["refused"] is True
    assert shown["retry_after"] == "1" and "refused an excess scan" in shown["message"]
    async with httpx.AsyncClient(base_url=fixed.url, trust_env=False, timeout=10.0) as client:
        status = (await client.get("/_crisis/status")).json()
    scans = status["policies"]["operations"]["quotas"]["scan"]
    assert scans["held_here"] == 0 and scans["refused_total"]["quota"] == 1  # show() waited
