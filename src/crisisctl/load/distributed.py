"""The coordinator of a distributed run: find workers, hand out shares, start them together,
merge what they stream back, account for the ones that are lost.

`run_distributed(scenario, base_dir, url, workers=N)`:

1. waits (at most `wait_s`) until N idle workers are registered in the Redis at `url`, and
   claims them (one coordinator per worker);
2. sends each its assignment: run id, its index of N and the scenario it needs
   (`worker_scenario`: CSV columns inlined, no thresholds);
3. once every worker is ready (logged in), gives all the same start instant on the Redis
   clock, `START_DELAY_S` ahead;
4. reads the run's stream: each tick goes to the live view and the abort decisions
   (`crisisctl.load.processes.Watch`), each result (with histograms) is kept;
5. merges the results exactly with `crisisctl.load.processes.merge_results`, as
   ``--processes`` does.

A worker whose heartbeat expires (killed, host gone) or that has not finished by duration +
timeout + `GRACE_S` is lost: the run goes on without it, and `RunOutcome.distributed` lists it
with its share and what its ticks said it sent. Nothing waits past that bound.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis

from crisisctl.load.distributed_proto import (
    INBOX_TTL_S,
    RUN_TTL_PAD_S,
    Keys,
    connect,
    decode,
    redact_url,
    server_time,
)
from crisisctl.load.distributed_shares import Share, lost_worker, plan_shares, worker_scenario
from crisisctl.load.plan import RunError
from crisisctl.load.processes import (
    GRACE_S,
    READY_TIMEOUT_S,
    LiveStats,
    RunOutcome,
    Watch,
    merge_results,
    parts_for,
    seeded,
)
from crisisctl.load.recorder import Tick
from crisisctl.load.recording import LoadResult
from crisisctl.load.scenario import Scenario
from crisisctl.load.templates import TemplateError
from crisisctl.load.thresholds import Threshold

__all__ = ["START_DELAY_S", "run_distributed"]

#: the common start: this long (Redis clock) after the last worker said it was ready
START_DELAY_S = 0.5


def _idle_workers(client: redis.Redis) -> list[tuple[str, dict[str, Any]]]:
    """The registered workers whose heartbeat is alive and who are idle (no wall clock is
    compared: a worker is there while its key lives)."""
    members: Any = client.zrange(Keys.workers, 0, -1)
    names = [bytes(n).decode() for n in members]
    if not names:
        return []
    found = []
    gone = []
    for name, raw in zip(names, client.mget([Keys.worker(n) for n in names]), strict=True):
        if raw is None:
            gone.append(name)
            continue
        info = json.loads(raw)
        if isinstance(info, dict) and info.get("state") == "idle":
            found.append((name, info))
    if gone:
        client.zrem(Keys.workers, *gone)
    return found


def _claim(
    client: redis.Redis, run: str, count: int, wait_s: float, hold_s: float, url: str
) -> list[tuple[str, dict[str, Any]]]:
    claimed: list[tuple[str, dict[str, Any]]] = []
    deadline = time.monotonic() + wait_s
    while True:
        for name, info in _idle_workers(client):
            if len(claimed) == count:
                break
            if any(name == c for c, _ in claimed):
                continue
            if client.set(Keys.claim(name), run, nx=True, px=int(hold_s * 1000)):
                claimed.append((name, info))
        # a claimed worker that went away before the run is not one
        alive = client.mget([Keys.worker(c) for c, _ in claimed]) if claimed else []
        claimed = [c for c, raw in zip(claimed, alive, strict=True) if raw is not None]
        if len(claimed) == count:
            return claimed
        if time.monotonic() > deadline:
            if claimed:
                client.delete(*[Keys.claim(c) for c, _ in claimed])
            raise RunError(
                f"only {len(claimed)} of {count} workers registered at {redact_url(url)} within "
                f"{wait_s:g} s; start more with `crisisctl load-worker URL` or lower --workers.",
                1,
            )
        time.sleep(0.2)


class _Run:
    """The coordinator's view of one run's workers."""

    def __init__(self, run: str, names: Sequence[tuple[str, dict[str, Any]]], shares: list[Share]):
        self.run = run
        self.names = [n for n, _ in names]
        self.hosts = [str(info.get("host", "?")) for _, info in names]
        self.shares = shares
        self.ready: set[int] = set()
        self.results: dict[int, LoadResult] = {}
        self.sent: dict[int, int] = {}
        self.last_seen: dict[int, float] = {}
        self.clocks: dict[int, dict[str, Any]] = {}
        self.lost: dict[int, dict[str, Any]] = {}

    def open_indexes(self) -> list[int]:
        return [i for i in range(len(self.names)) if i not in self.results and i not in self.lost]

    def lose(self, index: int, reason: str, live: LiveStats) -> None:
        self.lost[index] = lost_worker(
            self.shares[index], self.names[index], self.sent.get(index, 0), reason,
            self.last_seen.get(index),
        )  # fmt: skip
        self.lost[index]["host"] = self.hosts[index]
        live.lose_reporter()

    def summary(self, url: str) -> dict[str, Any]:
        workers = []
        for i, name in enumerate(self.names):
            entry: dict[str, Any] = {
                "worker": name, "host": self.hosts[i], "index": i,
                "share": self.shares[i].describe(),
                "state": "lost" if i in self.lost else "done",
                "sent_requests": (
                    self.results[i].requests if i in self.results else self.sent.get(i, 0)
                ),
            }  # fmt: skip
            entry.update(self.clocks.get(i, {}))
            workers.append(entry)
        uncertainties = sorted(
            (c["clock_uncertainty_ms"] for c in self.clocks.values()), reverse=True
        )
        return {
            "coordinator": redact_url(url),
            "run": self.run,
            "workers": workers,
            "lost": [self.lost[i] for i in sorted(self.lost)],
            # two workers' starts differ by at most the sum of their offsets' uncertainties
            "start_skew_bound_ms": round(sum(uncertainties[:2]), 3),
        }


def run_distributed(
    scenario: Scenario,
    base_dir: Path,
    url: str,
    *,
    workers: int,
    wait_s: float = 30.0,
    thresholds: Sequence[Threshold] = (),
    on_update: Callable[[LiveStats], None] | None = None,
) -> RunOutcome:
    """Run `scenario` on `workers` load workers registered at the Redis `url`.

    Raises RunError (with an exit code) when Redis, the workers or the run fail; a worker
    lost after the start is not an error: `RunOutcome.distributed["lost"]` lists it.
    """
    try:
        client = connect(url, "--coordinator")
    except ValueError as exc:
        raise RunError(str(exc), 3) from None
    scenario = seeded(scenario)
    count = parts_for(scenario, workers)
    try:
        payload = worker_scenario(scenario, base_dir)
    except TemplateError as exc:
        raise RunError(str(exc), 2) from None
    shares = plan_shares(scenario, count)
    limit_s = scenario.duration_s + scenario.timeout + GRACE_S
    run = secrets.token_hex(6)
    hold_s = wait_s + READY_TIMEOUT_S + limit_s + RUN_TTL_PAD_S
    try:
        claimed = _claim(client, run, count, wait_s, hold_s, url)
        state = _Run(run, claimed, shares)
        names = [op.label for op in scenario.operations] + [step.label for step in scenario.steps]
        live = LiveStats(count, names, scenario.duration_s)
        return _drive(client, scenario, payload, state, live, thresholds, on_update, limit_s, url)
    except redis.RedisError as exc:
        raise RunError(
            f"lost Redis at {redact_url(url)} during the run ({type(exc).__name__}).", 3
        ) from None


def _drive(
    client: redis.Redis,
    scenario: Scenario,
    payload: dict[str, Any],
    state: _Run,
    live: LiveStats,
    thresholds: Sequence[Threshold],
    on_update: Callable[[LiveStats], None] | None,
    limit_s: float,
    url: str,
) -> RunOutcome:
    run, count = state.run, len(state.names)
    ttl_s = int(READY_TIMEOUT_S + limit_s + RUN_TTL_PAD_S)
    events = Keys.events(run)

    def halt() -> None:
        client.set(Keys.halt(run), "1", ex=ttl_s)

    watch = Watch(live, thresholds, on_update, halt, scenario.abort_rules())
    client.set(Keys.alive(run), "1", px=3000)
    for index, name in enumerate(state.names):
        assignment = {"run": run, "index": index, "count": count, "scenario": payload}
        pipe = client.pipeline()
        pipe.rpush(Keys.inbox(name), json.dumps(assignment))
        pipe.expire(Keys.inbox(name), INBOX_TTL_S)
        pipe.execute()
    started_at: float | None = None  # local monotonic
    deadline = time.monotonic() + READY_TIMEOUT_S
    last_id = "0-0"
    next_check = 0.0
    try:
        while state.open_indexes():
            now = time.monotonic()
            if now >= next_check:
                next_check = now + 0.25
                client.set(Keys.alive(run), "1", px=3000)
                open_now = state.open_indexes()
                beats = client.mget([Keys.worker(state.names[i]) for i in open_now])
                gone = [i for i, raw in zip(open_now, beats, strict=True) if raw is None]
                if gone:  # its last words (a result) may be in the stream: read them first
                    last_id = _read(client, events, last_id, 0, state, live, watch)
                for index in gone:
                    if index in state.open_indexes():
                        if started_at is None:
                            raise RunError(
                                f"worker {state.names[index]} was lost before the start; "
                                "start it again and rerun.",
                                1,
                            )
                        state.lose(index, "its heartbeat expired", live)
                watch.update()
            if started_at is None and len(state.ready) == count:
                start = server_time(client) + START_DELAY_S
                pipe = client.pipeline()
                for index in range(count):
                    pipe.rpush(Keys.go(run, index), repr(start))
                    pipe.expire(Keys.go(run, index), ttl_s)
                pipe.execute()
                started_at = time.monotonic() + START_DELAY_S
                deadline = started_at + limit_s
            if time.monotonic() > deadline:
                if started_at is None:
                    raise RunError("the workers did not all get ready in time.", 1)
                for index in state.open_indexes():
                    state.lose(index, "it did not finish by duration + timeout + grace", live)
                break
            try:
                last_id = _read(client, events, last_id, 200, state, live, watch)
            except KeyboardInterrupt:
                watch.abort("interrupted")  # the workers stop sending, then drain
    finally:
        halt()
        names = state.names
        pipe = client.pipeline()
        pipe.delete(events, Keys.alive(run), *[Keys.go(run, i) for i in range(count)])
        for name in names:
            pipe.delete(Keys.claim(name), Keys.inbox(name))
        pipe.expire(Keys.halt(run), 30)
        pipe.execute()
    if not state.results:
        raise RunError("every worker was lost; there is no result to report.", 1)
    summary = state.summary(url)  # before the merge, which adds into the first result
    merged = merge_results([state.results[i] for i in sorted(state.results)], live)
    watch.update(force=True)
    if watch.reason is not None:
        merged.aborted = watch.reason
    outcome = RunOutcome(merged, scenario, watch.aborted_by)
    outcome.distributed = summary
    return outcome


def _read(
    client: redis.Redis,
    events: str,
    last_id: str,
    block_ms: int | None,
    state: _Run,
    live: LiveStats,
    watch: Watch,
) -> str:
    """Handle the stream's new entries (waiting up to `block_ms`, 0: not at all); the id of
    the last one read."""
    got: Any = client.xread({events: last_id}, count=1000, block=block_ms or None)
    for _, entries in got or []:
        for entry_id, fields in entries:
            last_id = entry_id.decode()
            _handle(state, live, watch, *decode(fields))
    return last_id


def _handle(
    state: _Run, live: LiveStats, watch: Watch, kind: str, index: int, data: dict[str, Any]
) -> None:
    if not 0 <= index < len(state.names) or index in state.lost:
        return  # a late word from a worker already counted as lost
    if kind == "tick":
        tick = Tick.from_data(data["tick"])
        state.sent[index] = state.sent.get(index, 0) + tick.stats.requests
        state.last_seen[index] = tick.elapsed_s
        watch.tick(tick)
        watch.update()
    elif kind == "accepted":
        state.clocks[index] = {
            "clock_offset_ms": round(float(data["offset_s"]) * 1000, 3),
            "clock_uncertainty_ms": round(float(data["uncertainty_s"]) * 1000, 3),
        }
    elif kind == "ready":
        state.ready.add(index)
    elif kind == "done":
        state.results[index] = LoadResult.from_dict(data["result"])
        late = data.get("start_late_s")
        if late is not None:
            state.clocks.setdefault(index, {})["start_late_ms"] = round(float(late) * 1000, 3)
    elif kind == "error":
        raise RunError(
            f"worker {state.names[index]} ({state.hosts[index]}): {data['message']}",
            int(data.get("code", 1)),
        )
