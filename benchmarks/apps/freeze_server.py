"""A server whose latency is known by construction, and its analytic latency distribution.

Issue 14 (point 15): no coordinated-omission-correct load generator is in the registries we
reach, so the open model's latency is judged against the truth instead of a peer. This HTTP/1.1
server (keep-alive, any request answered ``200 ok``) answers every request a fixed service time
S after it arrived, except that it **freezes** for F seconds every T seconds: a request that
arrives during a freeze is held until the freeze ends and then takes S. Freezes start at
k T (k = 0, 1, …) on the server's clock, which starts when it starts listening.

The model (infinite servers: no request waits for another; the freeze holds arrivals, like a
stop-the-world pause of the reading side). A request arriving at phase u = (a mod T) has the
response time

    R(u) = S                  if u >= F      (outside a freeze)
    R(u) = S + (F - u)        if u <  F      (held until the freeze ends, then served)

With arrivals at a fixed rate λ over a whole number of periods, the phases are spread evenly
over [0, T) (λT of them per period, on a grid of step 1/λ), so u is uniform on [0, T) and

    P(R = S)      = 1 - F/T                            (an atom at S)
    P(R > x)      = (F - (x - S)) / T     for S <= x <= S + F
    quantile(q)   = S                         if q <= 1 - F/T
                  = S + F - (1 - q) T         otherwise.

With S = 20 ms, F = 200 ms, T = 1 s: p50 = 20 ms, p90 = 120 ms, p99 = 210 ms, p99.9 = 219 ms.
The grid of phases moves a quantile by at most one step (1/λ: 2 ms at 500 req/s), under 1 %
of the tail quantiles. A measuring client adds its own loopback round trip (tens of µs).

A closed-loop generator (wrk) does not send at a fixed rate: a connection stuck in a freeze
sends nothing else until the freeze ends, so a freeze holds one request per connection
instead of λF of them (coordinated omission). wrk 4 back-fills its histogram after the run
(``stats_correct``: for each latency L above d, the mean interval between a connection's
requests, it adds samples at L − d, L − 2d, …), which moves its percentiles toward the truth
without putting them on it.

Implementation, chosen for exact timing in Python: one reader thread (a selector) accepts,
reads, and stamps each complete request with its arrival time and its due time ``a + R``; one
sender thread takes them in arrival order (due times never decrease with arrival times, so a
FIFO queue is in due order), sleeps until each is due (``time.sleep``, precise to tens of µs),
and writes the response. Each response carries its designed latency in ``X-Designed-Us``;
on exit the server prints how late its responses left after their due times (p50, p99, max):
the truth's own error, to tell it from the measuring client's.

Run: ``python -m benchmarks.apps.freeze_server --service-ms 20 --freeze-ms 200 --period-s 1``;
it prints ``listening PORT`` and serves on 127.0.0.1 until SIGINT/SIGTERM or ``--max-s``.
"""

from __future__ import annotations

import argparse
import queue
import selectors
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass

__all__ = ["FreezeModel", "FreezeServer", "main"]

HOST = "127.0.0.1"


@dataclass(frozen=True)
class FreezeModel:
    """Service time `service_s`, a freeze of `freeze_s` at the start of every `period_s`."""

    service_s: float
    freeze_s: float
    period_s: float

    def __post_init__(self) -> None:
        if not (self.service_s >= 0 and 0 <= self.freeze_s < self.period_s):
            raise ValueError("need service_s >= 0 and 0 <= freeze_s < period_s")

    def response_time(self, phase_s: float) -> float:
        """R(u) for a request arriving `phase_s` seconds into a period."""
        u = phase_s % self.period_s
        return self.service_s + (self.freeze_s - u if u < self.freeze_s else 0.0)

    def quantile(self, q: float) -> float:
        """The q-quantile (0 < q < 1) of R for arrivals spread evenly over the period."""
        if not 0.0 < q < 1.0:
            raise ValueError(f"q must be in (0, 1), not {q!r}")
        if q <= 1.0 - self.freeze_s / self.period_s:
            return self.service_s
        return self.service_s + self.freeze_s - (1.0 - q) * self.period_s

    def cdf(self, x: float) -> float:
        """P(R <= x)."""
        if x < self.service_s:
            return 0.0
        if x >= self.service_s + self.freeze_s:
            return 1.0
        return 1.0 - (self.freeze_s - (x - self.service_s)) / self.period_s


