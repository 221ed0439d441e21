"""The guard's middleware module keeps only the HTTP request path (issue 14, point 17): the
WebSocket handshakes, the per-request runtime objects, the refusals, the lifespan, mode
switching and the ticker's chores live in their own modules, and those on the request path are
compiled with it."""

from __future__ import annotations

from pathlib import Path

from crisisctl import _accelerated
from crisisctl.guard import lifespan, middleware, refusals, runtime, switching, ticker, websocket

GUARD = Path(middleware.__file__).resolve().parent
#: the target of issue 14 (point 17)
MIDDLEWARE_MAX_LINES = 500


def test_middleware_keeps_only_the_request_path() -> None:
    lines = (GUARD / "middleware.py").read_text(encoding="utf-8").count("\n")
    assert lines <= MIDDLEWARE_MAX_LINES
    for moved in ("_WebSocketSend", "_deny_websocket"):
        assert not hasattr(middleware, moved)
    # mode switching and the ticker's chores: in guard/switching.py and guard/ticker.py
    for moved in ("_tick", "_housekeeping", "retry_after_hint"):
        assert not hasattr(middleware.Guard, moved)
    assert hasattr(switching.ModeSwitch, "apply") and hasattr(ticker.Chores, "tick")
    source = (GUARD / "middleware.py").read_text(encoding="utf-8")
    for gone in ("set_factor(", "ramp_progress(", "snapshot(", "fleet.switch"):
        assert gone not in source
    assert hasattr(websocket, "WebSocketSend") and hasattr(websocket, "handle")
    assert hasattr(lifespan, "lifespan_receive")
    assert hasattr(refusals, "refusal_body")


def test_moved_request_path_modules_are_compiled_with_it() -> None:
    for module in (runtime, websocket, refusals):
        assert module.__name__ in _accelerated.MODULES
    # the request path's runtime objects are the ones the route builder and ticker use
    assert middleware.RouteRuntime is runtime.RouteRuntime
    assert middleware.Deadline is runtime.Deadline
