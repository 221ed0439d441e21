"""The app factory: `create_app(settings)` → the FastAPI app of ``crisisctl serve``.

Routes: the JSON API under ``/api`` (OpenAPI at ``/api/openapi.json``; no Swagger page: CDN),
the SSE stream ``/api/events`` (a plain ASGI app, outside the OpenAPI document), the console's
pages (`crisisctl.server.pages`) and its static files at ``/static``; with an ``intake:``
section in the watch file, the Alertmanager intake (``POST /api/v1/alertmanager``, its own
credential, and ``GET /healthz``: `crisisctl.watch.intake.intake_routes`, as ``watch
--listen``). The lifespan starts and stops the `ServeRuntime` (the watch loop, the responder,
the store, the event history).

Refusals are JSON ``{"error": "one sentence"}``: 401 unauthenticated, 403 not allowed, 404 no
such thing, 409 a change the incident's state refuses, 422 a malformed body or query.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from crisisctl.incidents.db import StoreError
from crisisctl.server import api_act, api_fleet, api_incidents, api_session, pages
from crisisctl.server.auth import Authenticator, load_or_create_key
from crisisctl.server.deps import ApiError
from crisisctl.server.runtime import ServeRuntime
from crisisctl.server.schemas import Error
from crisisctl.server.settings import ServeSettings
from crisisctl.server.sse import EventStream
from crisisctl.server.throttle import SignInThrottle
from crisisctl.watch.intake import intake_routes

__all__ = ["create_app"]

_ERROR_REF = {"$ref": "#/components/schemas/Error"}
#: how a caller proves who it is (either one): an API token, or the session cookie of
#: POST /api/session (whose changes also need the X-CSRF-Token header)
SECURITY_SCHEMES: dict[str, Any] = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "an API token of the serve file"},
    "session": {
        "type": "apiKey",
        "in": "cookie",
        "name": "crisisctl_session",
        "description": "set by POST /api/session; changes also need X-CSRF-Token",
    },
}


def _first_error(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "the request is not valid."
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    return f"{where}: {first.get('msg', 'invalid')}"


def create_app(settings: ServeSettings, *, runtime: ServeRuntime | None = None) -> FastAPI:
    """The serve app; `runtime` (default: built from `settings`) is started by its lifespan."""
    live = runtime or ServeRuntime(settings)
    if live.db is None:
        live.open()  # errors are one sentence, before anything listens
    key = load_or_create_key(settings.state_dir)
    auth = Authenticator(settings, key)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await live.start()
        try:
            yield
        finally:
            await live.stop()

    app = FastAPI(
        title="crisisctl serve",
        version="1",
        openapi_url="/api/openapi.json",
        docs_url=None,  # the Swagger page loads its scripts from a CDN: never at run time
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.runtime = live
    app.state.auth = auth
    app.state.throttle = SignInThrottle()

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError) -> JSONResponse:
        text = str(exc)
        status = 404 if text.startswith("there is no incident") else 409
        return JSONResponse({"error": text}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _first_error(exc)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    def openapi() -> dict[str, Any]:
        """FastAPI's document, with every refusal (4xx, 5xx) as it is: JSON ``{"error"}``
        (FastAPI would give 422 its own shape, and an HTML route's refusals its media type)."""
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, routes=app.routes)
            for route, path in document.get("paths", {}).items():
                for operation in path.values():
                    if route == "/api/session":
                        operation["security"] = []  # signing in and out needs no credential
                    for code, answer in operation.get("responses", {}).items():
                        if code[:1] in ("4", "5"):
                            answer["content"] = {"application/json": {"schema": _ERROR_REF}}
                            if code == "422":
                                answer["description"] = "the body or query is not valid"
            components = document.setdefault("components", {})
            components.setdefault("schemas", {})["Error"] = Error.model_json_schema()
            components["securitySchemes"] = SECURITY_SCHEMES
            document["security"] = [{name: []} for name in SECURITY_SCHEMES]
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.include_router(api_session.router)
    app.include_router(api_fleet.router)
    app.include_router(api_incidents.router)
    app.include_router(api_act.router)
    stream = EventStream(live.hub, auth, ping_s=settings.config.events.ping)
    app.router.routes.append(Route("/api/events", stream, methods=["GET"]))
    if live.intake is not None:
        mount = live.intake
        app.router.routes.extend(
            intake_routes(
                mount.intake, mount.auth, max_body=mount.spec.max_body,
                max_alerts=mount.spec.max_alerts,
            )
        )  # fmt: skip
    app.router.routes.extend(pages.routes())  # the console's pages and /static
    return app
