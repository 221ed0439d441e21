"""How a request's end is judged when it is not a plain response: a client that left, or work
the event loop cannot cancel.

* **Client gone.** A client that disconnects mid-request is not the route's failure and must
  not feed its circuit breaker. The guard recognises it from what the app raised: an error
  raised inside the server's own `send` (the connection is gone: ``OSError`` and the like,
  told apart from the app's own I/O errors by where it was raised), or an exception class
  named ``ClientDisconnect`` (Starlette's, raised when `receive` said ``http.disconnect``)
  anywhere in the exception's cause/context chain.

* **Work in a thread.** Cancelling an asyncio task stops an async handler, but a handler that
  waits for a worker thread (Starlette/FastAPI ``def`` endpoints through
  ``anyio.to_thread.run_sync``, ``asyncio.to_thread``, asgiref's ``sync_to_async``) only
  abandons the thread, which runs on. `blocked_in_thread` walks the app coroutine's chain of
  awaited coroutines and says whether one of them is such a thread wait.
"""

from __future__ import annotations

from types import CodeType, TracebackType
from typing import Any

#: the status the guard records for a request whose client left (nginx's convention)
CLIENT_CLOSED_REQUEST = 499

#: qualified names of the coroutines that wait for a worker thread
THREAD_WAITS = frozenset(
    {
        "AsyncIOBackend.run_sync_in_worker_thread",  # anyio (Starlette, FastAPI)
        "run_sync",  # anyio.to_thread.run_sync
        "run_in_threadpool",  # starlette.concurrency
        "to_thread",  # asyncio.to_thread
        "SyncToAsync.__call__",  # asgiref (Django)
    }
)
_DISCONNECT_NAMES = frozenset({"ClientDisconnect", "ClientDisconnected"})
_MAX_DEPTH = 256


def blocked_in_thread(work: Any) -> bool:
    """Whether the coroutine `work` (the app's, for one request) waits for a worker thread
    (see the module docstring). Its caller's coroutine is not enough: a compiled coroutine
    (the guard's own, built with mypyc) does not expose what it awaits."""
    node: Any = work
    for _ in range(_MAX_DEPTH):
        if node is None:
            return False
        code = getattr(node, "cr_code", None) or getattr(node, "gi_code", None)
        if code is not None and code.co_qualname in THREAD_WAITS:
            return True
        node = getattr(node, "cr_await", None) or getattr(node, "gi_yieldfrom", None)
    return False


def is_client_disconnect(exc: BaseException, send: Any) -> bool:
    """Whether `exc` (raised by the app) means the client went away (see the docstring)."""
    send_code = _code_of(send)
    seen: set[int] = set()
    node: BaseException | None = exc
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        if any(cls.__name__ in _DISCONNECT_NAMES for cls in type(node).__mro__):
            return True
        if (
            send_code is not None
            and isinstance(node, OSError | EOFError)
            and _raised_in(node.__traceback__, send_code)
        ):
            return True
        node = node.__cause__ or node.__context__
    return False


def _code_of(func: Any) -> CodeType | None:
    """The code object a call of `func` runs (a function, a bound method, a callable object)."""
    target = getattr(func, "__func__", func)
    code = getattr(target, "__code__", None)
    if code is None:
        call = next(
            (k.__dict__["__call__"] for k in type(func).__mro__ if "__call__" in k.__dict__), None
        )
        code = getattr(call, "__code__", None)
    return code if isinstance(code, CodeType) else None


def _raised_in(tb: TracebackType | None, code: CodeType) -> bool:
    while tb is not None:
        if tb.tb_frame.f_code is code:
            return True
        tb = tb.tb_next
    return False
