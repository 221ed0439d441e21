"""Triage: how bad is it, in seconds — run a plan within its budget and report.

`run_triage()` executes a `TriagePlan` (see plan.py) and returns the JSON-ready report
(see verdict.py). The whole run is bounded by the budget:

1. health (``--health`` or the first of `HEALTH_PATHS` that is not 404) and the guard's status
   are probed together with a short timeout, while the target's process is found (``--pid``,
   the local process listening on the target's port — for a target on this machine — or the pid
   the guard reports);
2. the host window opens (psutil, in a thread) and every operation is sampled `samples` times
   with ≤ `concurrency` requests in flight, each request bounded by its timeout and by the
   deadline, while the process's RSS is sampled;
3. the host window closes and the verdict is built.

A hang, refusal, reset or garbage answer is evidence, never an exception.

`measure_baseline()` runs a plan in rounds spread over time (``crisisctl baseline save``), so
that the saved baseline holds the service's spread from moment to moment (see spread.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable
from typing import Any, Final

from crisisctl.probe import host as hostmod
from crisisctl.probe.guard import GUARD_SOURCE, local_source, read_guard_status
from crisisctl.probe.http import probe, with_path
from crisisctl.probe.plan import TriagePlan
from crisisctl.probe.sampling import sample_operations
from crisisctl.probe.verdict import build_report, judge_health, now_iso

#: control probes (health candidates + guard status) run together before the operations
CONTROL_SHARE: Final = 0.25
#: part of the budget kept for closing the host window and writing the report
RESERVE_SHARE: Final = 0.08
MAX_RESERVE_S: Final = 0.75
HOST_SAMPLE_EVERY_S: Final = 0.5


async def _in_thread(fn: Any, deadline: float, *args: Any) -> tuple[bool, Any]:
    """Run a blocking psutil call in a thread: (finished, result), giving up at the deadline."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return False, None
    try:
        return True, await asyncio.wait_for(asyncio.to_thread(fn, *args), timeout=remaining)
    except TimeoutError:
        return False, None


async def _sample_host(window: hostmod.HostWindow, stop: asyncio.Event, deadline: float) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), HOST_SAMPLE_EVERY_S)
        if not stop.is_set():
            await _in_thread(window.sample, deadline)


async def _find_pid(plan: TriagePlan, deadline: float) -> int | None:
    if plan.pid is not None or not plan.collect_host or not plan.local_process:
        return plan.pid
    _, pid = await _in_thread(hostmod.pid_listening_on, deadline, plan.target.port)
    return pid if isinstance(pid, int) else None


async def run_triage(plan: TriagePlan) -> dict[str, Any]:
    """Execute `plan` within its budget and return the triage report (see the CLI docs)."""
    started_at = now_iso()
    t0 = time.monotonic()
    reserve = min(MAX_RESERVE_S, plan.budget_s * RESERVE_SHARE)
    deadline = t0 + plan.budget_s - reserve
    control_timeout = min(plan.timeout_s, max(0.5, plan.budget_s * CONTROL_SHARE))

    health_probes, guard, pid = await asyncio.gather(
        asyncio.gather(
            *(
                probe(with_path(plan.target, p), operation=f"GET {p}", timeout_s=control_timeout)
                for p in plan.health_paths
            )
        ),
        read_guard_status(plan.target, prefix=plan.guard_prefix, timeout_s=control_timeout),
        _find_pid(plan, deadline),
    )
    health = judge_health(list(health_probes))
    pid_source = "--pid" if plan.pid is not None else "listening port"
    if (
        pid is None
        and plan.local_process
        and guard.get("present")
        and isinstance(guard.get("pid"), int)
    ):
        pid, pid_source = int(guard["pid"]), "guard status"  # the guard says who serves

    window: hostmod.HostWindow | None = None
    if plan.collect_host:
        window = hostmod.HostWindow(pid)
        started, _ = await _in_thread(window.start, deadline)
        window = window if started else None

    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample_host(window, stop, deadline)) if window else None
    try:
        stats = await sample_operations(
            plan.target, list(plan.operations), samples=plan.samples,
            concurrency=plan.concurrency, timeout_s=plan.timeout_s, deadline=deadline,
        )  # fmt: skip
    finally:
        stop.set()
        if sampler is not None:
            await sampler

    host: dict[str, Any]
    if window is None:
        why = (
            "switched off"
            if not plan.collect_host
            else "reading the host's resources took too long"
        )
        host = {"collected": False, "reason": why}
        from_guard = guard.get("process") if guard.get("present") else None
        if isinstance(from_guard, dict):  # a remote service: its guard's own figures stand in
            host["process"] = from_guard
            host["process_source"] = GUARD_SOURCE
    else:
        finished, snapshot = await _in_thread(window.finish, t0 + plan.budget_s - 0.05)
        if finished:
            host = {"collected": True, "pid_source": pid_source if pid else None, **snapshot}
        else:
            host = {"collected": False, "reason": "reading the host's resources took too long"}
        attribute_process(host, pid, guard, plan)
    return build_report(plan, started_at, t0, health, guard, stats, host)


def attribute_process(
    host: dict[str, Any], pid: int | None, guard: dict[str, Any], plan: TriagePlan
) -> None:
    """Say where the service's process figures came from: psutil on this machine, or the
    guard's own figures (its status) when no local process was read."""
    local = host.get("process")
    if pid is not None and isinstance(local, dict):
        host["process_source"] = local_source(pid)
        return
    from_guard = guard.get("process") if guard.get("present") else None
    if isinstance(from_guard, dict):
        host["process"] = from_guard
        host["process_source"] = GUARD_SOURCE
        return
    host["process_source"] = None
    if pid is None:
        host["process_note"] = (
            f"no local process found listening on port {plan.target.port} (it may belong to "
            "another user): pass --pid"
            if plan.local_process
            else "local process lookup is off and the target's guard reported no process figures"
        )


def _unavailable(report: dict[str, Any]) -> bool:
    return not report["available"]


async def measure_baseline(
    plan: TriagePlan,
    rounds: int,
    every_s: float,
    stop_when: Callable[[dict[str, Any]], bool] = _unavailable,
) -> list[dict[str, Any]]:
    """Run `plan` `rounds` times, a round starting every `every_s` s (or when the last ends).

    The host's resources are read in the first round only. Stops after a round for which
    `stop_when(report)` holds (default: the service was unavailable; its report is the last
    one returned): that is no healthy baseline, and measuring on would only take time.
    """
    if rounds < 1:
        raise ValueError(f"a baseline needs at least 1 round, not {rounds}")
    reports: list[dict[str, Any]] = []
    start = time.monotonic()
    for index in range(rounds):
        if index:
            await asyncio.sleep(max(0.0, start + index * every_s - time.monotonic()))
        this = plan if index == 0 else dataclasses.replace(plan, collect_host=False)
        reports.append(await run_triage(this))
        if stop_when(reports[-1]):
            break
    return reports
