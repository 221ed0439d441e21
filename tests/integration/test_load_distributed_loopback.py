"""Distributed load on loopback, fast: workers in threads of this process, the real Redis of
CRISISCTL_TEST_REDIS_URL (keys under ``crisisctl:dist:``, removed after each test).

The three-host proof with network namespaces is `test_load_distributed.py`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from test_load_scenario_runs import SEEN, AppServer, invoke, reset, scenario_file

from crisisctl.load.distributed import run_distributed
from crisisctl.load.distributed_worker import serve
from crisisctl.load.plan import RunError
from crisisctl.load.scenario import load_scenario
from crisisctl.load.thresholds import parse_threshold

REDIS_URL = os.environ.get("CRISISCTL_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def redis_url() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis not reachable at CRISISCTL_TEST_REDIS_URL ({exc}); start it")

    def clean() -> None:
        keys = list(client.scan_iter("crisisctl:dist:*"))
        if keys:
            client.delete(*keys)

    clean()
    yield REDIS_URL
    clean()


@pytest.fixture(scope="module")
def server() -> Iterator[AppServer]:
    with AppServer() as srv:
        yield srv


def test_the_coordinator_waits_for_workers_then_says_so(redis_url: str) -> None:
    result = invoke(
        "load", "http://127.0.0.1:9/", "--rate", 10, "--coordinator", redis_url, "--workers", 2,
        "--workers-timeout", "1s",
    )  # fmt: skip
    assert result.exit_code == 1
    assert "only 0 of 2 workers registered" in result.output
    assert "Traceback" not in result.output


def test_unreachable_redis_and_bad_options_are_one_sentence() -> None:
    result = invoke(
        "load", "http://127.0.0.1:9/", "--rate", 10, "--coordinator",
        "redis://:hunter2@127.0.0.1:1/0", "--workers", 1,
    )  # fmt: skip
    assert result.exit_code == 3 and "could not reach Redis" in result.output
    assert "hunter2" not in result.output and "***" in result.output
    result = invoke("load", "http://127.0.0.1:9/", "--rate", 10, "--workers", 2)
    assert result.exit_code == 2 and "--coordinator" in result.output
    result = invoke("load-worker", "redis://127.0.0.1:1/0")
    assert result.exit_code == 3 and "could not reach Redis" in result.output


def test_closed_model_users_split_over_workers_with_logins(
    redis_url: str, server: AppServer, tmp_path: Path
) -> None:
    reset()
    text = """\
login: {path: /login, json: {user: alice, password: secret}}
model: {type: closed, users: 3, duration: 1s, think: 20ms}
operations: [{path: "/api/clients/{id}", variables: {id: {list: [1]}}}]
"""
    scenario, _ = load_scenario(scenario_file(tmp_path, server, text))
    said: list[str] = []
    workers = [
        threading.Thread(target=serve, args=(redis_url,), kwargs={"say": said.append})
        for _ in range(2)
    ]
    for w in workers:
        w.start()
    started = time.monotonic()
    outcome = run_distributed(scenario, tmp_path, redis_url, workers=2, wait_s=10)
    for w in workers:
        w.join(10)
    result, dist = outcome.result, outcome.distributed
    assert dist is not None and dist["lost"] == []
    assert result.users == 3 and SEEN["logins"] == 3 and SEEN["unauthorized"] == 0
    assert result.requests == SEEN["requests"] == sum(w["sent_requests"] for w in dist["workers"])
    assert result.status_counts == {200: result.requests}
    assert time.monotonic() - started < 15
    assert not any(w.is_alive() for w in workers)  # one run, then exit


def test_a_worker_error_fails_the_run_in_one_sentence(redis_url: str, tmp_path: Path) -> None:
    text = "base_url: http://127.0.0.1:9\nmodel: {type: closed, users: 1, duration: 1s}\n"
    text += "login: {path: /login}\noperations: [{path: /}]\n"
    (tmp_path / "s.yaml").write_text(text)
    scenario, _ = load_scenario(tmp_path / "s.yaml")
    worker = threading.Thread(target=serve, args=(redis_url,), kwargs={"say": lambda _: None})
    worker.start()
    with pytest.raises(RunError) as info:
        run_distributed(scenario, tmp_path, redis_url, workers=1, wait_s=10)
    worker.join(10)
    assert info.value.code == 3 and "could not connect" in str(info.value)


def test_an_abort_halts_every_worker(redis_url: str, server: AppServer, tmp_path: Path) -> None:
    text = "model: {type: open, rate: 100, duration: 30s}\noperations: [{path: /fail}]\n"
    scenario, _ = load_scenario(scenario_file(tmp_path, server, text))
    threshold = parse_threshold("error_rate < 5%", abort_on_fail=True, delay_abort_eval_s=1.0)
    workers = [
        threading.Thread(target=serve, args=(redis_url,), kwargs={"say": lambda _: None})
        for _ in range(2)
    ]
    for w in workers:
        w.start()
    started = time.monotonic()
    outcome = run_distributed(scenario, tmp_path, redis_url, workers=2, thresholds=[threshold])
    for w in workers:
        w.join(10)
    assert time.monotonic() - started < 20  # 30 s planned
    assert outcome.aborted_by is threshold
    assert outcome.result.aborted == "threshold 'error_rate < 5%' failed"
    assert outcome.result.requests < 1500 and outcome.result.processes == 2
    assert not any(w.is_alive() for w in workers)


def test_a_worker_runs_its_share_over_several_processes_exactly(
    redis_url: str, server: AppServer, tmp_path: Path
) -> None:
    """Worker shares over engine processes: one worker on 2 processes, one on 1; the merged
    totals are the schedule's, to the request, and each worker's share is its own."""
    reset()
    text = "model: {type: open, rate: 200, duration: 1s}\noperations: [{path: /api/clients/1}]\n"
    scenario, _ = load_scenario(scenario_file(tmp_path, server, text))
    workers = [
        threading.Thread(
            target=serve, args=(redis_url,), kwargs={"say": lambda _: None, "processes": n}
        )
        for n in (2, 1)
    ]
    for w in workers:
        w.start()
    outcome = run_distributed(scenario, tmp_path, redis_url, workers=2, wait_s=20)
    for w in workers:
        w.join(20)
    result, dist = outcome.result, outcome.distributed
    assert dist is not None and dist["lost"] == []
    assert result.requests == SEEN["requests"] == 200 and result.dropped == 0
    assert sorted(w["sent_requests"] for w in dist["workers"]) == [100, 100]
    assert result.processes == 3  # the merged result counts every engine process
    assert sum(p["requests"] for p in result.per_second) == 200
    assert not any(w.is_alive() for w in workers)