_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
    b"X-Designed-Us: %d\r\n\r\nok"
)


class FreezeServer:
    """The server of the module docstring on 127.0.0.1 (`port` 0: an ephemeral port)."""

    def __init__(self, model: FreezeModel, port: int = 0) -> None:
        self.model = model
        self.sock = socket.create_server((HOST, port), backlog=1024)
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]
        self.selector = selectors.DefaultSelector()
        self.outbox: queue.SimpleQueue[tuple[float, socket.socket, int] | None] = (
            queue.SimpleQueue()
        )
        self.served = 0
        #: how late each response left after its due time (s): the truth's own error
        self.lateness: list[float] = []
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._read, name="freeze-reader", daemon=True),
            threading.Thread(target=self._send, name="freeze-sender", daemon=True),
        ]

    def start(self) -> None:
        self.t0 = time.monotonic()  # the freeze clock: freezes at t0 + k T
        self.selector.register(self.sock, selectors.EVENT_READ, None)
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.outbox.put(None)
        for thread in self._threads:
            thread.join(timeout=5)
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self.selector.close()

    def _read(self) -> None:
        buffers: dict[socket.socket, bytes] = {}
        model, t0 = self.model, self.t0
        while not self._stop.is_set():
            for key, _ in self.selector.select(timeout=0.1):
                if key.fileobj is self.sock:
                    try:
                        conn, _addr = self.sock.accept()
                    except BlockingIOError:
                        continue
                    conn.setblocking(True)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self.selector.register(conn, selectors.EVENT_READ, None)
                    buffers[conn] = b""
                    continue
                conn = key.fileobj  # type: ignore[assignment]
                try:
                    data = conn.recv(65536)
                except OSError:
                    data = b""
                now = time.monotonic()
                if not data:
                    self.selector.unregister(conn)
                    buffers.pop(conn, None)
                    conn.close()
                    continue
                buf = buffers[conn] + data
                while (end := buf.find(b"\r\n\r\n")) >= 0:  # GETs without a body
                    buf = buf[end + 4 :]
                    designed = model.response_time(now - t0)
                    self.outbox.put((now + designed, conn, round(designed * 1e6)))
                buffers[conn] = buf

    def _send(self) -> None:
        while True:
            item = self.outbox.get()
            if item is None:
                return
            due, conn, designed_us = item
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                conn.sendall(_RESPONSE % designed_us)
                self.served += 1
                if len(self.lateness) < 1_000_000:
                    self.lateness.append(time.monotonic() - due)
            except OSError:
                pass  # the client went away

    def lateness_us(self) -> dict[str, int]:
        """p50, p99 and max of how late responses left after their due time (µs)."""
        late = sorted(self.lateness)
        if not late:
            return {"p50": 0, "p99": 0, "max": 0}
        pick = lambda q: round(late[min(len(late) - 1, int(q * len(late)))] * 1e6)  # noqa: E731
        return {"p50": pick(0.5), "p99": pick(0.99), "max": round(late[-1] * 1e6)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--service-ms", type=float, default=20.0)
    parser.add_argument("--freeze-ms", type=float, default=200.0)
    parser.add_argument("--period-s", type=float, default=1.0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-s", type=float, default=600.0, help="stop by itself after this")
    args = parser.parse_args(argv)
    model = FreezeModel(args.service_ms / 1000, args.freeze_ms / 1000, args.period_s)
    sys.setswitchinterval(0.0005)  # the sender gets the GIL back quickly when it is due
    server = FreezeServer(model, args.port)
    done = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    server.start()
    print(f"listening {server.port}", flush=True)
    done.wait(args.max_s)
    server.stop()
    late = server.lateness_us()
    print(
        f"served {server.served} late_us p50 {late['p50']} p99 {late['p99']} max {late['max']}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
