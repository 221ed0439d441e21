"""The guard's middleware module keeps only the HTTP request path (issue 14, point 17): the
WebSocket handshakes, the per-request runtime objects, the refusals and the lifespan live in
their own modules, and those on the request path are compiled with it."""

from __future__ import annotations

from pathlib import Path

from crisisctl import _accelerated
from crisisctl.guard import lifespan, middleware, refusals, runtime, websocket

GUARD = Path(middleware.__file__).resolve().parent
#: the middleware's size today, with a little room; the target is about 500 lines
MIDDLEWARE_MAX_LINES = 560


def test_middleware_keeps_only_the_request_path() -> None:
    lines = (GUARD / "middleware.py").read_text(encoding="utf-8").count("\n")
    assert lines <= MIDDLEWARE_MAX_LINES
    for moved in ("_WebSocketSend", "_deny_websocket"):
        assert not hasattr(middleware, moved)
    assert hasattr(websocket, "WebSocketSend") and hasattr(websocket, "handle")
    assert hasattr(lifespan, "lifespan_receive")
    assert hasattr(refusals, "refusal_body")


def test_moved_request_path_modules_are_compiled_with_it() -> None:
    for module in (runtime, websocket, refusals):
        assert module.__name__ in _accelerated.MODULES
    # the request path's runtime objects are the ones the route builder and ticker use
    assert middleware.RouteRuntime is runtime.RouteRuntime
    assert middleware.Deadline is runtime.Deadline
