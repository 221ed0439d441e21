"""FastAPI dependencies: the runtime, the caller (viewer or operator), and the JSON refusals.

`viewer` admits any signed-in caller (or the anonymous viewer when allowed): 401 otherwise.
`operator` also needs the operator role (403 otherwise, decided on the server whatever the page
shows) and, for a session cookie, the CSRF header (403). Refusals are `ApiError`s, rendered as
``{"error": "one sentence"}`` by the handler `create_app` installs.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from crisisctl.server.auth import Authenticator, Principal, header_map
from crisisctl.server.runtime import ServeRuntime
from crisisctl.server.schemas import Error

__all__ = [
    "ERRORS",
    "ApiError",
    "Operator",
    "Runtime",
    "Viewer",
    "get_auth",
    "get_runtime",
    "operator",
    "viewer",
]


class ApiError(Exception):
    """An API refusal: HTTP status and one sentence."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def get_runtime(request: Request) -> ServeRuntime:
    runtime: ServeRuntime = request.app.state.runtime
    return runtime


def get_auth(request: Request) -> Authenticator:
    auth: Authenticator = request.app.state.auth
    return auth


def viewer(request: Request) -> Principal:
    """The caller, or 401."""
    who = get_auth(request).identify(header_map(request.scope["headers"]))
    if who is None:
        raise ApiError(401, "sign in first: POST /api/session with a token or a user and password.")
    return who


def operator(request: Request) -> Principal:
    """The caller if it may change things (operator role, CSRF header for sessions)."""
    who = viewer(request)
    if not who.can_change:
        raise ApiError(403, f"{who.name} is a viewer: only an operator may change anything.")
    headers = header_map(request.scope["headers"])
    if not get_auth(request).csrf_ok(who, request.method, headers):
        raise ApiError(
            403,
            "the CSRF check failed: send the crisisctl_csrf cookie's value as X-CSRF-Token.",
        )
    return who


Runtime = Annotated[ServeRuntime, Depends(get_runtime)]
Viewer = Annotated[Principal, Depends(viewer)]
Operator = Annotated[Principal, Depends(operator)]

#: the refusals a route may answer, for the OpenAPI document
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Error, "description": "not signed in"},
    403: {"model": Error, "description": "not allowed (role or CSRF)"},
}
