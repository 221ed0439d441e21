"""The guard in front of a real app, served by real uvicorn processes on 127.0.0.1.

Servers come from guard_servers.py (subprocesses running guard_apps.py); clients are httpx.
Redis tests use CRISISCTL_TEST_REDIS_URL (default redis://127.0.0.1:6379/15) and skip when it
does not answer; they use rule patterns unique to the test, so their keys never collide.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from guard_servers import GuardServer, guard_servers
from prometheus_client.parser import text_string_to_metric_families

from crisisctl._pure import compiled

REDIS_URL = os.environ.get("CRISISCTL_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
TOKEN = "s3cret-token"

Labels = tuple[tuple[str, str], ...]


def client() -> httpx.Client:
    return httpx.Client(trust_env=False, timeout=5.0)


def metrics(url: str) -> dict[str, dict[Labels, float]]:
    """Every sample of GET /_crisis/metrics: {sample name: {sorted labels: value}}."""
    response = httpx.get(f"{url}/_crisis/metrics", trust_env=False, timeout=5.0)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    out: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def status(url: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/_crisis/status", trust_env=False, timeout=5.0)
    assert response.status_code == 200
    data: dict[str, Any] = response.json()
    return data


def app_state(url: str) -> dict[str, Any]:
    data: dict[str, Any] = httpx.get(f"{url}/state", trust_env=False, timeout=5.0).json()
    return data


def wait_for(condition: Any, timeout_s: float, step_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"condition not met within {timeout_s} s"
        time.sleep(step_s)


# A server shared by the tests that don't change its global state (modes, shedding).
BASIC = {
    "token": "",
    "routes": [
        {"pattern": "/limited", "rate_limit": "3/minute"},
        {"pattern": "/sleep", "timeout_s": 0.3},
    ],
    "breaker": {"window_s": 10, "min_calls": 50},
}


@pytest.fixture(scope="module")
def basic() -> Iterator[GuardServer]:
    with guard_servers(BASIC) as (server,):
        yield server


# -- 1. rate limit: 429 and its headers --------------------------------------------------------


def test_rate_limited_route_answers_429_with_headers(basic: GuardServer) -> None:
    with client() as http:
        remaining = []
        policies = []
        for _ in range(3):
            response = http.get(f"{basic.url}/limited")
            assert response.status_code == 200
            policies.append(response.headers.get("ratelimit-policy"))
            remaining.append(response.headers["ratelimit"])
        # the static policy is announced with a client's first response (and every refusal)
        assert policies == ['"3-per-60s";q=3;w=60', None, None]
        assert remaining == [
            '"3-per-60s";r=2;t=20',
            '"3-per-60s";r=1;t=40',
            '"3-per-60s";r=0;t=60',
        ]
        start = time.monotonic()
        refused = http.get(f"{basic.url}/limited")
        assert time.monotonic() - start < 0.5
    assert refused.status_code == 429
    assert refused.headers["ratelimit-policy"] == '"3-per-60s";q=3;w=60'
    assert refused.headers["ratelimit"] == '"3-per-60s";r=0;t=60'
    retry_after = refused.headers["retry-after"]
    assert retry_after.isdigit()
    assert 19 <= int(retry_after) <= 20  # one interval (20 s), rounded up
    body = refused.json()
    assert body["reason"] == "rate_limited"
    assert body["route"] == "/limited"
    assert 19 < body["retry_after_s"] <= 20
    assert "3 requests per 60 s" in body["error"]
    # unlimited routes carry no rate-limit headers
    ok = httpx.get(f"{basic.url}/ok", trust_env=False)
    assert ok.status_code == 200
    assert "ratelimit" not in ok.headers


# -- 2 & 3. Redis: limits shared across processes; Redis down ----------------------------------


@pytest.fixture(scope="module")
def redis_url() -> str:
    probe = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1.0, socket_timeout=1.0)
    try:
        probe.ping()
    except (redis.RedisError, OSError) as exc:
        pytest.skip(f"Redis not reachable at CRISISCTL_TEST_REDIS_URL ({exc}); start it")
    finally:
        probe.close()
    return REDIS_URL


@pytest.fixture
def namespace(redis_url: str) -> Iterator[str]:
    """A string unique to the test, used in its rule patterns (hence in its Redis keys)."""
    ns = uuid.uuid4().hex
    yield ns
    cleaner = redis.Redis.from_url(redis_url, socket_timeout=2.0)
    try:
        keys = list(cleaner.scan_iter(match=f"*crisisctl:rl:*{ns}*", count=1000))
        if keys:
            cleaner.delete(*keys)
    finally:
        cleaner.close()


@pytest.mark.redis
def test_limits_are_shared_by_two_processes_through_redis(redis_url: str, namespace: str) -> None:
    config = {
        "token": "",
        "storage": redis_url,
        "routes": [
            {"pattern": f"/rl/{namespace}/a", "rate_limit": "10/minute"},
            {"pattern": f"/rl/{namespace}/b", "rate_limit": "10/minute"},
        ],
    }
    with guard_servers(config, config) as (one, two), client() as http:
        # the servers meet the rules in a different order (their policies are built lazily)
        assert http.get(f"{one.url}/rl/{namespace}/a").status_code == 200
        statuses = []
        for i in range(16):
            server = two if i % 2 == 0 else one
            response = http.get(f"{server.url}/rl/{namespace}/b")
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert int(response.headers["retry-after"]) >= 1
        assert statuses == [200] * 10 + [429] * 6
        # either server refuses now, and the other rule still has its own budget
        assert http.get(f"{one.url}/rl/{namespace}/b").status_code == 429
        assert http.get(f"{two.url}/rl/{namespace}/b").status_code == 429
        assert [http.get(f"{two.url}/rl/{namespace}/a").status_code for _ in range(10)] == (
            [200] * 9 + [429]
        )
        for server in (one, two):
            storage = status(server.url)["storage"]
            assert storage["healthy"] is True
            assert storage["fallback_hits_total"] == 0
            m = metrics(server.url)
            assert m["crisisctl_guard_ratelimit_storage_up"][()] == 1.0


def test_redis_unreachable_falls_back_to_local_limits() -> None:
    namespace = uuid.uuid4().hex
    config = {
        "token": "",
        "storage": "redis://127.0.0.1:1/0",
        "routes": [{"pattern": f"/rl/{namespace}/x", "rate_limit": "3/minute"}],
    }
    with guard_servers(config) as (server,), client() as http:
        start = time.monotonic()
        statuses = [http.get(f"{server.url}/rl/{namespace}/x").status_code for _ in range(5)]
        assert time.monotonic() - start < 2.5  # no request waits long for the dead storage
        assert statuses == [200, 200, 200, 429, 429]
        assert http.get(f"{server.url}/ok").status_code == 200
        m = metrics(server.url)
        assert m["crisisctl_guard_ratelimit_storage_up"][()] == 0.0
        assert m["crisisctl_guard_ratelimit_storage_errors_total"][()] >= 1
        assert m["crisisctl_guard_ratelimit_fallback_total"][()] == 5
        assert m["crisisctl_guard_internal_errors_total"][()] == 0
        storage = status(server.url)["storage"]
        assert storage["healthy"] is False
        assert storage["last_error"]
        assert storage["url"] == "redis://127.0.0.1:1/0"


# -- 4. shedding under a concurrency burst -----------------------------------------------------


async def test_burst_is_shed_fast_while_health_stays_up() -> None:
    config = {
        "token": "",
        "concurrency": {
            "mode": "static", "limit": 2, "queue_size": 2, "queue_timeout_s": 0.1,
            "scope": "service",
        },
    }  # fmt: skip
    with guard_servers(config) as (server,):
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(trust_env=False, timeout=5.0, limits=limits) as http:

            async def timed(path: str) -> tuple[httpx.Response, float]:
                start = time.monotonic()
                response = await http.get(f"{server.url}{path}")
                return response, time.monotonic() - start

            # open the connections first, so the burst is not a burst of TCP handshakes
            await asyncio.gather(*(http.get(f"{server.url}/ok") for _ in range(22)))
            burst = [asyncio.create_task(timed("/slow?s=0.5")) for _ in range(20)]
            await asyncio.sleep(0.15)
            probes = [await timed(path) for path in ("/_crisis/health", "/health") * 3]
            results = await asyncio.gather(*burst)
            # the overload is over once a slot is free with nobody waiting: a later small
            # excess waits in the queue (FIFO, up to 100 ms) instead of being shed within the
            # 5 ms target of a standing overload
            after = await asyncio.gather(*(timed("/slow?s=0.03") for _ in range(3)))

        for response, elapsed in probes:
            assert response.status_code == 200
            assert elapsed < 0.2
        served = [(r, t) for r, t in results if r.status_code == 200]
        shed = [(r, t) for r, t in results if r.status_code == 503]
        assert len(served) == 2
        assert len(shed) == 18
        for response, elapsed in shed:
            assert response.headers["retry-after"] == "1"
            assert response.json()["reason"] in ("queue_full", "queue_timeout")
            assert elapsed < 0.4  # shed at once or after the 100 ms queue timeout, not 0.5 s
        reasons = Counter(r.json()["reason"] for r, _ in shed)
        # how many waited in the queue (2 at a time, 100 ms each) before being shed depends on
        # how fast the burst arrives; at least the first two did, and the queue overflowed
        assert reasons["queue_timeout"] >= 2
        assert reasons["queue_full"] >= 1
        assert [r.status_code for r, _ in after] == [200, 200, 200]
        assert app_state(server.url)["peak"] == 2  # the app never saw more than the limit
        doc = status(server.url)
        assert doc["shed"] == dict(reasons)
        assert doc["concurrency"]["shed_queue_full"] == reasons["queue_full"]
        assert doc["concurrency"]["shed_queue_timeout"] == reasons["queue_timeout"]
        assert doc["concurrency"]["limit"] == 2


# -- 5. circuit breaker ------------------------------------------------------------------------

BREAKER = {
    "token": "",
    "breaker": {"window_s": 2, "min_calls": 4, "failure_ratio": 0.5, "open_s": 1.0,
                "half_open_calls": 2},
}  # fmt: skip


def test_breaker_opens_answers_instantly_half_opens_and_closes() -> None:
    with guard_servers(BREAKER) as (server,), client() as http:
        base = server.url
        assert http.get(f"{base}/flaky").status_code == 200
        http.post(f"{base}/toggle?fail=1")
        assert [http.get(f"{base}/flaky").status_code for _ in range(3)] == [500, 500, 500]
        # 3 failures out of 4 calls, min_calls reached: open
        assert status(base)["breakers"]["/flaky"]["state"] == "open"
        start = time.monotonic()
        refused = http.get(f"{base}/flaky")
        assert time.monotonic() - start < 0.1
        assert refused.status_code == 503
        assert refused.json()["reason"] == "circuit_open"
        assert refused.json()["route"] == "/flaky"
        assert refused.headers["retry-after"] == "1"
        # other routes are unaffected
        assert http.get(f"{base}/ok").status_code == 200
        # after open_s, a probe goes through; the route still fails: open again at once
        time.sleep(1.1)
        assert http.get(f"{base}/flaky").status_code == 500
        assert http.get(f"{base}/flaky").status_code == 503
        # the route recovers; after open_s two successful probes close the breaker
        http.post(f"{base}/toggle?fail=0")
        time.sleep(1.1)
        assert [http.get(f"{base}/flaky").status_code for _ in range(5)] == [200] * 5
        doc = status(base)
        assert doc["breakers"]["/flaky"]["state"] == "closed"
        assert doc["breakers"]["/flaky"]["opens_total"] == 2
        assert doc["shed"] == {"circuit_open": 2}
        m = metrics(base)
        assert m["crisisctl_guard_circuit_state"][(("route", "/flaky"),)] == 0.0
        assert (
            m["crisisctl_guard_rejected_total"][(("reason", "circuit_open"), ("route", "/flaky"))]
            == 2
        )


# -- 6. modes over HTTP ------------------------------------------------------------------------

MODES = {
    "routes": [
        {"pattern": "/low", "priority": "low"},
        {"pattern": "/limited", "rate_limit": "10/minute"},
    ],
    "emergency": {"ramp_s": 1.5},
}


def test_mode_endpoint_is_disabled_without_a_token() -> None:
    with guard_servers({**MODES, "token": ""}) as (server,), client() as http:
        response = http.post(
            f"{server.url}/_crisis/mode",
            json={"mode": "emergency"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert response.status_code == 403
        assert "token" in response.json()["error"]
        assert http.get(f"{server.url}/_crisis/mode").json()["mode"] == "normal"
        document = status(server.url)
        assert document["mode_endpoint"] == "disabled"
        # the server runs the request path the test process runs: compiled unless told not to
        assert document["compiled"] is compiled()


def test_mode_switch_over_http() -> None:
    with guard_servers({**MODES, "token": TOKEN}) as (server,), client() as http:
        url = f"{server.url}/_crisis/mode"
        body = {"mode": "emergency", "actor": "alice", "reason": "p95 at 8x target"}
        missing = http.post(url, json=body)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"].startswith("Bearer")
        wrong = http.post(url, json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert status(server.url)["mode"]["mode"] == "normal"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        bad = http.post(url, json={"mode": "panic"}, headers=auth)
        assert bad.status_code == 400
        assert "unknown mode 'panic'" in bad.json()["error"]

        switched = http.post(url, json=body, headers=auth)
        assert switched.status_code == 200
        assert switched.json()["mode"] == "emergency"
        doc = status(server.url)
        assert doc["mode"]["mode"] == "emergency"
        change = doc["mode"]["history"][-1]
        assert {k: change[k] for k in ("previous", "mode", "actor", "reason", "source")} == {
            "previous": "normal",
            "mode": "emergency",
            "actor": "alice",
            "reason": "p95 at 8x target",
            "source": "http",
        }
        assert doc["concurrency"]["factor"] == 0.5
        m = metrics(server.url)
        assert m["crisisctl_guard_mode"][(("mode", "emergency"),)] == 1.0
        assert m["crisisctl_guard_mode"][(("mode", "normal"),)] == 0.0

        # low priority shed, normal routes served, rate limits halved
        low = http.get(f"{server.url}/low")
        assert low.status_code == 503
        assert low.json()["reason"] == "emergency"
        assert int(low.headers["retry-after"]) >= 1
        assert http.get(f"{server.url}/ok").status_code == 200
        limited = http.get(f"{server.url}/limited")
        assert limited.status_code == 200
        assert limited.headers["ratelimit-policy"] == '"5-per-60s";q=5;w=60'
        assert http.get(f"{server.url}/_crisis/health").json()["mode"] == "emergency"

        # recovering: nothing shed any more, factors ramp back, then normal by itself
        recovering = http.post(url, json={"mode": "recovering"}, headers=auth)
        assert recovering.status_code == 200
        assert recovering.json()["mode"] == "recovering"
        assert recovering.json()["history"][-1]["actor"] == "127.0.0.1"  # no actor given
        assert http.get(f"{server.url}/low").status_code == 200
        factor = status(server.url)["concurrency"]["factor"]
        assert 0.5 <= factor < 1.0
        wait_for(lambda: http.get(url).json()["mode"] == "normal", timeout_s=4.0)
        doc = status(server.url)
        last = doc["mode"]["history"][-1]
        assert (last["previous"], last["mode"], last["source"]) == ("recovering", "normal", "ramp")
        assert [c["mode"] for c in doc["mode"]["history"]] == ["emergency", "recovering", "normal"]
        assert doc["concurrency"]["factor"] == 1.0
        assert doc["rate_limits"][0]["limits"] == ["10/60s"]
        assert doc["shed"] == {"emergency": 1}


# -- 7. metrics --------------------------------------------------------------------------------


def test_metrics_are_prometheus_text_labelled_by_template(basic: GuardServer) -> None:
    with client() as http:
        assert http.get(f"{basic.url}/items/1").status_code == 200
        assert http.get(f"{basic.url}/items/2").status_code == 200
        assert http.get(f"{basic.url}/items/2", params={"q": "x"}).status_code == 200
        assert http.get(f"{basic.url}/nowhere/3").status_code == 404
        assert http.get(f"{basic.url}/nowhere/4").status_code == 404
    m = metrics(basic.url)
    requests = m["crisisctl_http_requests_total"]
    assert (
        requests[(("method", "GET"), ("route", "/items/{item_id}"), ("status_class", "2xx"))] == 3
    )
    assert requests[(("method", "GET"), ("route", "<unmatched>"), ("status_class", "4xx"))] == 2
    every_label = {value for series in m.values() for labels in series for _, value in labels}
    assert not any(v.startswith(("/items/1", "/items/2", "/nowhere")) for v in every_label)

    buckets = m["crisisctl_http_request_duration_seconds_bucket"]
    route_buckets = {
        dict(labels)["le"]: value
        for labels, value in buckets.items()
        if dict(labels)["route"] == "/items/{item_id}"
    }
    assert route_buckets["+Inf"] == 3
    assert route_buckets["60.0"] == 3
    les = sorted((float(le), n) for le, n in route_buckets.items())
    assert [n for _, n in les] == sorted(n for _, n in les)  # cumulative
    assert m["crisisctl_http_request_duration_seconds_count"][(("route", "/items/{item_id}"),)] == 3
    assert m["crisisctl_http_request_duration_seconds_sum"][(("route", "/items/{item_id}"),)] > 0

    # the adaptive default (32), or on its way down to the app-limited floor if the server has
    # been quiet for a second or more (congestion window validation)
    # scope "route" (the default): the guard-wide ceiling, max_limit; each route has its own
    assert m["crisisctl_guard_concurrency_limit"][()] == 1000
    assert m["crisisctl_guard_queue_length"][()] == 0
    assert m["crisisctl_guard_mode"][(("mode", "normal"),)] == 1.0
    assert m["crisisctl_guard_internal_errors_total"][()] == 0


def test_rejections_are_counted_by_reason(basic: GuardServer) -> None:
    with client() as http:
        statuses = [http.get(f"{basic.url}/rl/metrics/x").status_code for _ in range(2)]
        for _ in range(4):
            http.get(f"{basic.url}/limited")
    assert statuses == [200, 200]  # no rule: no limit
    rejected = metrics(basic.url)["crisisctl_guard_rejected_total"]
    assert rejected[(("reason", "rate_limited"), ("route", "/limited"))] >= 4
    assert not any(dict(labels)["route"].startswith("/rl/metrics") for labels in rejected)


# -- 8. request timeout ------------------------------------------------------------------------


def test_timeout_answers_504_and_cancels_the_handler(basic: GuardServer) -> None:
    before = app_state(basic.url)
    with client() as http:
        start = time.monotonic()
        response = http.get(f"{basic.url}/sleep", params={"s": "2"})
        elapsed = time.monotonic() - start
    assert response.status_code == 504
    assert 0.28 <= elapsed < 0.6  # timeout_s 0.3 + one ticker step (15 ms) + transport
    body = response.json()
    assert body["reason"] == "timeout"
    assert body["timeout_s"] == 0.3
    after = app_state(basic.url)
    assert after["started"] == before["started"] + 1
    assert after["cancelled"] == before["cancelled"] + 1
    time.sleep(0.2)
    assert app_state(basic.url)["finished"] == before["finished"]  # the work really stopped
    doc = status(basic.url)
    assert doc["breakers"]["/sleep"]["window_failures"] >= 1
    route = next(r for r in doc["routes"] if r["route"] == "/sleep")
    assert route["rejected"]["timeout"] >= 1
    assert route["status_classes"]["5xx"] >= 1
    rejected = metrics(basic.url)["crisisctl_guard_rejected_total"]
    assert rejected[(("reason", "timeout"), ("route", "/sleep"))] >= 1
    # a request within its timeout is untouched
    fast = httpx.get(f"{basic.url}/sleep", params={"s": "0.01"}, trust_env=False)
    assert fast.status_code == 200


# -- 9. track() --------------------------------------------------------------------------------


def test_tracked_operations_show_in_metrics_and_status(basic: GuardServer) -> None:
    with client() as http:
        for _ in range(3):
            assert http.get(f"{basic.url}/tracked").status_code == 200
    m = metrics(basic.url)
    db = (("operation", "test.db_query"),)
    assert m["crisisctl_operation_duration_seconds_count"][db] >= 3
    assert m["crisisctl_operation_duration_seconds_bucket"][(("le", "0.025"), *db)] == 0
    assert m["crisisctl_operation_threshold_seconds"][db] == 0.005
    breaches = m["crisisctl_operation_threshold_breaches_total"]
    assert breaches[(("operation", "test.db_query"), ("severity", "critical"))] >= 3
    assert m["crisisctl_operation_errors_total"][db] == 0
    assert m["crisisctl_operation_duration_seconds_count"][(("operation", "test.render"),)] >= 3
    ops = {op["operation"]: op for op in status(basic.url)["operations"]}
    assert ops["test.db_query"]["calls"] >= 3
    assert ops["test.db_query"]["threshold_ms"] == 5
    assert ops["test.db_query"]["breaches"]["critical"] >= 3
    assert ops["test.db_query"]["latency_ms"]["p50"] >= 25  # sleeps 30 ms (timers may wake early)


# -- 10. X-Forwarded-For -----------------------------------------------------------------------


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    ns = uuid.uuid4().hex
    rule = {"pattern": f"/rl/{ns}/x", "rate_limit": "2/minute"}
    direct = {"token": "", "routes": [rule]}
    proxied = {"token": "", "routes": [rule], "trusted_proxies": ["127.0.0.1"]}
    with guard_servers(direct, proxied) as (plain, behind), client() as http:
        path = f"/rl/{ns}/x"

        def get(server: GuardServer, xff: str | None) -> int:
            headers = {"X-Forwarded-For": xff} if xff else {}
            return http.get(f"{server.url}{path}", headers=headers).status_code

        # without trusted proxies the header is ignored: one bucket for the TCP peer
        assert [get(plain, xff) for xff in ("1.1.1.1", "2.2.2.2", "3.3.3.3")] == [200, 200, 429]
        # behind a trusted proxy: one bucket per forwarded client
        assert [get(behind, "1.1.1.1") for _ in range(3)] == [200, 200, 429]
        assert [get(behind, "2.2.2.2") for _ in range(3)] == [200, 200, 429]
        # a client cannot escape by prepending a forged address: the rightmost untrusted wins
        assert get(behind, "9.9.9.9, 1.1.1.1") == 429
        assert get(behind, "1.1.1.1, 127.0.0.1") == 429  # trusted hops are skipped
        assert get(behind, None) == 200  # the proxy itself
        assert get(behind, "not-an-ip") == 200  # unparsable: the peer, whose 2nd request it is
        assert get(behind, "not-an-ip") == 429


# -- 11. the guard never raises into the app ---------------------------------------------------


def test_failing_key_function_lets_requests_through() -> None:
    config = {
        "token": "",
        "rate_limit": "100/second",  # one GCRA limit in memory: the fast path
        "routes": [{"pattern": "/limited", "rate_limit": "100/second;1000/minute"}],
    }
    with guard_servers(config, env={"CRISISCTL_TEST_GUARD_KEY": "raise"}) as (server,):
        with client() as http:
            for path in ("/ok", "/ok", "/limited", "/items/7"):
                response = http.get(f"{server.url}{path}")
                assert response.status_code == 200, (path, response.text)
                assert "ratelimit" not in response.headers
        m = metrics(server.url)
        assert m["crisisctl_guard_internal_errors_total"][()] == 4
        assert status(server.url)["internal_errors"] == 4
        assert "key function exploded" in server.output()  # logged
