"""Session-wide set-up: never test a stale compiled request path; give the guard a test clock.

The guard's request-path modules are compiled in place by ``hatch_build.py`` (``make test``
rebuilds them when a source changes). At run time a stale extension is set aside for its source
(``crisisctl._pure``); a compiled test run would then not test the compiled code, so it stops
with what to do.

The guard's request path reads a module-level clock bound once, at import, to
``time.monotonic`` (compiled, it is a C static that no monkeypatch reaches). So that tests
can drive the guard at instants they choose, in the compiled and the pure build alike, the
guard is imported here while ``time.monotonic`` is `GUARD_CLOCK`: a clock that reads the real
monotonic time until a test sets `GuardClock.now` (the ``guard_clock`` fixture).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

#: property tests check behaviour, not speed (speed lives in benchmarks/): no per-example
#: deadline, which on a busy 2-core machine failed examples that were merely slow to run
settings.register_profile("crisisctl", deadline=None)
settings.load_profile("crisisctl")

ROOT = Path(__file__).resolve().parent.parent


class GuardClock:
    """`time.monotonic`, or the instant a test holds it at (`now`, seconds)."""

    def __init__(self, real: Callable[[], float]) -> None:
        self._real = real
        #: the time the guard reads; None reads the real monotonic clock
        self.now: float | None = None

    def __call__(self) -> float:
        now = self.now
        return self._real() if now is None else now


GUARD_CLOCK = GuardClock(time.monotonic)


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.environ.get("CRISISCTL_PURE_PYTHON", "").strip() in ("", "0"):
        _refuse_stale_extensions()
    _bind_guard_clock()


def _refuse_stale_extensions() -> None:
    spec = importlib.util.spec_from_file_location("crisisctl_hatch_build", ROOT / "hatch_build.py")
    if spec is None or spec.loader is None:
        return
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    stale = build.stale_extensions()
    if stale:
        pytest.exit(
            f"the compiled request path was built from older {', '.join(stale)}: run `make test` "
            "(it recompiles), `.venv/bin/python hatch_build.py`, or set CRISISCTL_PURE_PYTHON=1",
            returncode=2,
        )


def _bind_guard_clock() -> None:
    """Import the guard while ``time.monotonic`` is GUARD_CLOCK (only for that import)."""
    if "crisisctl.guard.middleware" in sys.modules:
        return  # imported earlier (by a plugin?): the ``guard_clock`` fixture then refuses
    real = time.monotonic
    time.monotonic = GUARD_CLOCK
    try:
        import crisisctl.guard.middleware  # noqa: F401
    finally:
        time.monotonic = real


@pytest.fixture(scope="session")
def guard_clock() -> Iterator[GuardClock]:
    """The guard's clock; a test sets `now` to hold it (and puts None back when done)."""
    from crisisctl.guard import middleware

    if getattr(middleware, "_clock", None) is not GUARD_CLOCK:
        pytest.fail(
            "the guard does not read tests/conftest.py's GUARD_CLOCK: crisisctl.guard.middleware "
            "was imported before the session started, or no longer binds `_clock` to "
            "time.monotonic at import"
        )
    yield GUARD_CLOCK
    GUARD_CLOCK.now = None
