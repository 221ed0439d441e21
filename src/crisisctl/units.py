"""Durations as people type them (``30s``, ``2m``, ``500ms``, ``1h``), for every command.

Kept apart from the scenario model so that light commands (triage, incident) can parse a
duration without importing pydantic or the load engine.
"""

from __future__ import annotations

import math
import re

__all__ = ["parse_duration"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$", re.IGNORECASE)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds in ``30s``, ``2m``, ``500ms``, ``1h``, ``3d`` or a bare number of seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration: use e.g. 30s, 2m, 500ms, 3d or a number of seconds."
        )
    value = float(match.group(1)) * _UNITS[(match.group(2) or "s").lower()]
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite duration.")
    return value
