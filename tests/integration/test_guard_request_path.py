"""The guard's request path against real uvicorn servers on 127.0.0.1 (issue 14, points 1, 4,
5, 6 and 8): critical paths on an app with nothing to discover, a sync handler past its
timeout, a stream, WebSocket handshakes, 20,000 invented methods, clients that disconnect,
RFC 7239 Forwarded."""

from __future__ import annotations

import socket
import threading
import time
import uuid

import httpx
import pytest
from guard_servers import guard_servers
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

HOST = "127.0.0.1"


def client() -> httpx.Client:
    return httpx.Client(trust_env=False, timeout=5.0)


def metric_samples(url: str) -> list[tuple[str, dict[str, str], float]]:
    text = httpx.get(f"{url}/_crisis/metrics", trust_env=False, timeout=10.0).text
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


# -- 1. critical paths on an app the guard cannot discover -------------------------------------


def test_health_stays_up_on_a_plain_asgi_app_whatever_the_limits_and_failures() -> None:
    config = {
        "token": "",
        "rate_limit": "2/minute",
        "critical_paths": ["/health", "/healthz"],
        "breaker": {"min_calls": 3, "window_s": 10, "open_s": 60},
    }
    plain = {"CRISISCTL_TEST_GUARD_APP": "plain"}
    unlimited = {**config, "rate_limit": None}
    with guard_servers(config, unlimited, env=plain) as (limited, broken), client() as http:
        assert [http.get(f"{limited.url}/health").status_code for _ in range(4)] == [200] * 4
        assert [http.get(f"{limited.url}/api/1").status_code for _ in range(3)] == [200, 200, 429]
        # the failing path's circuit opens, and only its own
        assert [http.get(f"{broken.url}/bad/{i}").status_code for i in range(3)] == [500] * 3
        assert http.get(f"{broken.url}/bad/9").json()["reason"] == "circuit_open"
        for path in ("/health", "/healthz", "/ok", "/other/7"):
            assert http.get(f"{broken.url}{path}").status_code == 200, path
        labels = {s[1].get("route") for s in metric_samples(broken.url)}
        assert {"/bad/{id}", "/health", "/healthz", "/ok", "/other/{id}"} <= labels


# -- 4. a sync handler past its timeout keeps its slot -----------------------------------------


def test_a_timed_out_sync_handler_answers_504_on_time_and_keeps_its_slot() -> None:
    config = {
        "token": "",
        "routes": [{"pattern": "/blocking", "timeout_s": 0.3}],
        "concurrency": {"mode": "static", "limit": 1, "queue_size": 0, "scope": "service"},
    }
    with guard_servers(config) as (server,), client() as http:
        start = time.monotonic()
        response = http.get(f"{server.url}/blocking", params={"s": "1.5"})
        elapsed = time.monotonic() - start
        assert response.status_code == 504
        assert response.json()["reason"] == "timeout"
        assert elapsed < 0.8
        # the thread still works: its slot is held, so the next request is shed
        refused = http.get(f"{server.url}/ok")
        assert refused.status_code == 503
        assert http.get(f"{server.url}/state").json()["blocking_done"] == 0
        deadline = time.monotonic() + 5.0
        while http.get(f"{server.url}/state").json()["blocking_done"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.1)
        assert http.get(f"{server.url}/ok").status_code == 200  # the work ended: slot back
        status = http.get(f"{server.url}/_crisis/status").json()
        assert status["concurrency"]["in_flight"] == 0


# -- 5. streams and WebSockets -----------------------------------------------------------------


def test_a_server_sent_event_stream_holds_no_slot() -> None:
    config = {"token": "", "concurrency": {"mode": "static", "limit": 1, "queue_size": 0}}
    with guard_servers(config) as (server,), client() as http, client() as other:
        stream = http.stream("GET", f"{server.url}/events", params={"s": "1.0"})
        with stream as response:
            assert response.status_code == 200
            chunks = response.iter_bytes()
            assert next(chunks).startswith(b"data: 0")
            # mid-stream, the one slot is free for other requests
            assert [other.get(f"{server.url}/ok").status_code for _ in range(3)] == [200] * 3
            received = b"".join(chunks)
            assert received.count(b"data:") >= 10


def test_websocket_handshakes_are_rate_limited_and_counted() -> None:
    config = {"token": "", "routes": [{"pattern": "/ws", "rate_limit": "2/minute"}]}
    with guard_servers(config) as (server,):
        url = f"ws://{HOST}:{server.port}/ws"
        for _ in range(2):
            with connect(url, open_timeout=5) as ws:
                ws.send("hi")
                assert ws.recv(timeout=5) == "hi"
        with pytest.raises(InvalidStatus) as refused:
            connect(url, open_timeout=5)
        assert refused.value.response.status_code == 429
        samples = metric_samples(server.url)
        counts = {
            (s[1]["method"], s[1]["status_class"]): s[2]
            for s in samples
            if s[0] == "crisisctl_http_requests_total" and s[1]["route"] == "/ws"
        }
        assert counts == {("WEBSOCKET", "1xx"): 2, ("WEBSOCKET", "4xx"): 1}


