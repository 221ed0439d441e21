"""ASGI apps for `benchmarks/guard_overhead.py`: the same hello-world route behind each middleware.

Every variant is a module attribute, so uvicorn selects it by import string, e.g.
``benchmarks.apps.overhead_apps:guard_app`` (run from the project root). The attributes are
built lazily (PEP 562 ``__getattr__``): importing this module never imports the guard,
slowapi or FastAPI, so a variant whose dependency is missing fails alone, when selected.

Variants:

* ``bare_app`` — Starlette, one route ``GET /`` returning ``PlainTextResponse("hello")``;
* ``empty_asgi_app`` — the same behind one empty pure-ASGI pass-through layer (the floor);
* ``guard_app`` — behind crisisctl's Guard with every policy on but no limit ever reached;
* ``guard_pure`` (a variant, not an attribute) — ``guard_app`` with ``CRISISCTL_PURE_PYTHON=1``:
  the request path run from its Python source instead of its mypyc-compiled extensions;
* ``guard_no_rate_headers_app`` — the same guard with RateLimit headers on success turned off
  (they are on by default: the server's own handling of two more headers is most of their cost);
* ``guard_metrics_only_app`` — Guard with concurrency limiting and breakers off;
* ``guard_plus_<policy>_app`` — metrics only plus one policy (``ratelimit``, ``concurrency``,
  ``timeout``, ``breaker``), to show what each policy costs;
* ``slowapi_app`` — slowapi's ``SlowAPIASGIMiddleware``, a default limit never reached,
  memory storage;
* ``bare_fastapi_app`` — FastAPI, the same route;
* ``instrumentator_app`` — the FastAPI app instrumented by prometheus-fastapi-instrumentator;
* ``realistic_bare_app``, ``realistic_guard_app``, ``realistic_slowapi_app`` — the realistic
  app of `benchmarks/apps/realistic_app.py` (50 routes with path parameters, 1,000 clients
  behind a trusted proxy, two stacked limits per client, RateLimit headers on), bare, behind
  the guard configured as ``guard_app`` plus those limits and the trusted proxy, and behind
  slowapi with the same limits, key (the client behind the proxy) and headers. Their load is
  the cycle of `realistic_app.requests()` (`REALISTIC` names them);
* ``guard_no_loop_health_app``, ``realistic_guard_no_loop_health_app`` — those guards with
  event-loop health off (the ticker at one tick a second instead of twenty);
* ``realistic_guard_no_routes_app``, ``…_no_proxy_app``, ``…_one_limit_app``,
  ``…_no_headers_app`` — the realistic guard with one part removed (route discovery, the
  trusted proxy, the second limit, RateLimit headers): what each part costs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

#: A rate limit no benchmark ever reaches.
NEVER_REACHED = "1000000/second"


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


def _starlette() -> Starlette:
    return Starlette(routes=[Route("/", hello)])


class EmptyASGI:
    """A pure-ASGI middleware that does nothing: the cost of one layer, the floor."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def make_bare() -> ASGIApp:
    return _starlette()


def make_empty_asgi() -> ASGIApp:
    return EmptyASGI(_starlette())


def make_guard() -> ASGIApp:
    from crisisctl.guard import ConcurrencyConfig, Guard, GuardConfig

    config = GuardConfig(
        rate_limit=NEVER_REACHED,
        timeout_s=30.0,
        concurrency=ConcurrencyConfig(mode="adaptive", limit=512, min_limit=256, max_limit=4096),
    )
    return Guard(_starlette(), config)


def make_guard_no_loop_health() -> ASGIApp:
    """`guard_app` with event-loop health off: its ticker back at one tick a second. Under
    callgrind the server runs ~50x slower, so a ticker's wake-ups during the N2 - N1 extra
    requests land in the per-request difference: this variant tells them from the request
    path."""
    from crisisctl.guard import ConcurrencyConfig, Guard, GuardConfig, LoopHealthConfig

    config = GuardConfig(
        rate_limit=NEVER_REACHED,
        timeout_s=30.0,
        concurrency=ConcurrencyConfig(mode="adaptive", limit=512, min_limit=256, max_limit=4096),
        event_loop=LoopHealthConfig(enabled=False),
    )
    return Guard(_starlette(), config)


def make_guard_no_rate_headers() -> ASGIApp:
    from crisisctl.guard import ConcurrencyConfig, Guard, GuardConfig

    config = GuardConfig(
        rate_limit=NEVER_REACHED,
        rate_limit_headers=False,
        timeout_s=30.0,
        concurrency=ConcurrencyConfig(mode="adaptive", limit=512, min_limit=256, max_limit=4096),
    )
    return Guard(_starlette(), config)


def make_guard_metrics_only() -> ASGIApp:
    from crisisctl.guard import BreakerConfig, ConcurrencyConfig, Guard, GuardConfig

    config = GuardConfig(
        concurrency=ConcurrencyConfig(mode="off"), breaker=BreakerConfig(enabled=False)
    )
    return Guard(_starlette(), config)


