"""k6-like pass/fail thresholds for load runs: parse ``p95 < 300ms`` and judge it on run figures.

An expression is ``METRIC OPERATOR VALUE[UNIT]``:

- latency metrics ``p50 p90 p95 p99 p99.9`` (any percentile ``pN`` or ``p(N)``, ``med`` = p50),
  ``avg``, ``min``, ``max``; units ``us``/``µs``, ``ms`` (the default, as in k6), ``s``, ``m``;
- ``error_rate`` (transport errors and unexpected statuses ÷ requests), ``checks``
  (responses with an expected status ÷ responses) and ``dropped_rate`` (open model: arrivals
  the engine could not send because every connection was busy ÷ arrivals scheduled; whole
  run only): ``1%`` or a fraction ``0.01``;
- ``rps`` (requests per second of the run) and ``requests`` (a count);
- operators ``<  <=  >  >=  ==  !=``.

A threshold applies to the whole run or to one operation or journey step: k6's tag syntax
``p95{step:login} < 300ms`` (or ``{operation:NAME}``) scopes it to the one named. Values are
kept in canonical units (ms, fractions, req/s, counts). `abort_due` says when a running test
may stop early because a threshold with ``abort_on_fail`` has failed for good (see its docstring).

An open-model run that sets no ``dropped_rate`` threshold of its own gets
`DEFAULT_DROPPED_RATE` (``dropped_rate < 1%``, `with_defaults`): a run that could not send
the load it was asked for has not measured the service at that load, so it fails like a
threshold does. Write e.g. ``dropped_rate < 5%`` to loosen it (``dropped_rate <= 100%`` turns
it off).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from crisisctl.stats import LatencyHistogram

__all__ = [
    "ABORT_MIN_REQUESTS",
    "DEFAULT_DROPPED_RATE",
    "ScopeStats",
    "Threshold",
    "ThresholdError",
    "ThresholdResult",
    "abort_due",
    "evaluate",
    "parse_threshold",
    "with_defaults",
]

#: An abort_on_fail threshold on a percentile, mean or rate is judged early only once its scope
#: has at least this many requests (fewer say too little to stop a run on).
ABORT_MIN_REQUESTS = 100
#: The threshold an open-model run gets unless it sets a ``dropped_rate`` threshold itself.
DEFAULT_DROPPED_RATE = "dropped_rate < 1%"

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_LATENCY_UNITS = {"us": 0.001, "µs": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
_EXPR = re.compile(
    r"^\s*(?P<metric>p\(\s*[0-9.]+\s*\)|[a-z_][a-z0-9_.]*)\s*"
    r"(?:\{(?P<tag>[^{}]*)\}\s*)?"
    r"(?P<op><=|>=|==|!=|<|>)\s*"
    r"(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*"
    r"(?P<unit>[a-zµ%/]*)\s*$",
    re.IGNORECASE,
)
_PERCENTILE = re.compile(r"^p(?:\(\s*([0-9]+(?:\.[0-9]+)?)\s*\)|([0-9]+(?:\.[0-9]+)?))$")
_NAMED_LATENCY = {"avg", "min", "max", "med"}
_RATES = {"error_rate", "checks", "dropped_rate"}
#: metrics of the whole run only (an arrival is dropped before an operation is drawn for it)
_RUN_ONLY = {"dropped_rate"}


class ThresholdError(ValueError):
    """An expression that is not a valid threshold (the message says why and what to write)."""


@dataclass(frozen=True, slots=True)
class Threshold:
    """One parsed threshold; `limit` is in canonical units (ms, fraction, req/s or count)."""

    metric: str
    op: str
    limit: float
    expression: str
    operation: str | None = None
    abort_on_fail: bool = False
    delay_abort_eval_s: float = 0.0
    #: added by crisisctl (`with_defaults`), not written by the user
    default: bool = False

    @property
    def kind(self) -> str:
        """``latency``, ``rate``, ``rps`` or ``count``."""
        if self.metric in _RATES:
            return "rate"
        if self.metric == "rps":
            return "rps"
        if self.metric == "requests":
            return "count"
        return "latency"

    @property
    def percentile(self) -> float | None:
        """The percentile of a ``pN`` metric, else None."""
        return float(self.metric[1:]) if self.metric.startswith("p") else None

    def passes(self, value: float) -> bool:
        """Whether `value` (canonical units) satisfies the threshold."""
        return _OPS[self.op](value, self.limit)

    def label(self) -> str:
        """The expression with its scope, e.g. ``p95 < 300ms [get client]``."""
        return f"{self.expression} [{self.operation}]" if self.operation else self.expression


def _number_text(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e15 else str(value)


def _parse_metric(raw: str, text: str) -> str:
    name = raw.lower().replace(" ", "")
    if name == "med":
        return "p50"
    match = _PERCENTILE.match(name)
    if match:
        digits = match.group(1) or match.group(2)
        if match.group(2) and "." not in digits and len(digits) >= 3 and digits.startswith("99"):
            digits = f"{digits[:2]}.{digits[2:]}"  # p999, p9999: the usual p99.9, p99.99
        pct = float(digits)
        if not 0 < pct <= 100:
            raise ThresholdError(f"in {text!r} the percentile must be above 0 and at most 100.")
        return f"p{_number_text(pct)}"
    if name in _NAMED_LATENCY | _RATES | {"rps", "requests"}:
        return name
    raise ThresholdError(
        f"{raw!r} in {text!r} is not a metric: use p50, p90, p95, p99, p99.9, avg, min, max, "
        "error_rate, checks, dropped_rate, rps or requests."
    )


def _parse_limit(metric: str, number: float, unit: str, text: str) -> float:
    unit = unit.lower()
    if metric in _RATES:
        if unit == "%":
            value = number / 100.0
        elif unit == "":
            value = number
        else:
            raise ThresholdError(f"in {text!r} a rate takes % or a fraction, not {unit!r}.")
        if not 0 <= value <= 1:
            raise ThresholdError(
                f"in {text!r} a rate must lie between 0 and 1 (or 0% and 100%); "
                "write e.g. 5% or 0.05."
            )
        return value
    if metric in ("rps", "requests"):
        if unit not in ("", "/s") or (metric == "requests" and unit):
            raise ThresholdError(f"in {text!r} {metric} takes a plain number, not {unit!r}.")
        return number
    if unit not in ("", *_LATENCY_UNITS):
        raise ThresholdError(f"in {text!r} a latency takes us, ms, s or m, not {unit!r}.")
    return number * _LATENCY_UNITS.get(unit, 1.0)


def _parse_tag(tag: str, text: str, operation: str | None) -> str:
    key, sep, value = tag.partition(":")
    key, value = key.strip().lower(), value.strip()
    if not sep or key not in ("step", "operation") or not value:
        raise ThresholdError(
            f"in {text!r} the part in braces must name a step, e.g. 'p95{{step:login}} < 300ms'."
        )
    if operation is not None and operation != value:
        raise ThresholdError(
            f"{text!r} names the step {value!r} but belongs to the operation {operation!r}."
        )
    return value


def parse_threshold(
    text: str,
    *,
    operation: str | None = None,
    abort_on_fail: bool = False,
    delay_abort_eval_s: float = 0.0,
) -> Threshold:
    """Parse one expression such as ``p95 < 300ms``; ThresholdError says what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise ThresholdError("a threshold must be an expression such as 'p95 < 300ms'.")
    match = _EXPR.match(text)
    if match is None:
        raise ThresholdError(
            f"{text!r} is not a threshold: write METRIC OPERATOR VALUE, e.g. 'p95 < 300ms', "
            "'error_rate < 1%' or 'rps > 200'."
        )
    metric = _parse_metric(match.group("metric"), text)
    tag = match.group("tag")
    if tag is not None:
        operation = _parse_tag(tag, text, operation)
    if metric in _RUN_ONLY and operation is not None:
        raise ThresholdError(
            f"{text!r} applies to the whole run, not to the operation {operation!r}: arrivals "
            "are dropped before an operation is drawn for them; set it among the global "
            "thresholds."
        )
    limit = _parse_limit(metric, float(match.group("num")), match.group("unit"), text)
    if not math.isfinite(limit):
        raise ThresholdError(f"in {text!r} the value must be a finite number.")
    if not (math.isfinite(delay_abort_eval_s) and delay_abort_eval_s >= 0):
        raise ThresholdError("delay_abort_eval must be a duration of at least 0 seconds.")
    return Threshold(
        metric=metric,
        op=match.group("op"),
        limit=limit,
        expression=" ".join(text.split()),
        operation=operation,
        abort_on_fail=abort_on_fail,
        delay_abort_eval_s=delay_abort_eval_s,
    )


