"""crisisctl — take a web service through a performance crisis.

Detect -> classify -> stabilize -> diagnose -> validate -> learn. The public Python API:
`Guard` / `GuardConfig` (overload protection middleware) and `track` (time operations).
"""

from crisisctl import _pure

_pure.install()  # before the guard is imported: CRISISCTL_PURE_PYTHON=1 selects the sources

from crisisctl.guard import Guard, GuardConfig, track  # noqa: E402

__all__ = ["Guard", "GuardConfig", "__version__", "track"]
__version__ = "0.1.0"
