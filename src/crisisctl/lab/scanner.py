"""The lab's scanning service: the sick ASGI app of the demo crisis, and the same app fixed.

Routes (JSON everywhere):

- ``POST /api/scans`` ``{"name": "…"}`` starts a scan (202 with its id); malformed JSON → 400,
  a body that is not an object or a bad ``name`` → 422; with the fix, 429 while 2 scans are
  active (the seeds' ``MAX_CONCURRENT_SCANS = 2``, now the guard's operation quota ``scan``,
  taken once the body is valid, so bad input still gets its 400/422, and held by the scan
  until it ends);
- ``GET /api/scans/{scan_id}`` reads a scan's status (on the shared worker pool); 404 when
  unknown or expired;
- ``GET /api/scans/{scan_id}/report`` renders a finished scan's report (CPU on the pool);
  409 while the scan runs;
- ``GET /api/stats`` the service's counters (scans, pool queue, stored data, RSS);
- ``GET /health``.

`create_app()` (uvicorn ``--factory``) builds the mode named by ``CRISISCTL_LAB_MODE``:

- ``sick``: unlimited concurrent scans on a 4-thread pool shared with status reads, finished
  scans kept forever, no protection — under the crowd of pollers reads wait behind queued
  scans for seconds and memory grows;
- ``fixed``: the same code with the seeds' fixes: finished scans dropped once unread for `ttl_s`
  (``store.expire`` every `cleanup_every_s`, a periodic cleanup hook of the guard's memory
  policy: ``guard.memory.every``), and the whole app behind the guard (`guard_config()`: at
  most 2 active scans through its operation quota, per-client rate limits, adaptive
  concurrency, per-route timeouts).

``CRISISCTL_LAB_SETTINGS`` may hold JSON overrides of `StoreSettings` fields plus
``cleanup_every_s`` and ``ramp_s`` (the guard's recovering ramp).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from typing import Any, Final

import psutil
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from crisisctl.guard import (
    ConcurrencyConfig,
    EmergencyConfig,
    Guard,
    GuardConfig,
    OperationQuota,
    Priority,
    RouteRule,
)
from crisisctl.guard.config import DEFAULT_CRITICAL_PATHS
from crisisctl.guard.operations import OperationRefused, operations_of
from crisisctl.lab.scanstore import MB, Mode, ScanStore, StoreSettings

DEFAULT_TOKEN: Final = "crisis-demo-token"
#: the seeds' fix: at most two scans at a time (the guard's operation quota SCAN_OPERATION)
FIXED_MAX_CONCURRENT: Final = 2
SCAN_OPERATION: Final = "scan"
#: the seeds' cleanup runs hourly; the lab's runs are minutes long
DEFAULT_TTL_S: Final = 30.0
DEFAULT_CLEANUP_EVERY_S: Final = 2.0
MAX_NAME: Final = 100


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def build_app(store: ScanStore) -> Starlette:
    """The scanning service on `store` (its cleanup, if any, is the guard's: `make_app`)."""
    process = psutil.Process()

    async def create_scan(request: Request) -> JSONResponse:
        body = await request.body()
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            return _error(400, 'the body is not valid JSON: send {"name": "my scan"}.')
        if not isinstance(data, dict):
            return _error(422, 'the body must be a JSON object such as {"name": "my scan"}.')
        name = data.get("name", "scan")
        if not isinstance(name, str) or not 0 < len(name.strip()) <= MAX_NAME:
            return _error(422, f"name must be a non-empty string of at most {MAX_NAME} characters.")
        operation = None
        if store.mode == "fixed":
            operations = operations_of(request)  # the guard's, from the lifespan state
            if operations is None:
                return _error(500, "the guard's operation quotas are not in the lifespan state: "
                              "run the fixed service behind Guard() under uvicorn.")  # fmt: skip
            try:
                operation = await operations.acquire(SCAN_OPERATION)
            except OperationRefused as refused:
                headers = {"Retry-After": str(refused.retry_after_s)}
                return JSONResponse(refused.document(), status_code=429, headers=headers)
        try:
            scan = store.start(name.strip())
        except BaseException:
            if operation is not None:
                await operation.release()
            raise
        if operation is not None and scan.work is not None:
            operation.hold_until(scan.work)  # held until the scan ends, not the request
        return JSONResponse(
            {"id": scan.id, "status": scan.status, "poll": f"/api/scans/{scan.id}"},
            status_code=202,
        )

    async def read_scan(request: Request) -> JSONResponse:
        scan = store.get(request.path_params["scan_id"])
        if scan is None:
            return _error(404, "no such scan (unknown id, or expired after its TTL).")
        return JSONResponse(await asyncio.wrap_future(store.read(scan)))

    async def scan_report(request: Request) -> JSONResponse:
        scan = store.get(request.path_params["scan_id"])
        if scan is None:
            return _error(404, "no such scan (unknown id, or expired after its TTL).")
        if scan.finished is None:
            return _error(409, "the scan is not completed yet: poll its status first.")
        return JSONResponse(await asyncio.wrap_future(store.report(scan)))

    async def stats(request: Request) -> JSONResponse:
        doc = store.stats()
        doc["pid"] = process.pid
        doc["rss_mb"] = round(process.memory_info().rss / MB, 1)
        return JSONResponse(doc)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "mode": store.mode})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            store.close()

    return Starlette(
        routes=[
            Route("/api/scans", create_scan, methods=["POST"]),
            Route("/api/scans/{scan_id}", read_scan, methods=["GET"]),
            Route("/api/scans/{scan_id}/report", scan_report, methods=["GET"]),
            Route("/api/stats", stats, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def guard_config(*, token: str = DEFAULT_TOKEN, ramp_s: float = 120.0) -> GuardConfig:
    """The guard of the fixed service.

    At most 2 scans at once, emergency or not (operation quota ``scan``, taken by POST
    /api/scans once its body is valid; the seeds' MAX_CONCURRENT_SCANS). Per client IP: scan
    creation 10/minute (4/minute in emergency; the seeds' SlowAPI limit was 2/minute for one
    user), every other route 50/s and 1500/min. Adaptive concurrency per route (start 12,
    6–64, queue 4: a short queue, so that a burst beyond what a route serves is shed at once
    instead of waiting). Timeouts: status reads 2 s, scan creation and reports 5 s, anything
    else 10 s. Reports are low priority (emergency mode sheds them). `/api/stats` is critical
    like the health check (never limited).
    """
    return GuardConfig(
        token=token,
        rate_limit="50/second;1500/minute",
        routes=(
            RouteRule(
                "/api/scans",
                methods=("POST",),
                rate_limit="10/minute",
                emergency_rate_limit="4/minute",
                timeout_s=5.0,
            ),
            RouteRule("/api/scans/{scan_id}/report", priority="low", timeout_s=5.0),
            RouteRule("/api/scans/{scan_id}", methods=("GET",), timeout_s=2.0),
        ),
        timeout_s=10.0,
        concurrency=ConcurrencyConfig(
            mode="adaptive", limit=12, min_limit=6, max_limit=64, queue_size=4
        ),
        emergency=EmergencyConfig(ramp_s=ramp_s),
        critical_paths=(*DEFAULT_CRITICAL_PATHS, "/api/stats"),
        operations=(
            OperationQuota(
                SCAN_OPERATION,
                max_concurrent=FIXED_MAX_CONCURRENT,
                emergency_max_concurrent=FIXED_MAX_CONCURRENT,
            ),
        ),
    )


def describe_guard(config: GuardConfig | None = None) -> str:
    """One line: the guard's rate limits, concurrency and timeouts, from its configuration."""
    cfg = config or guard_config()
    rules = [
        f"{' '.join(r.methods or ('*',))} {r.pattern}: "
        + ", ".join(
            part
            for part in (
                r.rate_limit and f"{r.rate_limit} per client",
                f"timeout {r.timeout_s:g} s" if r.timeout_s else "",
                f"priority {Priority.parse(r.priority).name.lower()}"
                if Priority.parse(r.priority) is not Priority.NORMAL
                else "",
            )
            if part
        )
        for r in cfg.routes
    ]
    rules += [f"operation quota {op.name}: at most {op.max_concurrent} at once"
              for op in cfg.operations]  # fmt: skip
    conc = cfg.concurrency
    return (
        f"{'; '.join(rules)}; other routes {cfg.rate_limit} per client, timeout "
        f"{cfg.timeout_s:g} s; {conc.mode} concurrency limit {conc.min_limit}–{conc.max_limit} "
        f"(start {conc.limit}, queue {conc.queue_size})"
    )


def settings_from_env(env: dict[str, str] | None = None) -> tuple[Mode, dict[str, Any]]:
    """(mode, overrides) from ``CRISISCTL_LAB_MODE`` and ``CRISISCTL_LAB_SETTINGS``."""
    source = os.environ if env is None else env
    mode = source.get("CRISISCTL_LAB_MODE", "sick").strip().lower()
    if mode not in ("sick", "fixed"):
        raise ValueError(f"CRISISCTL_LAB_MODE must be sick or fixed, not {mode!r}.")
    raw = source.get("CRISISCTL_LAB_SETTINGS", "").strip()
    try:
        overrides = json.loads(raw) if raw else {}
    except ValueError:
        raise ValueError("CRISISCTL_LAB_SETTINGS is not valid JSON.") from None
    if not isinstance(overrides, dict):
        raise ValueError("CRISISCTL_LAB_SETTINGS must be a JSON object.")
    return ("fixed" if mode == "fixed" else "sick"), overrides


def make_app(
    mode: Mode, overrides: dict[str, Any] | None = None, token: str = DEFAULT_TOKEN
) -> ASGIApp:
    """The service in `mode` with `overrides` (StoreSettings fields, cleanup_every_s, ramp_s)."""
    options = dict(overrides or {})
    cleanup_every_s = float(options.pop("cleanup_every_s", DEFAULT_CLEANUP_EVERY_S))
    ramp_s = float(options.pop("ramp_s", 120.0))
    options.setdefault("ttl_s", DEFAULT_TTL_S if mode == "fixed" else None)
    try:
        settings = StoreSettings(**options)
    except TypeError as exc:
        raise ValueError(f"unknown scan store setting in CRISISCTL_LAB_SETTINGS ({exc}).") from None
    store = ScanStore(settings, mode)
    if mode == "sick":
        return build_app(store)
    guard = Guard(build_app(store), guard_config(token=token, ramp_s=ramp_s))
    guard.memory.every(cleanup_every_s, store.expire)  # the guard's ticker runs the TTL sweep
    return guard


def create_app() -> ASGIApp:
    """uvicorn ``--factory`` entry point: the mode and settings come from the environment."""
    mode, overrides = settings_from_env()
    token = os.environ.get("CRISISCTL_GUARD_TOKEN", "").strip() or DEFAULT_TOKEN
    return make_app(mode, overrides, token)


def __getattr__(name: str) -> ASGIApp:
    """``sick_app`` / ``fixed_app``: the service with its default settings, built on first use,
    for ``uvicorn crisisctl.lab.scanner:fixed_app`` (no factory flag, no environment)."""
    if name in ("sick_app", "fixed_app"):
        app = make_app("sick" if name == "sick_app" else "fixed")
        globals()[name] = app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