@dataclass(slots=True)
class ScopeStats:
    """The figures a threshold reads: the whole run or one operation, so far or at the end."""

    requests: int
    completed: int
    errors: int
    unexpected: int
    latency: LatencyHistogram
    duration_s: float
    #: open model, whole run: arrivals the engine could not send (every connection busy)
    dropped: int = 0
    #: open-model journeys: the arrivals that started one (None: an arrival is a request)
    started: int | None = None

    def value(self, metric: str) -> float | None:
        """The metric in canonical units, or None when there is nothing to measure it on."""
        if metric == "requests":
            return float(self.requests)
        if metric == "rps":
            return self.requests / self.duration_s if self.duration_s > 0 else None
        if metric == "error_rate":
            return (self.errors + self.unexpected) / self.requests if self.requests else None
        if metric == "dropped_rate":
            started = self.requests if self.started is None else self.started
            scheduled = started + self.dropped
            return self.dropped / scheduled if scheduled else None
        if metric == "checks":
            return (self.completed - self.unexpected) / self.completed if self.completed else None
        hist = self.latency
        if hist.count == 0:
            return None
        if metric == "avg":
            return hist.mean_us / 1000.0
        if metric == "min":
            return hist.min_us / 1000.0
        if metric == "max":
            return hist.max_us / 1000.0
        return hist.percentile(float(metric[1:])) / 1000.0


