"""The seeds' phase 5, the validation suite: does the fixed service hold up? (`crisisctl validate`)

Seven checks run against one loopback service, each ending as a `CheckResult` (passed, failed,
or skipped with its reason) with its evidence; the suite passes when passed ÷ (passed + failed)
reaches the required rate (the seeds' 90 %). The room is split by job:

* `suite` sends the requests and measures (it drives the load engine, `crisisctl.load`, for the
  load-resilience run and the rate-limit burst, and reuses its HTTP client for the probes);
* `parallel` (concurrency control) and `errors` (error handling) send the traffic of the two
  checks that must read more than a status, through `exchange` (answers with their headers,
  refusal reasons and timing);
* `checks` and `shedding` judge what was measured: pure functions, testable without a server;
* `options` holds what to aim at and the bounds that keep a run small;
* `report` holds the result types, the request tally and the JSON report.

This room uses `crisisctl.load` and `crisisctl.probe`; neither ever imports it.
"""

from __future__ import annotations

from crisisctl.validate.checks import ResourceLimits
from crisisctl.validate.options import ValidateOptions
from crisisctl.validate.report import CHECK_NAMES, DEFAULT_REQUIRED_RATE, CheckResult
from crisisctl.validate.suite import Unreachable, run_validation

__all__ = [
    "CHECK_NAMES",
    "DEFAULT_REQUIRED_RATE",
    "CheckResult",
    "ResourceLimits",
    "Unreachable",
    "ValidateOptions",
    "run_validation",
]