# -- 6. bounded cardinality: 20,000 invented methods -------------------------------------------

METHODS = 20_000
CONNECTIONS = 4
BATCH = 250


def _pipeline(port: int, methods: list[str]) -> int:
    """Send `methods` as pipelined requests in batches on one connection; count responses."""
    answered = 0
    with socket.create_connection((HOST, port), timeout=30) as sock:
        buffer = b""
        for start in range(0, len(methods), BATCH):
            batch = methods[start : start + BATCH]
            sock.sendall(b"".join(f"{m} /ok HTTP/1.1\r\nHost: x\r\n\r\n".encode() for m in batch))
            expected = len(batch)
            while expected:
                head_end = buffer.find(b"\r\n\r\n")
                if head_end < 0:
                    data = sock.recv(65536)
                    assert data, "the server closed the connection"
                    buffer += data
                    continue
                head = buffer[:head_end].decode("latin-1").lower()
                length = int(head.split("content-length:")[1].split("\r\n")[0])
                end = head_end + 4 + length
                while len(buffer) < end:
                    buffer += sock.recv(65536)
                buffer = buffer[end:]
                expected -= 1
                answered += 1
    return answered


@pytest.mark.slow
def test_twenty_thousand_invented_methods_leave_the_metrics_bounded() -> None:
    with guard_servers({"token": ""}, args=["--http", "h11"]) as (server,):
        methods = [f"M{uuid.uuid4().hex[:12].upper()}" for _ in range(METHODS)]
        answered = [0] * CONNECTIONS
        share = METHODS // CONNECTIONS

        def run(i: int) -> None:
            answered[i] = _pipeline(server.port, methods[i * share : (i + 1) * share])

        threads = [threading.Thread(target=run, args=(i,)) for i in range(CONNECTIONS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert sum(answered) == METHODS
        samples = metric_samples(server.url)
        requests = [s for s in samples if s[0] == "crisisctl_http_requests_total"]
        assert {s[1]["method"] for s in requests} == {"OTHER"}
        assert sum(s[2] for s in requests) == METHODS
        assert len(samples) < 200  # every family bounded, whatever the methods


# -- 8. clients that disconnect; Forwarded -----------------------------------------------------


def _abandoned_upload(port: int) -> None:
    """POST announcing 100 kB, send 10 bytes, leave."""
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n0123456789"
        )
        time.sleep(0.05)


def test_clients_that_disconnect_do_not_open_the_breaker() -> None:
    config = {"token": "", "breaker": {"min_calls": 4, "window_s": 10, "open_s": 60}}
    with guard_servers(config) as (server,), client() as http:
        for _ in range(8):
            _abandoned_upload(server.port)
        time.sleep(0.3)
        response = http.post(f"{server.url}/upload", content=b"x" * 100)
        assert response.status_code == 200, response.text
        breaker = http.get(f"{server.url}/_crisis/status").json()["breakers"]["/upload"]
        assert breaker["state"] == "closed"
        assert breaker["window_failures"] == 0


def test_forwarded_is_believed_only_from_trusted_proxies() -> None:
    ns = uuid.uuid4().hex
    rule = {"pattern": f"/rl/{ns}/x", "rate_limit": "2/minute"}
    proxied = {"token": "", "routes": [rule], "trusted_proxies": [HOST]}
    with guard_servers({**proxied, "proxy_header": "forwarded"}) as (behind,), client() as http:

        def get(forwarded: str | None) -> int:
            headers = {"Forwarded": forwarded} if forwarded else {}
            return http.get(f"{behind.url}/rl/{ns}/x", headers=headers).status_code

        assert [get("for=1.1.1.1") for _ in range(3)] == [200, 200, 429]
        assert [get('for="[2001:db8::1]:4711";proto=https') for _ in range(3)] == [200, 200, 429]
        assert get('for=9.9.9.9, for="1.1.1.1:80"') == 429  # a forged prefix changes nothing
        assert get(f"for=2.2.2.2, for={HOST}") == 200  # trusted hops are skipped
        assert get(None) == 200  # the proxy itself
        # X-Forwarded-For is not the configured header: ignored, the proxy's own bucket
        xff = {"X-Forwarded-For": "3.3.3.3"}
        statuses = [http.get(f"{behind.url}/rl/{ns}/x", headers=xff).status_code for _ in "ab"]
        assert statuses == [200, 429]
