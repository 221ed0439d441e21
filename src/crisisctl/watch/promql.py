"""PromQL building blocks for the generated rules: numbers, durations, names and the sources.

* `number`: a float as PromQL and YAML read it, without float noise: the value is rounded to
  `DIGITS` (12) significant digits — a double holds 15.95, and arithmetic on decimal inputs
  spoils the last three or four (``14.4 × 0.1`` is ``1.4400000000000002``, ``6 × (1 − 0.999)``
  is ``0.006000000000000005``) — then written in the shortest form that reads back as that
  rounded value (``1.44``, ``0.006``, ``14.0`` → ``14``, ``2e9`` → ``2000000000``), so
  ``number(float(number(x))) == number(x)``;
* `duration`: seconds as a Prometheus duration (``5400`` → ``1h30m``, ``1.5`` → ``1s500ms``);
* `metric_name`, `label_name`: any text (a watch rule's name) as a valid Prometheus metric (and
  alert) name, or label name;
* `Source` / `source_of`: what a series name of the watch store is in Prometheus. Watch folds
  the guard's families into per-instance series (``scrape``); Prometheus scrapes the guard's
  own families, so each watch name maps to the real family, a label filter and the labels
  summed away: ``guard_errors_total`` is ``sum without (route, method, status_class)
  (crisisctl_http_requests_total{status_class="5xx"})``. A name watch does not fold (from a
  ``metrics:`` endpoint) is its own source. Names only watch collects (probes, this host's
  psutil figures, the guard's status-page percentiles) have no Prometheus source.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "DIGITS",
    "WATCH_ONLY",
    "Source",
    "duration",
    "escape",
    "label_name",
    "metric_name",
    "number",
    "selector",
    "source_of",
]

_INVALID: Final = re.compile(r"[^a-zA-Z0-9_:]")
#: significant digits `number` keeps
DIGITS: Final = 12
#: the rate window of a latency percentile (the guard's status page reports its last minute)
QUANTILE_WINDOW: Final = 60.0
_UNITS: Final = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1))


def number(value: float) -> str:
    """`value` in the shortest form that reads back as it, rounded to 15 significant digits."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    rounded = float(f"{value:.{DIGITS}g}")
    if rounded == 0:
        return "0"
    if rounded.is_integer() and abs(rounded) < 1e15:
        return str(int(rounded))
    text = repr(rounded).removesuffix(".0")
    mantissa, _, exponent = text.partition("e")
    if exponent:
        return f"{mantissa.removesuffix('.0')}e{int(exponent)}"
    return text


def duration(seconds: float) -> str:
    """Seconds as a Prometheus duration: ``300`` → ``5m``, ``5400`` → ``1h30m``."""
    ms = round(seconds * 1000)
    if ms <= 0:
        return "0s"
    parts = []
    for unit, size in _UNITS:
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def metric_name(text: str) -> str:
    """`text` as a valid Prometheus metric name: other characters become ``_``, and a name
    starting with a digit gets a leading ``_``."""
    name = _INVALID.sub("_", text) or "_"
    return f"_{name}" if name[0].isdigit() else name


def label_name(text: str) -> str:
    """`text` as a valid Prometheus label name (a metric name without colons)."""
    return metric_name(text).replace(":", "_")


