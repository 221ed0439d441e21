"""Severity verdicts shared by every crisisctl phase (triage, stabilize, validate, post-mortem).

One place decides how bad a performance crisis is, so that every command, report and alert
agrees. The inputs are the service's p95 latency, the target (or baseline p95) it is judged
against, the error rate and whether the service answers at all; the output is a `Verdict`: a
`Severity` (OK < P3 < P2 < P1 < P0) plus one `Reason` per evaluated signal saying why.

The thresholds are the project's contract (see the tables below). The degradation factor is
observed p95 ÷ target; the worst signal wins:

* P0 — factor > 10×, or the service is unavailable (health check fails, connection refused or
  unreachable), or the error rate is ≥ 50 %;
* P1 — factor ≥ 3× or error rate ≥ 10 %;
* P2 — factor ≥ 1.5× or error rate ≥ 5 %;
* P3 — factor > 1× or error rate ≥ 1 %;
* OK — within target and error rate < 1 %.

Against a baseline the reference is itself a measurement, with a spread of its own: a healthy
service measured twice never gives the same p95. The caller then passes the factor's
`FactorInterval` (a confidence interval, e.g. 95 %, computed from the baseline's samples: see
``crisisctl.probe.spread``) and latency is graded only when the degradation is *significant*:

* interval's low end > 1× (P3's bound): graded on the point factor with the table above, so the
  interval decides *whether* the service is slower, the factor decides *how much*;
* interval reaching 1× or below: OK ("within the baseline's spread"), whatever the point
  factor — even 1.6× measured on a handful of noisy samples is not evidence of a slowdown.

A target (``--target-ms``) is a requirement, not an estimate: it has no interval and any factor
above 1× counts, as in the table.

Everything here is a pure function of its arguments: no I/O, no clock, no printing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final


class Severity(IntEnum):
    """How bad things are; worse is greater, so `max()` and comparisons pick the worst."""

    OK = 0
    P3 = 1
    P2 = 2
    P1 = 3
    P0 = 4

    def __str__(self) -> str:
        return self.name

    @classmethod
    def parse(cls, text: str) -> Severity:
        """The member named by `text`, case-insensitively ("p1", "P1", " ok ")."""
        if isinstance(text, str):
            member = cls.__members__.get(text.strip().upper())
            if member is not None:
                return member
        choices = ", ".join(m.name for m in sorted(cls, reverse=True))
        raise ValueError(f"unknown severity {text!r}: expected one of {choices}")

    @property
    def label(self) -> str:
        """Human label, e.g. "P1 major performance crisis"."""
        return _INFO[self].label

    @property
    def response_time(self) -> str | None:
        """How fast someone must respond, e.g. "urgent (4-24 hours)"; None for OK."""
        return _INFO[self].response_time

    @property
    def response_hours(self) -> tuple[float, float] | None:
        """The response window in hours as (earliest, latest); None for OK."""
        return _INFO[self].response_hours

    @property
    def escalation(self) -> str | None:
        """Who gets involved, e.g. "all hands on deck"; None for OK."""
        return _INFO[self].escalation

    @property
    def business_impact(self) -> str | None:
        """What the business feels, e.g. "complete service disruption"; None for OK."""
        return _INFO[self].business_impact


@dataclass(frozen=True, slots=True)
class _SeverityInfo:
    label: str
    response_time: str | None
    response_hours: tuple[float, float] | None
    escalation: str | None
    business_impact: str | None


_INFO: Final[dict[Severity, _SeverityInfo]] = {
    Severity.P0: _SeverityInfo(
        "P0 critical emergency",
        "immediate (0-4 hours)",
        (0.0, 4.0),
        "all hands on deck",
        "complete service disruption",
    ),
    Severity.P1: _SeverityInfo(
        "P1 major performance crisis",
        "urgent (4-24 hours)",
        (4.0, 24.0),
        "performance team lead",
        "major user experience degradation",
    ),
    Severity.P2: _SeverityInfo(
        "P2 moderate performance issue",
        "high priority (24-72 hours)",
        (24.0, 72.0),
        "standard team assignment",
        "user experience affected",
    ),
    Severity.P3: _SeverityInfo(
        "P3 minor optimization opportunity",
        "standard priority (1-2 weeks)",
        (168.0, 336.0),
        "regular sprint planning",
        "optimization opportunity",
    ),
    Severity.OK: _SeverityInfo("OK within target", None, None, None, None),
}


@dataclass(frozen=True, slots=True)
class Threshold:
    """One row of a threshold table: a value reaching `bound` (≥, or > if not inclusive)."""

    severity: Severity
    bound: float
    inclusive: bool

    def reached(self, value: float) -> bool:
        """Whether `value` is at (if inclusive) or above the bound."""
        return value >= self.bound if self.inclusive else value > self.bound

    @property
    def operator(self) -> str:
        """The comparison sign for messages: "≥" or ">"."""
        return "≥" if self.inclusive else ">"


#: Latency degradation factor (p95 ÷ target) → severity, worst first; below all rows is OK.
LATENCY_FACTOR_THRESHOLDS: Final[tuple[Threshold, ...]] = (
    Threshold(Severity.P0, 10.0, inclusive=False),
    Threshold(Severity.P1, 3.0, inclusive=True),
    Threshold(Severity.P2, 1.5, inclusive=True),
    Threshold(Severity.P3, 1.0, inclusive=False),
)

#: Error rate (failed ÷ total requests, 0..1) → severity, worst first; below all rows is OK.
#: At ≥ 50 % the service counts as unavailable.
ERROR_RATE_THRESHOLDS: Final[tuple[Threshold, ...]] = (
    Threshold(Severity.P0, 0.50, inclusive=True),
    Threshold(Severity.P1, 0.10, inclusive=True),
    Threshold(Severity.P2, 0.05, inclusive=True),
    Threshold(Severity.P3, 0.01, inclusive=True),
)

#: Threshold-breach severity of one tracked operation: (name, duration ÷ threshold strictly
#: above), worst first; anything not above the last row is BREACH_SEVERITY_FLOOR.
BREACH_RATIO_THRESHOLDS: Final[tuple[tuple[str, float], ...]] = (
    ("critical", 5.0),
    ("high", 3.0),
    ("medium", 2.0),
)
BREACH_SEVERITY_FLOOR: Final = "low"

#: Signal names used in `Reason.signal`.
SIGNAL_LATENCY: Final = "latency"
SIGNAL_ERRORS: Final = "errors"
SIGNAL_AVAILABILITY: Final = "availability"
SIGNAL_NO_DATA: Final = "no_data"

#: Order of reasons that share a severity.
_SIGNAL_ORDER: Final[dict[str, int]] = {
    SIGNAL_AVAILABILITY: 0,
    SIGNAL_LATENCY: 1,
    SIGNAL_ERRORS: 2,
    SIGNAL_NO_DATA: 3,
}

_DEFAULT_UNAVAILABLE: Final = "health check failed or connection refused"


@dataclass(frozen=True, slots=True)
class FactorInterval:
    """A confidence interval of the degradation factor: `low`..`high` at `confidence` (0.95).

    Only a factor measured against a noisy reference (a baseline) has one; `significant` says
    whether it shows a slowdown at all (its low end above P3's bound of 1×).
    """

    low: float
    high: float
    confidence: float

    def __post_init__(self) -> None:
        _require_latency("interval low end", self.low)
        _require_latency("interval high end", self.high)
        if self.low > self.high:
            raise ValueError(f"interval low end {self.low!r} is above its high end {self.high!r}")
        if not 0.0 < self.confidence < 1.0:  # also rejects NaN
            raise ValueError(f"confidence must be between 0 and 1, got {self.confidence!r}")

    @property
    def significant(self) -> bool:
        """Whether the whole interval lies above 1× (the reference's own spread is exceeded)."""
        return LATENCY_FACTOR_THRESHOLDS[-1].reached(self.low)

    def describe(self) -> str:
        """ "95 % CI 0.94-1.31×"."""
        level = _fmt(self.confidence * 100, 1)
        return f"{level} % CI {_fmt(self.low, 2)}-{_fmt(self.high, 2)}×"

    def as_dict(self) -> dict[str, float]:
        """JSON-able form: {"low", "high", "confidence"}."""
        return {"low": self.low, "high": self.high, "confidence": self.confidence}


@dataclass(frozen=True, slots=True)
class Reason:
    """Why one signal got its severity, in one human sentence with the numbers."""

    signal: str
    severity: Severity
    message: str
    value: float | None = None
    threshold: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form with snake_case keys; severity as "P0".."OK"."""
        return {
            "signal": self.signal,
            "severity": self.severity.name,
            "message": self.message,
            "value": self.value,
            "threshold": self.threshold,
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """The overall severity (the worst signal) and every reason, worst first.

    `available` is what the caller reported about reachability; an error rate ≥ 50 % makes
    the verdict P0 through the "errors" reason without changing it. `factor_interval` is the
    degradation factor's confidence interval when the reference was a baseline with a spread.
    """

    severity: Severity
    reasons: tuple[Reason, ...]
    degradation_factor: float | None
    error_rate: float | None
    available: bool
    factor_interval: FactorInterval | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form with snake_case keys; severity as "P0".."OK"."""
        return {
            "severity": self.severity.name,
            "label": self.severity.label,
            "response_time": self.severity.response_time,
            "escalation": self.severity.escalation,
            "business_impact": self.severity.business_impact,
            "degradation_factor": self.degradation_factor,
            "degradation_factor_interval": (
                self.factor_interval.as_dict() if self.factor_interval else None
            ),
            "error_rate": self.error_rate,
            "available": self.available,
            "reasons": [reason.as_dict() for reason in self.reasons],
        }


# -- number checks and formatting ----------------------------------------------------------
def _require_finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


def _require_latency(name: str, value: float) -> None:
    _require_finite(name, value)
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {value!r}")


def _require_reference(name: str, value: float) -> None:
    _require_finite(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be greater than 0, got {value!r}")


def _require_rate(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(f"{name} must be a fraction between 0 and 1, got {value!r}")


def _fmt(value: float, decimals: int) -> str:
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _fmt_ms(value: float) -> str:
    return _fmt(value, 0 if value >= 100 else 1 if value >= 10 else 2)


def _fmt_near(value: float, decimals: int, table: tuple[Threshold, ...], scale: float) -> str:
    """Format `value`, adding digits so it never prints as a bound it does not equal."""
    bounds = {row.bound for row in table}
    text = _fmt(value * scale, decimals)
    while decimals < 9 and any(text == _fmt(b * scale, decimals) and value != b for b in bounds):
        decimals += 1
        text = _fmt(value * scale, decimals)
    return text


def _grade(value: float, table: tuple[Threshold, ...]) -> Threshold | None:
    for row in table:
        if row.reached(value):
            return row
    return None


# -- public API ----------------------------------------------------------------------------
def degradation_factor(observed_ms: float, reference_ms: float) -> float:
    """Observed latency ÷ reference (target or baseline p95); 2.0 means twice as slow."""
    _require_latency("observed latency", observed_ms)
    _require_reference("reference latency", reference_ms)
    return observed_ms / reference_ms


def severity_for_factor(factor: float, interval: FactorInterval | None = None) -> Severity:
    """Severity of a latency degradation factor alone (LATENCY_FACTOR_THRESHOLDS).

    With an `interval` (a baseline's spread), OK unless the interval is `significant`.
    """
    _require_latency("degradation factor", factor)
    if interval is not None and not interval.significant:
        return Severity.OK
    row = _grade(factor, LATENCY_FACTOR_THRESHOLDS)
    return row.severity if row else Severity.OK


def severity_for_error_rate(rate: float) -> Severity:
    """Severity of an error rate (0..1) alone (ERROR_RATE_THRESHOLDS)."""
    _require_rate("error rate", rate)
    row = _grade(rate, ERROR_RATE_THRESHOLDS)
    return row.severity if row else Severity.OK


def breach_severity(duration_ms: float, threshold_ms: float) -> str:
    """Severity name of one operation that took `duration_ms` against its `threshold_ms`.

    ratio = duration ÷ threshold: > 5 "critical", > 3 "high", > 2 "medium", otherwise "low".
    Only meaningful for an actual breach (ratio > 1); smaller ratios also give "low".
    """
    _require_latency("duration", duration_ms)
    _require_reference("threshold", threshold_ms)
    ratio = duration_ms / threshold_ms
    for name, above in BREACH_RATIO_THRESHOLDS:
        if ratio > above:
            return name
    return BREACH_SEVERITY_FLOOR


def _latency_reason(
    p95_ms: float | None,
    target_ms: float | None,
    reference: str,
    available: bool,
    interval: FactorInterval | None,
) -> tuple[Reason, float | None]:
    if p95_ms is None:
        why = "the service is unavailable" if not available else "no requests were measured"
        message = f"no p95 latency data ({why}), so latency was not graded"
        return Reason(SIGNAL_NO_DATA, Severity.OK, message), None
    if target_ms is None:
        message = (
            f"p95 latency {_fmt_ms(p95_ms)} ms has no target or baseline to compare with, "
            "so latency was not graded"
        )
        return Reason(SIGNAL_NO_DATA, Severity.OK, message, value=p95_ms), None
    factor = degradation_factor(p95_ms, target_ms)
    shown = _fmt_near(factor, 2, LATENCY_FACTOR_THRESHOLDS, 1.0)
    head = f"p95 latency {_fmt_ms(p95_ms)} ms is {shown}× the {_fmt_ms(target_ms)} ms {reference}"
    ok_bound = LATENCY_FACTOR_THRESHOLDS[-1].bound
    if interval is not None and not interval.significant:
        message = f"{head} ({interval.describe()}): within the {reference}'s spread (OK)"
        return Reason(SIGNAL_LATENCY, Severity.OK, message, factor, ok_bound), factor
    spread = f"{interval.describe()}, " if interval is not None else ""
    row = _grade(factor, LATENCY_FACTOR_THRESHOLDS)
    if row is None:
        message = f"{head} ({spread}≤ {_fmt(ok_bound, 2)}×: OK)"
        return Reason(SIGNAL_LATENCY, Severity.OK, message, factor, ok_bound), factor
    message = f"{head} ({spread}{row.operator} {_fmt(row.bound, 2)}×: {row.severity.name})"
    return Reason(SIGNAL_LATENCY, row.severity, message, factor, row.bound), factor


def _error_reason(rate: float) -> Reason:
    shown = _fmt_near(rate, 2, ERROR_RATE_THRESHOLDS, 100.0)
    row = _grade(rate, ERROR_RATE_THRESHOLDS)
    if row is None:
        ok_bound = ERROR_RATE_THRESHOLDS[-1].bound
        message = f"error rate {shown}% is below {_fmt(ok_bound * 100, 2)}% (OK)"
        return Reason(SIGNAL_ERRORS, Severity.OK, message, rate, ok_bound)
    note = ", service effectively unavailable" if row.severity is Severity.P0 else ""
    message = (
        f"error rate {shown}% ({row.operator} {_fmt(row.bound * 100, 2)}%: "
        f"{row.severity.name}{note})"
    )
    return Reason(SIGNAL_ERRORS, row.severity, message, rate, row.bound)


def _availability_reason(available: bool, unavailable_reason: str | None) -> Reason:
    if available:
        return Reason(SIGNAL_AVAILABILITY, Severity.OK, "service is reachable (OK)")
    why = (unavailable_reason or "").strip().rstrip(".") or _DEFAULT_UNAVAILABLE
    return Reason(SIGNAL_AVAILABILITY, Severity.P0, f"service unavailable: {why} (P0)")


def classify(
    *,
    p95_ms: float | None,
    target_ms: float | None,
    error_rate: float | None = None,
    available: bool = True,
    unavailable_reason: str | None = None,
    reference: str = "target",
    factor_interval: FactorInterval | None = None,
) -> Verdict:
    """Grade a service from its p95 latency, target, error rate and availability.

    `target_ms` is the latency target, or the baseline p95 when comparing against a healthy
    run (pass reference="baseline" so messages say so). `factor_interval`, the degradation
    factor's confidence interval from the baseline's spread, makes latency count only when it
    is significant (see the module docstring); it is ignored without a p95 and a target.
    The verdict holds an "availability"
    reason, a "latency" reason (or "no_data" when p95 or the target is missing, which never
    raises severity) and an "errors" reason when `error_rate` (0..1) is given; the worst wins.
    Raises ValueError on a negative or non-finite latency, a target ≤ 0 or an error rate
    outside [0, 1].
    """
    if p95_ms is not None:
        _require_latency("p95 latency", p95_ms)
    if target_ms is not None:
        _require_reference("latency target", target_ms)
    if error_rate is not None:
        _require_rate("error rate", error_rate)

    reasons = [_availability_reason(available, unavailable_reason)]
    latency, factor = _latency_reason(p95_ms, target_ms, reference, available, factor_interval)
    reasons.append(latency)
    if error_rate is not None:
        reasons.append(_error_reason(error_rate))
    reasons.sort(key=lambda r: (-r.severity, _SIGNAL_ORDER.get(r.signal, len(_SIGNAL_ORDER))))
    return Verdict(
        severity=reasons[0].severity,
        reasons=tuple(reasons),
        degradation_factor=factor,
        error_rate=error_rate,
        available=available,
        factor_interval=factor_interval if factor is not None else None,
    )


__all__ = [
    "BREACH_RATIO_THRESHOLDS",
    "BREACH_SEVERITY_FLOOR",
    "ERROR_RATE_THRESHOLDS",
    "LATENCY_FACTOR_THRESHOLDS",
    "SIGNAL_AVAILABILITY",
    "SIGNAL_ERRORS",
    "SIGNAL_LATENCY",
    "SIGNAL_NO_DATA",
    "FactorInterval",
    "Reason",
    "Severity",
    "Threshold",
    "Verdict",
    "breach_severity",
    "classify",
    "degradation_factor",
    "severity_for_error_rate",
    "severity_for_factor",
]
