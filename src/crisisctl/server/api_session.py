"""Sign in and out (``/api/session``), who am I (``/api/me``), and the connection count.

``POST /api/session`` takes ``{"token"}`` or ``{"user", "password"}`` and answers 204 with two
cookies: ``crisisctl_session`` (signed; HttpOnly, SameSite=Strict, Path=/, Secure over https)
and ``crisisctl_csrf`` (readable by the page, SameSite=Strict): the page echoes the latter as
``X-CSRF-Token`` on every change. A wrong credential is 401 after the same work as a right one
(scrypt for users), so the answer's timing does not tell which names exist; after 10 failures
from one address within a minute, that address gets 429 until the minute has passed.
"""

from __future__ import annotations

import asyncio
import math
import time

from fastapi import APIRouter, Request, Response

from crisisctl.server.auth import CSRF_COOKIE, SESSION_COOKIE, Principal
from crisisctl.server.deps import ERRORS, ApiError, Operator, Runtime, Viewer, get_auth
from crisisctl.server.schemas import Connections, Error, Me, SessionRequest
from crisisctl.server.throttle import SignInThrottle

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["session"])


def _secure(request: Request) -> bool:
    mode = request.app.state.settings.config.secure_cookies
    if mode == "auto":
        return bool(request.url.scheme == "https")
    return bool(mode == "always")


@router.post(
    "/session",
    status_code=204,
    response_class=Response,
    responses={400: {"model": Error}, 401: {"model": Error}, 429: {"model": Error}},
)
async def sign_in(body: SessionRequest, request: Request) -> Response:
    """Sign in with a token, or a user name and password; sets the session and CSRF cookies."""
    auth = get_auth(request)
    throttle: SignInThrottle = request.app.state.throttle
    address = request.client.host if request.client else "?"
    wait = throttle.retry_after(address, time.monotonic())
    if wait is not None:
        raise ApiError(
            429, f"too many failed sign-ins from this address: try again in {math.ceil(wait)} s."
        )
    who: Principal | None
    if body.token is not None:
        who = auth.by_token(body.token)
    elif body.user is not None and body.password is not None:
        who = await asyncio.to_thread(auth.by_password, body.user, body.password)
    else:
        raise ApiError(400, 'send {"token": "…"} or {"user": "…", "password": "…"}.')
    if who is None:
        throttle.failed(address, time.monotonic())
        raise ApiError(401, "that token, user or password is not right: check it and try again.")
    throttle.succeeded(address)
    value, csrf = auth.issue(who)
    response = Response(status_code=204)
    ttl = int(auth.ttl)
    secure = _secure(request)
    response.set_cookie(
        SESSION_COOKIE, value, max_age=ttl, path="/", httponly=True, samesite="strict",
        secure=secure,
    )  # fmt: skip
    response.set_cookie(
        CSRF_COOKIE, csrf, max_age=ttl, path="/", httponly=False, samesite="strict",
        secure=secure,
    )  # fmt: skip
    return response


@router.delete("/session", status_code=204, response_class=Response)
async def sign_out() -> Response:
    """Sign out: both cookies are cleared (a signed cookie cannot be revoked earlier than its
    expiry on the server; removing the user from the serve file does revoke it)."""
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    response.delete_cookie(CSRF_COOKIE, path="/", samesite="strict")
    return response


@router.get("/me", response_model=Me, responses=ERRORS)
async def me(who: Viewer) -> Me:
    """The signed-in caller: name, role and the CSRF value to echo (empty for bearer)."""
    return Me(name=who.name, role="operator" if who.can_change else "viewer", csrf=who.csrf)


@router.get("/debug/connections", response_model=Connections, responses=ERRORS)
async def connections(who: Operator, runtime: Runtime) -> Connections:
    """How many SSE streams are open now (operators only)."""
    hub = runtime.hub
    return Connections(
        sse_connections=len(hub.subscribers), events_dropped=hub.dropped, last_event_id=hub.last_id
    )