def _guard_plus(**policy: Any) -> ASGIApp:
    from crisisctl.guard import BreakerConfig, ConcurrencyConfig, Guard, GuardConfig

    fields: dict[str, Any] = {
        "concurrency": ConcurrencyConfig(mode="off"),
        "breaker": BreakerConfig(enabled=False),
    }
    fields.update(policy)
    return Guard(_starlette(), GuardConfig(**fields))


def make_guard_plus_ratelimit() -> ASGIApp:
    return _guard_plus(rate_limit=NEVER_REACHED)


def make_guard_plus_concurrency() -> ASGIApp:
    from crisisctl.guard import ConcurrencyConfig

    return _guard_plus(
        concurrency=ConcurrencyConfig(mode="adaptive", limit=512, min_limit=256, max_limit=4096)
    )


def make_guard_plus_timeout() -> ASGIApp:
    return _guard_plus(timeout_s=30.0)


def make_guard_plus_breaker() -> ASGIApp:
    from crisisctl.guard import BreakerConfig

    return _guard_plus(breaker=BreakerConfig())


def make_slowapi() -> ASGIApp:
    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded
    from slowapi.middleware import SlowAPIASGIMiddleware
    from slowapi.util import get_remote_address

    app = _starlette()
    app.state.limiter = Limiter(
        key_func=get_remote_address,
        default_limits=[NEVER_REACHED],
        storage_uri="memory://",
        strategy="fixed-window",
    )
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)
    app.add_middleware(SlowAPIASGIMiddleware)
    return app


def _fastapi() -> Any:
    from fastapi import FastAPI

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/", response_class=PlainTextResponse)
    async def root() -> PlainTextResponse:
        return PlainTextResponse("hello")

    return app


def make_bare_fastapi() -> ASGIApp:
    return _fastapi()


def make_instrumentator() -> ASGIApp:
    from prometheus_fastapi_instrumentator import Instrumentator

    app = _fastapi()
    Instrumentator().instrument(app).expose(app)
    return app


def make_realistic_bare() -> ASGIApp:
    from benchmarks.apps.realistic_app import build_app

    return build_app()


def _realistic_guard(**overrides: Any) -> ASGIApp:
    from benchmarks.apps.realistic_app import LIMITS, TRUSTED_PROXY, build_app

    from crisisctl.guard import ConcurrencyConfig, Guard, GuardConfig

    fields: dict[str, Any] = {
        "rate_limit": LIMITS,
        "trusted_proxies": (TRUSTED_PROXY,),
        "rate_limit_headers": True,
        "timeout_s": 30.0,
        "concurrency": ConcurrencyConfig(mode="adaptive", limit=512, min_limit=256, max_limit=4096),
    }
    fields.update(overrides)
    return Guard(build_app(), GuardConfig(**fields))


def make_realistic_guard() -> ASGIApp:
    return _realistic_guard()


def make_realistic_guard_jobs_only() -> ASGIApp:
    """The realistic guard doing only the floor's jobs (floor_middleware.py): route labels,
    the proxy's client, two limits, RateLimit headers, metrics; no concurrency limit, timeout,
    breaker or event-loop health."""
    from crisisctl.guard import BreakerConfig, ConcurrencyConfig, LoopHealthConfig

    return _realistic_guard(
        timeout_s=None,
        concurrency=ConcurrencyConfig(mode="off"),
        breaker=BreakerConfig(enabled=False),
        event_loop=LoopHealthConfig(enabled=False),
    )


def make_realistic_guard_no_routes() -> ASGIApp:
    """The realistic guard without route discovery (no per-route labels)."""
    return _realistic_guard(discover_routes=False)


def make_realistic_guard_no_proxy() -> ASGIApp:
    """The realistic guard not trusting the proxy: one client key (the proxy's address)."""
    return _realistic_guard(trusted_proxies=())


def make_realistic_guard_one_limit() -> ASGIApp:
    """The realistic guard with one per-client limit instead of two."""
    from benchmarks.apps.realistic_app import LIMITS

    return _realistic_guard(rate_limit=LIMITS.split(";")[0])


def make_realistic_guard_no_loop_health() -> ASGIApp:
    """The realistic guard with event-loop health off (its ticker at one tick a second)."""
    from crisisctl.guard import LoopHealthConfig

    return _realistic_guard(event_loop=LoopHealthConfig(enabled=False))


def make_realistic_guard_no_headers() -> ASGIApp:
    """The realistic guard without RateLimit headers on successful responses."""
    return _realistic_guard(rate_limit_headers=False)


def make_realistic_work10() -> ASGIApp:
    """The calibration: the bare realistic app doing exactly 10 µs more CPU work per request
    (realistic_app.py's docstring), what the target's "10 µs added" reads as on this machine."""
    from benchmarks.apps.realistic_app import build_app

    return build_app(work_us=10.0)


