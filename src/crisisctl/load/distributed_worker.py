"""A load worker: register in the coordinator's Redis, take one run's share, send it, report.

`serve(url)` registers this process (a heartbeat every `HEARTBEAT_S`, expiring after
`HEARTBEAT_TTL_MS`), waits for an assignment, and runs it with the same engine as
``--processes`` (`crisisctl.load.plan.execute` on its `share`; with ``processes`` > 1 on that
many engine processes, `crisisctl.load.worker_processes`): it logs in, says it is ready,
waits for the start instant (on the Redis clock, turned into its own monotonic clock with
the offset it measured), sends its part, streams a tick per second (with that second's
histogram) and at the end its result with histograms. A background thread keeps the
heartbeat, stops the run when the coordinator asks (``halt``) or is gone, and publishes the
stream entries, so the event loop never waits on Redis. One run, then exit, unless `forever`.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import secrets
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from crisisctl import __version__
from crisisctl.load.distributed_proto import (
    HEARTBEAT_S,
    HEARTBEAT_TTL_MS,
    Keys,
    connect,
    decode_assignment,
    encode,
    measure_offset,
    redact_url,
)
from crisisctl.load.distributed_shares import local_instant
from crisisctl.load.plan import RunError, execute, share
from crisisctl.load.processes import READY_TIMEOUT_S, run_sync
from crisisctl.load.recorder import Tick
from crisisctl.load.scenario import ClosedModel, Scenario, ScenarioError
from crisisctl.load.worker_processes import run_worker_share

__all__ = ["serve"]


class _Session:
    """A worker's link to Redis: heartbeat, halt watch and the ordered outbox of one run."""

    def __init__(self, client: redis.Redis, worker: str, info: dict[str, Any]) -> None:
        self.client = client
        self.worker = worker
        self.info = info
        self.run: str | None = None
        self.halt = threading.Event()
        self.halt_reason = "stopped"
        self.outbox: queue.Queue[tuple[str, dict[str, str]] | None] = queue.Queue()
        self.closing = threading.Event()
        self.failure: str | None = None
        self.thread = threading.Thread(target=self._loop, name="crisisctl-worker", daemon=True)

    def beat(self, state: str) -> None:
        self.info["state"] = state
        pipe = self.client.pipeline()
        pipe.set(Keys.worker(self.worker), json.dumps(self.info), px=HEARTBEAT_TTL_MS)
        pipe.zadd(Keys.workers, {self.worker: 0})
        pipe.execute()

    def _loop(self) -> None:
        next_beat = 0.0
        while not self.closing.is_set():
            try:
                now = time.monotonic()
                if now >= next_beat:
                    self.beat("busy" if self.run else "idle")
                    next_beat = now + HEARTBEAT_S
                run = self.run
                if run is not None and not self.halt.is_set():
                    halt, alive = self.client.mget(Keys.halt(run), Keys.alive(run))
                    if halt is not None:
                        self.halt_reason = "stopped"
                        self.halt.set()
                    elif alive is None:
                        self.halt_reason = "the coordinator is gone"
                        self.halt.set()
                self._flush(0.1)
            except redis.RedisError as exc:
                self.failure = f"lost Redis ({type(exc).__name__})"
                self.halt_reason = self.failure
                self.halt.set()
                time.sleep(0.2)

    def _flush(self, wait_s: float) -> None:
        try:
            item = self.outbox.get(timeout=wait_s)
        except queue.Empty:
            return
        while item is not None:
            stream, fields = item
            self.client.xadd(stream, fields)  # type: ignore[arg-type]
            try:
                item = self.outbox.get_nowait()
            except queue.Empty:
                return

    def send(self, kind: str, index: int, **data: Any) -> None:
        assert self.run is not None
        self.outbox.put((Keys.events(self.run), encode(kind, index, **data)))

    def drain(self, timeout_s: float = 10.0) -> None:
        """Wait until every queued entry is in the stream."""
        deadline = time.monotonic() + timeout_s
        while not self.outbox.empty() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.15)  # the entry being written


