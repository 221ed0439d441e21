"""Helpers of the watch response tests: a loopback HTTP receiver, a service directory and
hand-made alerts/transitions (the tests feed the responder without watch's rule engine).

`Receiver` is a real HTTP server on 127.0.0.1 (a thread) that records every POST body and
answers HTTP 500 to the first `fail_first` of them (or to all with ``fail_first=-1``); apprise's
``json://127.0.0.1:PORT/path`` URLs post there. (This module holds no tests.)
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from crisisctl.severity import Severity
from crisisctl.watch.model import Alert, AlertState, GuardEndpoint, RuleKind, Transition, labels_of


class Receiver:
    """A recording HTTP receiver on loopback."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.received: list[dict[str, Any]] = []
        self.attempts = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0") or 0))
                with receiver._lock:
                    receiver.attempts += 1
                    failing = receiver.fail_first < 0 or receiver.attempts <= receiver.fail_first
                    if not failing:
                        try:
                            data = json.loads(body or b"{}")
                        except ValueError:
                            data = {"raw": body.decode(errors="replace")}
                        receiver.received.append({"path": self.path, **data})
                self.send_response(500 if failing else 200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "/hook") -> str:
        """The apprise URL posting JSON here."""
        return f"json://127.0.0.1:{self.port}{path}"

    def http(self, path: str = "/act") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def titles(self) -> list[str]:
        with self._lock:
            return [str(r.get("title", "")) for r in self.received]

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Directory:
    """A `ServiceDirectory` over fixed guards and probe URLs."""

    guard_map: dict[str, list[GuardEndpoint]] = field(default_factory=dict)
    probes: dict[str, str] = field(default_factory=dict)

    def guards(self, service: str) -> Sequence[GuardEndpoint]:
        return self.guard_map.get(service, [])

    def probe_url(self, service: str) -> str | None:
        return self.probes.get(service)


def alert(
    service: str,
    at: datetime,
    *,
    rule: str = "latency_p95",
    severity: Severity = Severity.P1,
    state: AlertState = AlertState.FIRING,
    instance: str = "a",
) -> Alert:
    """A hand-made alert of `rule` on `service`."""
    return Alert(
        rule=rule,
        kind=RuleKind.THRESHOLD,
        labels=labels_of({"service": service, "instance": instance}),
        service=service,
        severity=severity,
        state=state,
        active_since=at,
        fired_at=at if state is not AlertState.PENDING else None,
        resolved_at=at if state is AlertState.RESOLVED else None,
        value=2400.0,
        threshold=500.0,
        summary=f"p95 latency 2400 ms > 500 ms on {service}",
        evidence={"p95_ms": 2400.0, "threshold_ms": 500.0, "breach_ratio": 4.8},
    )


def fire(a: Alert, at: datetime) -> Transition:
    return Transition(replace(a, state=AlertState.FIRING), AlertState.PENDING, at)


def resolve(a: Alert, at: datetime) -> Transition:
    return Transition(replace(a, state=AlertState.RESOLVED, resolved_at=at), AlertState.FIRING, at)