@dataclass(frozen=True, slots=True)
class ThresholdResult:
    """A threshold judged on a scope: its value (None: no data, which fails) and the verdict."""

    threshold: Threshold
    value: float | None
    passed: bool
    #: this threshold stopped the run early (abort_on_fail)
    aborted_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON form: latency values in ms, rates as fractions."""
        t = self.threshold
        unit = {"latency": "ms", "rate": "fraction", "rps": "req/s", "count": "requests"}[t.kind]
        return {
            "expression": t.expression,
            "operation": t.operation,
            "metric": t.metric,
            "operator": t.op,
            "limit": t.limit,
            "value": None if self.value is None else round(self.value, 6),
            "unit": unit,
            "passed": self.passed,
            "abort_on_fail": t.abort_on_fail,
            "aborted_run": self.aborted_run,
            "default": t.default,
        }


def evaluate(
    thresholds: Iterable[Threshold],
    scope: Callable[[str | None], ScopeStats | None],
    aborted_by: Threshold | None = None,
) -> list[ThresholdResult]:
    """Judge every threshold on `scope(operation)` (None for the whole run)."""
    results = []
    for t in thresholds:
        stats = scope(t.operation)
        value = None if stats is None else stats.value(t.metric)
        passed = value is not None and t.passes(value)
        results.append(ThresholdResult(t, value, passed, aborted_run=t is aborted_by))
    return results


def abort_due(
    t: Threshold, stats: ScopeStats | None, elapsed_s: float, min_requests: int = ABORT_MIN_REQUESTS
) -> bool:
    """Whether an ``abort_on_fail`` threshold has failed for good on the figures so far.

    Never before ``delay_abort_eval``. ``max`` only grows and ``min`` only falls, and a request
    count only grows, so ``max < X``, ``min > X`` and ``requests < N`` fail for good as soon as
    they fail. ``rps`` and ``requests > N`` are only known at the end. Percentiles, ``avg``,
    ``error_rate`` and ``checks`` are judged on the data so far once the scope has at least
    `min_requests` requests (k6's abortOnFail semantics, with a minimum sample).
    """
    if not t.abort_on_fail or stats is None or elapsed_s < t.delay_abort_eval_s:
        return False
    if t.metric in ("rps", "dropped_rate"):  # dropped arrivals are counted at the end
        return False
    value = stats.value(t.metric)
    if value is None or t.passes(value):
        return False
    if t.metric == "requests":
        return t.op in ("<", "<=", "==")
    if (t.metric == "max" and t.op in ("<", "<=")) or (t.metric == "min" and t.op in (">", ">=")):
        return True
    return stats.requests >= min_requests


def with_defaults(thresholds: Iterable[Threshold], open_model: bool) -> list[Threshold]:
    """`thresholds`, plus `DEFAULT_DROPPED_RATE` for an open-model run that sets no
    ``dropped_rate`` threshold of its own."""
    out = list(thresholds)
    if open_model and not any(t.metric == "dropped_rate" for t in out):
        parsed = parse_threshold(DEFAULT_DROPPED_RATE)
        out.append(
            Threshold(parsed.metric, parsed.op, parsed.limit, parsed.expression, default=True)
        )
    return out
