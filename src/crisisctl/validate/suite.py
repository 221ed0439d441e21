"""`crisisctl validate`'s engine: run the seeds' phase-5 checks against a service (any host).

`run_validation(url, options)` first makes sure the service answers at all (`Unreachable`
otherwise), then runs each check of `report.CHECK_NAMES` in turn, each under its own
time cap and all under one budget, and returns the JSON report of `report.build_report`.
This module only sends requests and measures; the verdicts come from `checks`, the options
from `options`.

What each check sends (all to the service's host and port, nowhere else):

- monitoring: GET <prefix>/health, /health, /healthz, /api/health (until one answers 2xx),
  GET <prefix>/status, GET <prefix>/metrics, /metrics, /api/metrics (until one is Prometheus).
- error_handling: a truncated JSON body with ``Content-Type: application/json`` to a route
  that accepts a body (`errors.find_body_route`: the suite's POST/PUT/PATCH routes, else the
  ``Allow`` of ``OPTIONS`` on its paths; not applicable when there is none); GET
  /crisisctl-validate-<random>; a method the burst path does not allow (DELETE by default).
- performance_baseline: `baseline_requests` sequential GETs of `path` on one keep-alive connection.
- load_resilience: the open model at `load_rate` req/s for `load_duration_s` on `path`.
- resource_utilization: the CPU and RSS of the process listening on the target's port (and the
  host's memory), measured over the load-resilience run (or over one second when that check is
  skipped); without that process (not found, or `local_process` off), the guard's own process
  figures from its status when the target runs the guard; else skipped, with the reason. The
  evidence's ``source`` says which.
- rate_limiting: `burst` requests of `burst_path` (``/path`` for GET, or ``"POST /path"``: then
  with a small JSON body), back to back over 4 connections.
- concurrency_control: requests of `concurrency_path` (the same form) sent alone, a paced
  burst of at most `burst` over `concurrency` connections, and alone again (`parallel`).

When the service runs the guard (``<prefix>/status`` says ``crisisctl-guard``), its rate limits,
concurrency limit and the requests it rejected during each burst are added to the evidence.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from crisisctl import __version__
from crisisctl.load.engine import LoadResult, run_open
from crisisctl.probe.guard import process_evidence
from crisisctl.probe.host import HostWindow, host_snapshot, pid_listening_on
from crisisctl.transport.client import BODY_CAP, HttpClient, RequestError, Response, build_request
from crisisctl.transport.target import Target, is_loopback_host, parse_url
from crisisctl.validate.checks import (
    EndpointProbe,
    ErrorCase,
    evaluate_baseline,
    evaluate_error_handling,
    evaluate_load,
    evaluate_monitoring,
    evaluate_rate_limiting,
    evaluate_resources,
)
from crisisctl.validate.errors import error_cases
from crisisctl.validate.exchange import Exchange, new_client
from crisisctl.validate.options import RATE_BURST_CONNECTIONS, ValidateOptions
from crisisctl.validate.parallel import (
    ALONE_AFTER,
    ALONE_BEFORE,
    BODYLESS_METHODS,
    JSON_BODY,
    JSON_HEADERS,
    Route,
    paced_burst,
    send_alone,
    span_for,
)
from crisisctl.validate.report import CHECK_NAMES, CheckResult, Tally, build_report
from crisisctl.validate.shedding import evaluate_concurrency

__all__ = ["Unreachable", "ValidateOptions", "run_validation"]

TOOL = "crisisctl validate"
#: per-check time caps in seconds (the budget may cut them shorter)
PROBE_CAP_S = 15.0
BURST_CAP_S = 20.0
#: connections of the load-resilience run
LOAD_CONNECTIONS = 32
#: the guard's status document is read whole up to this size
STATUS_BODY_CAP = 1024 * 1024
#: the least budget left worth starting a check with. Also the slack of the deadline: uvloop
#: fires timers up to a millisecond before `time.monotonic()` reaches them, so a check cut at
#: the deadline may end just before it, and the next one would start with nothing to run in.
MIN_CHECK_S = 0.05


class Unreachable(Exception):
    """The service gave no HTTP answer at all."""


@dataclass(frozen=True, slots=True)
class Answer:
    """One request's outcome: a response or an error kind, and how long it took."""

    response: Response | None
    error: str | None
    ms: float