def escape(value: str) -> str:
    """A label value as a PromQL string literal's inside."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def selector(name: str, matchers: Mapping[str, str]) -> str:
    """``name{a="x",b="y"}`` (labels sorted), or ``name`` without matchers."""
    if not matchers:
        return name
    inner = ",".join(f'{label_name(k)}="{escape(v)}"' for k, v in sorted(matchers.items()))
    return f"{name}{{{inner}}}"


@dataclass(frozen=True)
class Source:
    """A watch series name in Prometheus: `family` filtered by `extra` labels, with `folded`
    labels summed away (per instance, as watch folds them), times `scale`."""

    family: str
    counter: bool
    extra: Mapping[str, str] = field(default_factory=dict)
    folded: tuple[str, ...] = ()
    scale: float = 1.0
    #: a latency percentile from the histogram's buckets (their rate over a window: by
    #: default `QUANTILE_WINDOW`)
    quantile: float | None = None

    def _sum(self, inner: str) -> str:
        if not self.folded:
            return inner
        return f"sum without ({', '.join(self.folded)}) ({inner})"

    def _scaled(self, expr: str) -> str:
        return expr if self.scale == 1.0 else f"{number(self.scale)} * {expr}"

    def value(self, match: Mapping[str, str], window: float = QUANTILE_WINDOW) -> str:
        """The latest value (a gauge), per instance; a percentile over `window`."""
        if self.quantile is not None:
            rate = self.over("rate", window, match)
            return self._scaled(f"histogram_quantile({number(self.quantile)}, {rate})")
        return self._scaled(self._sum(selector(self.family, {**match, **self.extra})))

    def over(self, function: str, window: float, match: Mapping[str, str]) -> str:
        """``function(family[window])`` (rate, increase, deriv…) summed per instance."""
        inner = f"{function}({selector(self.family, {**match, **self.extra})}[{duration(window)}])"
        return self._sum(inner) if self.quantile is not None else self._scaled(self._sum(inner))

    def grouped(self, function: str, window: float, match: Mapping[str, str], by: str) -> str:
        """``sum by (by) (function(family[window]))``: summed over the `by` labels."""
        inner = f"{function}({selector(self.family, {**match, **self.extra})}[{duration(window)}])"
        return self._scaled(f"sum by ({by}) ({inner})")


_ROUTE = ("route",)
_REQUEST_LABELS = ("route", "method", "status_class")
#: the watch names of a guard's folded figures → the guard's own families
_GUARD: Final[dict[str, Source]] = {
    "guard_requests_total": Source("crisisctl_http_requests_total", True, {}, _REQUEST_LABELS),
    "guard_errors_total": Source(
        "crisisctl_http_requests_total", True, {"status_class": "5xx"}, _REQUEST_LABELS
    ),
    "guard_rejected_total": Source("crisisctl_guard_rejected_total", True, {}, ("route", "reason")),
    "guard_duration_count_total": Source(
        "crisisctl_http_request_duration_seconds_count", True, {}, _ROUTE
    ),
    "guard_duration_le_total": Source(
        "crisisctl_http_request_duration_seconds_bucket", True, {}, _ROUTE
    ),
    "guard_in_flight": Source("crisisctl_http_requests_in_flight", False, {}, _ROUTE),
    "guard_emergency": Source("crisisctl_guard_mode", False, {"mode": "emergency"}, ("mode",)),
    "guard_rss_bytes": Source("crisisctl_guard_process_rss_bytes", False),
    "guard_cpu_percent": Source("crisisctl_guard_process_cpu_percent", False),
    "guard_loop_lag_ms": Source(
        "crisisctl_guard_process_loop_lag_max_seconds", False, scale=1000.0
    ),
}
_BUCKETS = "crisisctl_http_request_duration_seconds_bucket"
for _pct in ("50", "95", "99"):
    # watch reads these from the guard's status page (its last minute); Prometheus computes
    # them from the histogram (interpolated inside a bucket: coarser)
    _GUARD[f"guard_latency_p{_pct}_ms"] = Source(
        _BUCKETS, False, {}, _ROUTE, 1000.0, float(_pct) / 100.0
    )
#: series only watch itself collects (no family in Prometheus to compute them from)
WATCH_ONLY: Final = frozenset(
    {
        "probe_success",
        "probe_duration_ms",
        "probe_status",
        "host_cpu_percent",
        "host_memory_percent",
        "host_memory_used_bytes",
        "host_load1",
        "host_disk_percent",
    }
)


def source_of(name: str) -> Source | None:
    """The Prometheus source of watch series `name` (None when only watch collects it)."""
    if name in WATCH_ONLY:
        return None
    known = _GUARD.get(name)
    if known is not None:
        return known
    return Source(name, name.endswith("_total"))
