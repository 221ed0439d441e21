"""`crisisctl validate`'s options: what to aim at, how hard, and the bounds that keep runs small.

`ValidateOptions.check()` raises ValueError with one sentence saying what to change; the CLI
turns it into exit code 2.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from crisisctl.validate.checks import ResourceLimits
from crisisctl.validate.report import CHECK_NAMES, DEFAULT_REQUIRED_RATE

#: connections of the rate-limit burst: fast, but not a concurrency test
RATE_BURST_CONNECTIONS = 4
#: upper bounds that keep every run small
MAX_BURST = 5000
MAX_CONCURRENCY = 256
MAX_BASELINE_REQUESTS = 1000
MAX_LOAD_RATE = 5000.0


@dataclass(frozen=True, slots=True)
class ValidateOptions:
    """What to aim at and how hard; `check()` raises ValueError with one sentence when invalid."""

    #: "" means the URL's own path
    path: str = ""
    burst_path: str | None = None
    concurrency_path: str | None = None
    target_ms: float = 2000.0
    baseline_requests: int = 20
    burst: int = 200
    concurrency: int = 20
    load_rate: float = 50.0
    load_duration_s: float = 10.0
    timeout_s: float = 5.0
    budget_s: float = 60.0
    required_rate: float = DEFAULT_REQUIRED_RATE
    prefix: str = "/_crisis"
    skip: frozenset[str] = frozenset()
    limits: ResourceLimits = field(default_factory=ResourceLimits)
    #: look for the service's process on this machine (psutil, the port's listener); off,
    #: resource_utilization uses the guard's own process figures, as for a remote service
    local_process: bool = True

    @property
    def burst_target(self) -> str:
        """The rate-limit burst's ``[METHOD ]/path`` (the protected operation)."""
        return self.burst_path or self.path

    @property
    def concurrency_target(self) -> str:
        """The parallel burst's ``[METHOD ]/path``."""
        return self.concurrency_path or self.burst_target

    @property
    def burst_route(self) -> tuple[str, str]:
        """(method, path) of the rate-limit burst and the error cases."""
        return split_route(self.burst_target, "--burst-path")

    @property
    def concurrency_route(self) -> tuple[str, str]:
        """(method, path) of the parallel burst."""
        return split_route(self.concurrency_target, "--concurrency-path")

    def check(self) -> None:
        """Raise ValueError (one sentence saying what to change) for invalid options."""
        if not self.path.startswith("/") or self.path.split() != [self.path]:
            raise ValueError(
                f"--path must start with '/' and contain no spaces, not {self.path!r}."
            )
        _ = self.burst_route, self.concurrency_route  # each raises for an invalid value
        if not self.prefix.startswith("/") or self.prefix.endswith("/"):
            raise ValueError(
                f"--prefix must start with '/' and not end with '/', not {self.prefix!r}."
            )
        unknown = sorted(self.skip - set(CHECK_NAMES))
        if unknown:
            raise ValueError(
                f"unknown check {unknown[0]!r} in --skip: use one of {', '.join(CHECK_NAMES)}."
            )
        if self.skip >= set(CHECK_NAMES):
            raise ValueError("every check is skipped: leave at least one to run.")
        _positive("--target-ms", self.target_ms)
        _positive("--timeout", self.timeout_s)
        _positive("--budget", self.budget_s)
        _bounded_int("--baseline-requests", self.baseline_requests, MAX_BASELINE_REQUESTS)
        _bounded_int("--burst", self.burst, MAX_BURST)
        _bounded_int("--concurrency", self.concurrency, MAX_CONCURRENCY)
        _positive("--load-rate", self.load_rate)
        if self.load_rate > MAX_LOAD_RATE:
            raise ValueError(
                f"--load-rate must be at most {MAX_LOAD_RATE:g} req/s (moderate load)."
            )
        _positive("--load-duration", self.load_duration_s)
        if not 0.0 <= self.required_rate <= 100.0:
            raise ValueError(
                f"--required-rate must be a percentage 0–100, not {self.required_rate!r}."
            )
        for name, value in dataclasses.asdict(self.limits).items():
            _positive(f"--{name.replace('_', '-')}", value)
        if "load_resilience" not in self.skip and self.budget_s < self.load_duration_s + 5.0:
            raise ValueError(
                f"the --budget of {self.budget_s:g} s leaves no room around the "
                f"{self.load_duration_s:g} s load: give at least --load-duration + 5 s."
            )

    def settings(self) -> dict[str, Any]:
        """The options as they go into the report."""
        return {
            "path": self.path,
            "burst_path": self.burst_target,
            "concurrency_path": self.concurrency_target,
            "target_ms": self.target_ms,
            "baseline_requests": self.baseline_requests,
            "burst": self.burst,
            "rate_burst_connections": RATE_BURST_CONNECTIONS,
            "concurrency": self.concurrency,
            "load_rate": self.load_rate,
            "load_duration_s": self.load_duration_s,
            "timeout_s": self.timeout_s,
            "budget_s": self.budget_s,
            "prefix": self.prefix,
            "skipped": sorted(self.skip),
            **dataclasses.asdict(self.limits),
        }


def _positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, not {value!r}.")


def _bounded_int(name: str, value: int, high: int) -> None:
    if not 1 <= value <= high:
        raise ValueError(f"{name} must be between 1 and {high}, not {value!r}.")


def split_route(text: str, option: str) -> tuple[str, str]:
    """``"/a"`` → ("GET", "/a"); ``"POST /a"`` → ("POST", "/a"); ValueError otherwise."""
    parts = text.split()
    if len(parts) == 1 and text == parts[0]:
        method, path = "GET", parts[0]
    elif len(parts) == 2 and parts[0].isalpha() and parts[0].isascii():
        method, path = parts[0].upper(), parts[1]
    else:
        method, path = "", ""
    if not path.startswith("/"):
        raise ValueError(
            f"{option} must be a path starting with '/', optionally after a method "
            f"(e.g. 'POST /api/scans'), not {text!r}."
        )
    return method, path
