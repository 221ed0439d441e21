"""crisisctl's load engine: a fast asyncio HTTP/1.1 load generator (open and closed models).

`run_open` drives a target at a constant or staged arrival rate and measures latency both
corrected for coordinated omission (from the intended send time) and uncorrected;
`run_closed` runs N virtual users with think time. Both return a `LoadResult` whose
`to_dict()` is the JSON report. Only loopback targets are accepted.
"""

from __future__ import annotations

from crisisctl.load.client import ERROR_KINDS, RequestError, classify_error, parse_target
from crisisctl.load.engine import LoadResult, RateSchedule, ThinkTime, run_closed, run_open

__all__ = [
    "ERROR_KINDS",
    "LoadResult",
    "RateSchedule",
    "RequestError",
    "ThinkTime",
    "classify_error",
    "parse_target",
    "run_closed",
    "run_open",
]