class _Run:
    """One validation run: the target, the budget's deadline and the checks' I/O."""

    def __init__(self, url: str, target: Target, options: ValidateOptions) -> None:
        self.url = url
        self.target = target
        self.options = options
        self.deadline = 0.0
        self.pid: int | None = None
        #: why the service's process is unknown (when `pid` is None)
        self.pid_missing = (
            f"no process listening on port {target.port} could be seen (it may run as another "
            "user or in a container: run crisisctl as its owner or beside it)"
        )
        self.guard = False

    def at(self, path: str) -> Target:
        return dataclasses.replace(self.target, path=path)

    def url_of(self, path: str) -> str:
        return f"{self.target.origin}{path}"

    def left_s(self) -> float:
        """Seconds of the budget left (negative once it has run out)."""
        return self.deadline - time.monotonic()

    def out_of_time(self) -> bool:
        """True when too little of the budget is left to start a check (`MIN_CHECK_S`)."""
        return self.left_s() < MIN_CHECK_S

    def _timeout(self) -> float:
        """A single request's timeout: never outliving the budget by more than a moment."""
        return min(self.options.timeout_s, max(self.left_s(), MIN_CHECK_S))

    async def request(self, path: str, body_cap: int = BODY_CAP) -> Answer:
        """One GET of `path` on a fresh connection, through the load engine's client."""
        target = self.at(path)
        client = HttpClient(target, build_request(target), timeout_s=self._timeout(),
                            body_cap=body_cap)  # fmt: skip
        t0 = time.perf_counter()
        try:
            response = await client.send()
        except RequestError as exc:
            return Answer(None, exc.kind, (time.perf_counter() - t0) * 1000.0)
        finally:
            client.close()
        return Answer(response, None, (time.perf_counter() - t0) * 1000.0)

    async def bounded(self, cap_s: float, coro: Coroutine[Any, Any, Any]) -> bool:
        """Run `coro` for at most `cap_s` (and never past the deadline); True when cut short."""
        limit = min(cap_s, self.left_s())
        if limit < MIN_CHECK_S:
            coro.close()
            return True
        try:
            async with asyncio.timeout(limit):
                await coro
        except TimeoutError:
            return True
        return False

    # -- monitoring ------------------------------------------------------------------------
    async def monitoring(self) -> CheckResult:
        prefix = self.options.prefix
        candidates = {
            "health": [f"{prefix}/health", "/health", "/healthz", "/api/health"],
            "status": [f"{prefix}/status"],
            "metrics": [f"{prefix}/metrics", "/metrics", "/api/metrics"],
        }
        probes: list[EndpointProbe] = []

        async def probe_all() -> None:
            for kind, paths in candidates.items():
                for path in paths:
                    answer = await self.request(path)
                    resp = answer.response
                    head = resp.body if resp is not None else b""
                    probe = EndpointProbe(
                        kind,
                        path,
                        resp.status if resp is not None else None,
                        answer.ms,
                        resp.body_bytes if resp is not None else 0,
                        prometheus=b"# HELP " in head or b"# TYPE " in head,
                        error=answer.error,
                    )
                    probes.append(probe)
                    if probe.reachable:
                        break

        cut = await self.bounded(PROBE_CAP_S, probe_all())
        result = evaluate_monitoring(probes)
        if cut:
            result.summary += " (the probes ran out of time)"
        return result

    # -- error handling --------------------------------------------------------------------
    async def error_handling(self) -> CheckResult:
        opts = self.options
        routes = [
            (*opts.burst_route, "--burst-path"),
            (*opts.concurrency_route, "--concurrency-path"),
            ("GET", opts.path, "--path"),
        ]
        cases: list[ErrorCase] = []

        async def send_all() -> None:
            async with new_client(self.target, 1, self._timeout()) as client:
                await error_cases(client, routes, cases)

        await self.bounded(PROBE_CAP_S, send_all())
        names = ("malformed_json", "unknown_route", "wrong_method")
        for name in names[len(cases) :]:
            cases.append(ErrorCase(name, "?", "?", "4xx", error="not sent: out of time"))
        return evaluate_error_handling(cases)

    # -- performance baseline --------------------------------------------------------------
    async def baseline(self) -> CheckResult:
        opts = self.options
        tally = Tally()
        target = self.at(opts.path)
        client = HttpClient(target, build_request(target), timeout_s=opts.timeout_s)

        async def repeat() -> None:
            try:
                for _ in range(opts.baseline_requests):
                    t0 = time.perf_counter()
                    try:
                        response = await client.send()
                    except RequestError as exc:
                        tally.error(exc.kind)
                        continue
                    tally.response(response.status, (time.perf_counter() - t0) * 1000.0)
            finally:
                client.close()

        cap = opts.baseline_requests * opts.timeout_s + 1.0
        tally.timed_out = await self.bounded(cap, repeat())
        return evaluate_baseline(tally, opts.target_ms, opts.baseline_requests)

    # -- load resilience and resources -----------------------------------------------------
    async def load_and_resources(self, run_load: bool, run_resources: bool) -> list[CheckResult]:
        opts = self.options
        results: list[CheckResult] = []
        # without a local process, the guard's own figures (a status before and one after)
        guard_before = await self.guard_status() if run_resources and self.pid is None else None
        if not run_load:
            t0 = time.monotonic()
            snapshot = await asyncio.to_thread(host_snapshot, self.pid, interval=1.0)
            res = evaluate_resources(
                snapshot, opts.limits, "idle (1 s)", self.pid_missing,
                await self._guard_process(guard_before),
            )  # fmt: skip
            res.duration_ms = (time.monotonic() - t0) * 1000.0
            return [res]
        window = HostWindow(self.pid) if run_resources else None
        if window is not None:
            await asyncio.to_thread(window.start)
        outcome: list[LoadResult] = []

        async def load() -> None:
            outcome.append(
                await run_open(
                    self.url_of(opts.path),
                    target=self.at(opts.path),
                    rate=opts.load_rate,
                    duration_s=opts.load_duration_s,
                    connections=LOAD_CONNECTIONS,
                    timeout_s=opts.timeout_s,
                )
            )

        async def sample() -> None:
            assert window is not None
            while True:
                await asyncio.sleep(1.0)
                await asyncio.to_thread(window.sample)

        t0 = time.monotonic()
        sampler = asyncio.create_task(sample()) if window is not None else None
        try:
            cut = await self.bounded(opts.load_duration_s + opts.timeout_s + 2.0, load())
        finally:
            if sampler is not None:
                sampler.cancel()
                await asyncio.gather(sampler, return_exceptions=True)
        load_ms = (time.monotonic() - t0) * 1000.0
        if outcome:
            check = evaluate_load(outcome[0].to_dict())
        else:
            check = CheckResult(
                "load_resilience",
                False,
                f"the {opts.load_duration_s:g} s load did not finish within the budget.",
                {"cut_short": cut},
            )
        check.duration_ms = load_ms
        results.append(check)
        if window is not None:
            t1 = time.monotonic()
            snapshot = await asyncio.to_thread(window.finish)
            res = evaluate_resources(
                snapshot, opts.limits, "load_resilience", self.pid_missing,
                await self._guard_process(guard_before),
            )  # fmt: skip
            if not outcome:
                # a load cut short is no load to judge the service's resources under
                res = CheckResult(
                    "resource_utilization",
                    False,
                    f"not judged: the load was cut short (by the {opts.budget_s:g} s --budget "
                    "or its time cap), so the service's resources were never measured under "
                    "the whole load.",
                    {**res.evidence, "cut_short": True},
                )
            res.duration_ms = (time.monotonic() - t1) * 1000.0
            results.append(res)
        return results

    # -- bursts ----------------------------------------------------------------------------
    async def burst(
        self, route: tuple[str, str], total: int, connections: int, tally: Tally
    ) -> bool:
        """`total` requests of `route` over `connections` connections, back to back.

        Methods that carry a body send a small JSON document, as the seeds' bursts did.
        Returns True when the burst was cut short by its time cap or the budget.
        """
        method, path = route
        target = self.at(path)
        if method in BODYLESS_METHODS:
            request = build_request(target, method)
        else:
            request = build_request(target, method, JSON_BODY, JSON_HEADERS)
        left = [total]

        async def worker() -> None:
            client = HttpClient(
                target, request, timeout_s=self.options.timeout_s, head_only=method == "HEAD"
            )
            try:
                while left[0] > 0:
                    left[0] -= 1
                    t0 = time.perf_counter()
                    try:
                        response = await client.send()
                    except RequestError as exc:
                        tally.error(exc.kind)
                        continue
                    tally.response(response.status, (time.perf_counter() - t0) * 1000.0)
            finally:
                client.close()

        async def run() -> None:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(connections, total)):
                    group.create_task(worker())

        cap = min(BURST_CAP_S, math.ceil(total / max(connections, 1)) * self.options.timeout_s + 1)
        return await self.bounded(cap, run())

    async def guard_status(self) -> dict[str, Any] | None:
        """The guard's status document, or None when the service does not run the guard."""
        answer = await self.request(f"{self.options.prefix}/status", body_cap=STATUS_BODY_CAP)
        resp = answer.response
        if resp is None or resp.status != 200 or resp.body_bytes > len(resp.body):
            return None
        try:
            data = json.loads(resp.body)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("service") != "crisisctl-guard":
            return None
        return data

    async def _guard_process(self, before: dict[str, Any] | None) -> dict[str, Any] | None:
        """The guard's process figures since `before` (None: no guard, or no figures)."""
        if before is None:
            return None
        after = await self.guard_status()
        return process_evidence(after, before) if after is not None else None

    async def _guard_delta(self, before: dict[str, Any] | None) -> dict[str, Any]:
        """The guard's limits and the requests it rejected since `before` (empty: no guard)."""
        if before is None:
            return {}
        after = await self.guard_status()
        if after is None:
            return {}
        return {
            "guard": {
                "rate_limits": after.get("rate_limits"),
                "concurrency": _pick(
                    after.get("concurrency"), ("mode", "limit", "queue_size", "in_flight")
                ),
                "rejected_during_burst": _delta(before.get("shed"), after.get("shed")),
            }
        }

    async def rate_limiting(self) -> CheckResult:
        route = self.options.burst_route
        before = await self.guard_status() if self.guard else None
        tally = Tally()
        tally.timed_out = await self.burst(route, self.options.burst, RATE_BURST_CONNECTIONS, tally)
        result = evaluate_rate_limiting(tally, self.options.burst)
        result.evidence.update({"method": route[0], "path": route[1]})
        result.evidence.update(await self._guard_delta(before))
        return result

    async def concurrency_control(self) -> CheckResult:
        opts = self.options
        route = Route(*opts.concurrency_route)
        connections = min(opts.concurrency, opts.burst)
        before = await self.guard_status() if self.guard else None
        burst: list[Exchange] = []
        alone: list[Exchange] = []
        span = [0.0]
        finished = [False]

        async def run() -> None:
            async with new_client(self.target, connections, opts.timeout_s) as client:
                origin = time.perf_counter()
                await send_alone(client, origin, route, ALONE_BEFORE, alone)
                span[0] = span_for(alone)
                await paced_burst(client, origin, route, connections=connections,
                                  total=opts.burst, span_s=span[0], out=burst)  # fmt: skip
                finished[0] = True
                await send_alone(client, origin, route, ALONE_AFTER, alone)

        await self.bounded(BURST_CAP_S, run())
        result = evaluate_concurrency(
            burst, alone, planned=opts.burst, connections=connections, span_s=span[0],
            timed_out=not finished[0],
        )  # fmt: skip
        result.evidence.update({"method": route.method, "path": route.path})
        result.evidence.update(await self._guard_delta(before))
        return result


