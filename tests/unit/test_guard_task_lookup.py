"""The guard finds the task serving a request without asking for the running loop each time.

On Python 3.11 `asyncio.get_running_loop` makes a getpid system call per call, so the guard's
request path keeps the loop last seen running in each thread (guard/runtime.py). These tests
pin what that cache must never get wrong: a request's timeout cancels its own task, in a new
loop of the same thread, in two threads serving at once, and in a forked child.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from crisisctl.guard import Guard, GuardConfig, runtime
from crisisctl.guard.types import Message

TIMEOUT_S = 0.1


def _app(cancelled: list[str], name: str) -> Starlette:
    async def slow(request: Request) -> Response:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append(name)
            raise
        return PlainTextResponse("late")  # pragma: no cover

    return Starlette(routes=[Route("/slow", slow)])


async def _status(guard: Guard) -> int:
    scope: dict[str, Any] = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": "/slow", "raw_path": b"/slow", "query_string": b"",
        "root_path": "", "headers": [], "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
    }  # fmt: skip
    sent: list[Message] = []

    async def receive() -> Message:
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}  # pragma: no cover

    async def send(message: Message) -> None:
        sent.append(message)

    # a task of its own, as a server runs each request
    await asyncio.wait_for(asyncio.ensure_future(guard(scope, receive, send)), 3.0)
    status: int = sent[0]["status"]
    await guard.aclose()
    return status


def _served(name: str, cancelled: list[str]) -> int:
    """One slow request in a new event loop of the calling thread: its status."""
    guard = Guard(_app(cancelled, name), GuardConfig(token="", timeout_s=TIMEOUT_S))
    return asyncio.run(_status(guard))


def test_a_new_loop_in_the_same_thread_still_gets_its_timeouts() -> None:
    cancelled: list[str] = []
    assert _served("first", cancelled) == 504
    # the first loop is closed but may still be the one kept for this thread
    assert _served("second", cancelled) == 504
    assert _served("third", cancelled) == 504
    assert cancelled == ["first", "second", "third"]


def test_two_threads_serving_at_once_each_cancel_their_own_request() -> None:
    cancelled: list[str] = []
    statuses: dict[str, int] = {}
    start = threading.Barrier(2)

    def serve(name: str) -> None:
        start.wait()
        for round_ in range(3):
            statuses[f"{name}{round_}"] = _served(f"{name}{round_}", cancelled)

    threads = [threading.Thread(target=serve, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert statuses == {f"{n}{r}": 504 for n in "ab" for r in range(3)}
    assert sorted(cancelled) == sorted(statuses)


@pytest.mark.skipif(sys.platform == "win32", reason="os.fork")
def test_a_forked_child_forgets_its_parents_loops() -> None:
    cancelled: list[str] = []
    assert _served("parent", cancelled) == 504
    if sys.version_info < (3, 12):
        assert runtime._thread_loops  # the parent's loop is kept (3.11's path)
        assert runtime._last.pair[0] == threading.get_ident()  # and the last thread's
    pid = os.fork()
    if pid == 0:  # the child: a clean exit code says what it found
        code = 0
        try:
            if runtime._thread_loops or runtime._last.pair != (-1, None):
                code = 3
            elif _served("child", []) != 504:
                code = 4
        except BaseException:
            code = 5
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_threads_taking_turns_always_get_their_own_task() -> None:
    # the last thread's loop is compared first. Two threads take strict turns, each asking from
    # inside a task of its own loop while the other waits inside its task too (so the other
    # loop has a current task to hand out by mistake), 200 times each
    turns = {"a": threading.Semaphore(1), "b": threading.Semaphore(0)}
    other = {"a": "b", "b": "a"}
    wrong: list[str] = []

    async def ask(name: str) -> None:
        for _ in range(200):
            turns[name].acquire(timeout=10)  # (blocks this loop inside its task: on purpose)
            if runtime.serving_task() is not asyncio.current_task():
                wrong.append(name)
            turns[other[name]].release()

    threads = [threading.Thread(target=asyncio.run, args=(ask(n),)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert wrong == []
