"""crisisctl — take a web service through a performance crisis.

Detect -> classify -> stabilize -> diagnose -> validate -> learn. The public Python API:
`Guard` / `GuardConfig` (overload protection middleware) and `track` (time operations).
"""

from crisisctl.guard import Guard, GuardConfig, track

__all__ = ["Guard", "GuardConfig", "__version__", "track"]
__version__ = "0.1.0"