def _pick(data: Any, keys: tuple[str, ...]) -> dict[str, Any] | None:
    return {k: data.get(k) for k in keys} if isinstance(data, dict) else None


def _delta(before: Any, after: Any) -> dict[str, int]:
    """Per-reason increase of the guard's rejection counters."""
    if not isinstance(after, dict):
        return {}
    old = before if isinstance(before, dict) else {}
    out = {k: int(v) - int(old.get(k, 0)) for k, v in after.items() if isinstance(v, int)}
    return {k: v for k, v in out.items() if v > 0}


async def run_validation(
    url: str,
    options: ValidateOptions,
    on_check: Callable[[CheckResult], None] | None = None,
    target: Target | None = None,
) -> dict[str, Any]:
    """Run the suite against `url` and return the report (`checks.build_report`).

    Raises ValueError for a URL that is not http:// or https:// or invalid options, and
    `Unreachable` when the service does not answer HTTP at `options.path`. `on_check` is called
    as each check ends. `target` is `url` parsed with the command's transport options (TLS,
    pins, auth headers); without one `url` is parsed plainly.
    """
    if target is None:
        target = parse_url(url, TOOL)
    if not options.path:
        options = dataclasses.replace(options, path=target.path)
    options.check()
    started_wall = datetime.now(UTC)
    started = time.monotonic()
    run = _Run(url, dataclasses.replace(target, path="/"), options)
    run.deadline = started + options.budget_s

    first = await run.request(options.path)
    if first.response is None:
        raise Unreachable(
            f"{run.url_of(options.path)} gave no HTTP answer ({first.error}); "
            "is the service running on that port?"
        )
    # a remote service has no local process to read: the guard's own figures stand in
    local = options.local_process and is_loopback_host(target.connect_host)
    if "resource_utilization" not in options.skip and local:
        run.pid = await asyncio.to_thread(pid_listening_on, target.port)
    elif not options.local_process:
        run.pid_missing = "the local process lookup is off and the target runs no guard"
    elif not local:
        run.pid_missing = "the target is not on this machine and runs no guard"
    run.guard = await run.guard_status() is not None

    checks: list[CheckResult] = []

    def record(result: CheckResult) -> None:
        checks.append(result)
        if on_check is not None:
            on_check(result)

    simple: dict[str, Callable[[], Coroutine[Any, Any, CheckResult]]] = {
        "monitoring": run.monitoring,
        "error_handling": run.error_handling,
        "performance_baseline": run.baseline,
        "rate_limiting": run.rate_limiting,
        "concurrency_control": run.concurrency_control,
    }
    resources_measured = False
    for name in CHECK_NAMES:
        if name in options.skip:
            record(CheckResult.skip(name, "skipped with --skip."))
            continue
        if name == "resource_utilization" and resources_measured:
            continue  # measured during the load, already recorded
        if run.out_of_time():
            record(_out_of_budget(name, options.budget_s))
            continue
        if name in ("load_resilience", "resource_utilization"):
            resources_measured = "resource_utilization" not in options.skip
            for result in await run.load_and_resources(
                name == "load_resilience", resources_measured
            ):
                record(result)
            continue
        t0 = time.monotonic()
        result = await simple[name]()
        result.duration_ms = (time.monotonic() - t0) * 1000.0
        record(result)

    settings = options.settings()
    settings.update(target_pid=run.pid, guard_detected=run.guard)
    return build_report(
        url=url,
        version=__version__,
        started_at=started_wall.isoformat(),
        duration_ms=(time.monotonic() - started) * 1000.0,
        checks=checks,
        required_rate=options.required_rate,
        settings=settings,
    )


def _out_of_budget(name: str, budget_s: float) -> CheckResult:
    return CheckResult(
        name,
        False,
        f"not run: the {budget_s:g} s --budget ran out before this check.",
        {"budget_s": budget_s},
    )