def _wait_go(session: _Session, key: str) -> float:
    """The start instant (Redis clock) once the coordinator gives it; RunError if it never
    does or the run is halted first."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline and not session.halt.is_set():
        got: Any = session.client.blpop([key], 1)
        if got is not None:
            return float(got[1])
    raise RunError("the coordinator never gave the start signal.", 1)


def _run_one(
    session: _Session, assignment: dict[str, Any], say: Callable[[str], None], processes: int = 1
) -> None:
    run, index, count = str(assignment["run"]), int(assignment["index"]), int(assignment["count"])
    session.halt.clear()
    session.run = run
    offset, uncertainty = measure_offset(session.client)
    session.send(
        "accepted", index, worker=session.worker, host=session.info["host"],
        offset_s=offset, uncertainty_s=uncertainty,
    )  # fmt: skip
    start_late: list[float] = []
    try:
        scenario = Scenario.model_validate(assignment["scenario"])
        part = share(scenario, index, count)
        say(f"run {run}: worker {index + 1} of {count}, {scenario.base_url}")

        async def ready() -> float | None:
            session.send("ready", index)
            got = await asyncio.to_thread(_wait_go, session, Keys.go(run, index))
            start = local_instant(got, offset)
            start_late.append(max(0.0, time.monotonic() - start))
            if isinstance(part.model, ClosedModel):
                await asyncio.sleep(max(0.0, start - time.monotonic()))
                return None
            return start

        def on_tick(tick: Tick) -> None:
            tick.process = index
            session.send("tick", index, tick=tick.to_data())

        def stop() -> str | None:
            return session.halt_reason if session.halt.is_set() else None

        if processes > 1:

            def ready_now() -> float:
                session.send("ready", index)
                start = local_instant(_wait_go(session, Keys.go(run, index)), offset)
                start_late.append(max(0.0, time.monotonic() - start))
                return start

            result = run_worker_share(
                scenario, Path.cwd(), worker=index, workers=count, processes=processes,
                on_ready=ready_now, on_tick=on_tick, stop=stop,
            )  # fmt: skip
        else:
            result = run_sync(
                execute(
                    part, Path.cwd(), on_tick=on_tick, stop=stop, on_ready=ready, part=index,
                    parts=count,
                )
            )  # fmt: skip
        session.send(
            "done", index, result=result.to_dict(histograms=True),
            start_late_s=start_late[0] if start_late else None,
        )  # fmt: skip
        say(f"run {run}: done, {result.requests} requests sent.")
    except (RunError, ScenarioError, ValueError) as exc:
        session.send("error", index, code=getattr(exc, "code", 2), message=str(exc))
        say(f"run {run}: failed: {exc}")
    except Exception as exc:
        session.send("error", index, code=1, message=f"the worker failed: {exc!r}")
        say(f"run {run}: failed: {exc!r}")
    finally:
        session.drain()
        session.client.delete(Keys.claim(session.worker))
        session.run = None


def serve(
    url: str,
    *,
    forever: bool = False,
    say: Callable[[str], None] = print,
    wait_s: float | None = None,
    processes: int = 1,
) -> int:
    """Serve runs from the Redis at `url`: one, or every one with `forever`; each run's share
    on `processes` engine processes (`crisisctl.load.worker_processes`). Returns the number of
    runs served; ValueError (one sentence) when Redis cannot be reached or, with `wait_s`, no
    run came within it."""
    client = connect(url, "the worker's Redis URL")
    host = socket.gethostname()
    worker = f"{host}-{os.getpid()}-{secrets.token_hex(2)}"
    info: dict[str, Any] = {"worker": worker, "host": host, "pid": os.getpid(),
                            "version": __version__, "processes": processes}  # fmt: skip
    session = _Session(client, worker, info)
    session.beat("idle")
    session.thread.start()
    say(f"worker {worker} registered at {redact_url(url)}; waiting for a run.")
    served = 0
    deadline = None if wait_s is None else time.monotonic() + wait_s
    try:
        while True:
            if deadline is not None and time.monotonic() > deadline:
                raise ValueError(f"no run came within {wait_s:g} s; start the coordinator first.")
            got: Any = client.blpop([Keys.inbox(worker)], 1)
            if got is None:
                continue
            _run_one(session, decode_assignment(got[1]), say, processes)
            served += 1
            if not forever:
                return served
            deadline = None if wait_s is None else time.monotonic() + wait_s
    finally:
        session.closing.set()
        session.thread.join(2.0)
        try:
            pipe = client.pipeline()
            pipe.delete(Keys.worker(worker), Keys.inbox(worker))
            pipe.zrem(Keys.workers, worker)
            pipe.execute()
        except redis.RedisError:
            pass