def make_realistic_floor() -> ASGIApp:
    """The realistic app behind the least middleware doing its jobs (floor_middleware.py)."""
    from benchmarks.apps.floor_middleware import build_floor_app

    return build_floor_app()


def make_realistic_slowapi() -> ASGIApp:
    from benchmarks.apps.realistic_app import LIMITS, build_app, client_key
    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded
    from slowapi.middleware import SlowAPIASGIMiddleware

    def key(request: Request) -> str:
        peer = request.client.host if request.client else ""
        return client_key({"x-forwarded-for": request.headers.get("x-forwarded-for", "")}, peer)

    app = build_app()
    app.state.limiter = Limiter(
        key_func=key,
        default_limits=[LIMITS],
        storage_uri="memory://",
        strategy="fixed-window",
        headers_enabled=True,
    )
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)
    app.add_middleware(SlowAPIASGIMiddleware)
    return app


#: variant name -> (module attribute, factory, the bare baseline it is compared with)
VARIANTS: dict[str, tuple[str, Callable[[], ASGIApp], str]] = {
    "bare": ("bare_app", make_bare, "bare"),
    "empty_asgi": ("empty_asgi_app", make_empty_asgi, "bare"),
    "guard": ("guard_app", make_guard, "bare"),
    "guard_pure": ("guard_app", make_guard, "bare"),
    "guard_no_rate_headers": ("guard_no_rate_headers_app", make_guard_no_rate_headers, "bare"),
    "guard_no_loop_health": ("guard_no_loop_health_app", make_guard_no_loop_health, "bare"),
    "guard_metrics_only": ("guard_metrics_only_app", make_guard_metrics_only, "bare"),
    "guard_plus_ratelimit": ("guard_plus_ratelimit_app", make_guard_plus_ratelimit, "bare"),
    "guard_plus_concurrency": (
        "guard_plus_concurrency_app",
        make_guard_plus_concurrency,
        "bare",
    ),
    "guard_plus_timeout": ("guard_plus_timeout_app", make_guard_plus_timeout, "bare"),
    "guard_plus_breaker": ("guard_plus_breaker_app", make_guard_plus_breaker, "bare"),
    "slowapi": ("slowapi_app", make_slowapi, "bare"),
    "bare_fastapi": ("bare_fastapi_app", make_bare_fastapi, "bare_fastapi"),
    "instrumentator": ("instrumentator_app", make_instrumentator, "bare_fastapi"),
    "realistic_bare": ("realistic_bare_app", make_realistic_bare, "realistic_bare"),
    "realistic_guard": ("realistic_guard_app", make_realistic_guard, "realistic_bare"),
    "realistic_slowapi": ("realistic_slowapi_app", make_realistic_slowapi, "realistic_bare"),
    "realistic_floor": ("realistic_floor_app", make_realistic_floor, "realistic_bare"),
    "realistic_work10": ("realistic_work10_app", make_realistic_work10, "realistic_bare"),
    "realistic_guard_pure": ("realistic_guard_app", make_realistic_guard, "realistic_bare"),
    "realistic_guard_jobs_only": (
        "realistic_guard_jobs_only_app",
        make_realistic_guard_jobs_only,
        "realistic_bare",
    ),
    # one part of the realistic guard removed at a time: what each part costs
    "realistic_guard_no_routes": (
        "realistic_guard_no_routes_app",
        make_realistic_guard_no_routes,
        "realistic_bare",
    ),
    "realistic_guard_no_proxy": (
        "realistic_guard_no_proxy_app",
        make_realistic_guard_no_proxy,
        "realistic_bare",
    ),
    "realistic_guard_one_limit": (
        "realistic_guard_one_limit_app",
        make_realistic_guard_one_limit,
        "realistic_bare",
    ),
    "realistic_guard_no_headers": (
        "realistic_guard_no_headers_app",
        make_realistic_guard_no_headers,
        "realistic_bare",
    ),
    "realistic_guard_no_loop_health": (
        "realistic_guard_no_loop_health_app",
        make_realistic_guard_no_loop_health,
        "realistic_bare",
    ),
}
#: the variants loaded with the realistic app's requests (50 routes, 1,000 clients)
REALISTIC = frozenset(name for name in VARIANTS if name.startswith("realistic_"))

#: environment a variant's server runs with (the same app object, another configuration)
VARIANT_ENV: dict[str, dict[str, str]] = {
    "guard_pure": {"CRISISCTL_PURE_PYTHON": "1"},
    "realistic_guard_pure": {"CRISISCTL_PURE_PYTHON": "1"},
}

_FACTORIES = {attr: factory for attr, factory, _ in VARIANTS.values()}
_BUILT: dict[str, ASGIApp] = {}


def __getattr__(name: str) -> ASGIApp:
    factory = _FACTORIES.get(name)
    if factory is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _BUILT:
        _BUILT[name] = factory()
    return _BUILT[name]
