"""crisisctl's load engine: a fast asyncio HTTP/1.1 load generator (open and closed models).

`run_open` drives a target at a constant or staged arrival rate and measures latency both
corrected for coordinated omission (from the intended send time) and uncorrected;
`run_closed` runs N virtual users with think time. Both return a `LoadResult` whose
`to_dict()` is the JSON report. `run_open_ops` / `run_closed_ops` do the same for a weighted
mix of operations with per-operation statistics. Around them:

* `scenario` (YAML files validated with pydantic) → `plan` (operations, login, the split
  between processes) → `processes` (N engine processes, histograms merged exactly);
* `thresholds` (k6-like pass/fail expressions), `report` and `html_report` (JSON and one
  self-contained HTML file), `compare` (before/after figures and improvement).

The validation suite (phase 5) lives beside this room in `crisisctl.validate` and uses it.

Any host, http:// or https:// (targets: `crisisctl.transport.target`).
"""

from __future__ import annotations

from crisisctl.load.client import ERROR_KINDS, RequestError, classify_error, parse_target
from crisisctl.load.engine import (
    LoadResult,
    RateSchedule,
    ThinkTime,
    run_closed,
    run_closed_ops,
    run_open,
    run_open_ops,
)

__all__ = [
    "ERROR_KINDS",
    "LoadResult",
    "RateSchedule",
    "RequestError",
    "ThinkTime",
    "classify_error",
    "parse_target",
    "run_closed",
    "run_closed_ops",
    "run_open",
    "run_open_ops",
]
