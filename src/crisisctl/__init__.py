"""crisisctl — take a web service through a performance crisis.

Detect -> classify -> stabilize -> diagnose -> validate -> learn. The public Python API:
`Guard` / `GuardConfig` (overload protection middleware) and `track` (time operations).
They are imported on first use (PEP 562 ``__getattr__``): ``crisisctl load`` and the other
commands that never build a guard do not pay for the guard's imports at start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crisisctl import _pure

_pure.install()  # before the guard is imported: CRISISCTL_PURE_PYTHON=1 selects the sources

if TYPE_CHECKING:  # from the defining modules: `crisisctl.guard.track` is also a module name
    from crisisctl.guard.config import GuardConfig
    from crisisctl.guard.middleware import Guard
    from crisisctl.guard.track import track

__all__ = ["Guard", "GuardConfig", "__version__", "track"]
__version__ = "0.1.0"

_LAZY = frozenset({"Guard", "GuardConfig", "track"})


def __getattr__(name: str) -> Any:
    """`Guard`, `GuardConfig` and `track`, imported from `crisisctl.guard` on first use."""
    if name in _LAZY:
        from crisisctl import guard

        value = getattr(guard, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'crisisctl' has no attribute {name!r}")
