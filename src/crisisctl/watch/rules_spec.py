"""The ``rules:`` of a watch file: one pydantic model per rule kind, told apart by ``kind``.

    rules:
      - {name: slow, kind: threshold, metric: guard_latency_p95_ms, above: 250, for: 30s}
      - {name: errors, kind: threshold, metric: guard_errors_total, ratio_to: guard_requests_total,
         window: 1m, above: 0.05, severity: P1}
      - {name: availability, kind: burn_rate, objective: 0.999}
      - {name: fast, kind: burn_rate, objective: 0.99, latency_below: 250ms}
      - {name: traffic_shift, kind: anomaly, metric: guard_requests_total, rate: 1m, z: 3}
      - {name: rss_leak, kind: leak, metric: guard_rss_bytes, limit: 2e9, window: 30m}
      - {name: down, kind: target_down, for: 10s}

The evaluation itself (pure functions) is in ``rules``; the series names the scrapers write
are listed in ``scrape``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from crisisctl.load.scenario import Duration

__all__ = [
    "WORKBOOK_WINDOWS",
    "AnomalyRule",
    "BurnRateRule",
    "BurnWindow",
    "LeakRule",
    "RuleSpec",
    "TargetDownRule",
    "ThresholdRule",
]

SeverityName = Literal["P0", "P1", "P2", "P3"]


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")]
    #: label equalities a series must have to be judged (e.g. {service: api})
    match: dict[str, str] = Field(default_factory=dict)
    for_: Annotated[Duration, Field(alias="for")] = 0.0
    keep_firing_for: Duration = 0.0
    summary: str = ""


class ThresholdRule(_Rule):
    """A value above (or below) a bound; severity graded by value ÷ bound unless fixed.

    The value is the series' latest sample, or with `rate` its per-second increase over that
    window, or with `ratio_to` the increase of `metric` ÷ the increase of `ratio_to` over
    `window` (an error ratio from two counters of the same labels).
    """

    kind: Literal["threshold"]
    metric: str
    above: float | None = None
    below: float | None = None
    rate: Duration | None = None
    ratio_to: str | None = None
    window: Annotated[Duration, Field(gt=0)] = 60.0
    severity: SeverityName | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> ThresholdRule:
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of above or below")
        bound = self.above if self.above is not None else self.below
        if bound is not None and bound <= 0 and self.severity is None:
            raise ValueError("a bound ≤ 0 has no breach ratio: give a fixed severity")
        if self.rate is not None and self.ratio_to is not None:
            raise ValueError("give rate or ratio_to, not both")
        return self


class BurnWindow(BaseModel):
    """One multiwindow pair: both burn rates must exceed `factor` for the alert to hold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    long: Annotated[Duration, Field(gt=0)]
    short: Annotated[Duration, Field(gt=0)]
    factor: Annotated[float, Field(gt=0)]
    severity: SeverityName

    @model_validator(mode="after")
    def _short_is_shorter(self) -> BurnWindow:
        if self.short >= self.long:
            raise ValueError("the short window must be shorter than the long one")
        return self


#: the Google SRE workbook's multiwindow, multi-burn-rate table (pages P1, tickets P3)
WORKBOOK_WINDOWS: tuple[BurnWindow, ...] = (
    BurnWindow(long=3600.0, short=300.0, factor=14.4, severity="P1"),
    BurnWindow(long=21_600.0, short=1800.0, factor=6.0, severity="P1"),
    BurnWindow(long=86_400.0, short=7200.0, factor=3.0, severity="P3"),
    BurnWindow(long=259_200.0, short=21_600.0, factor=1.0, severity="P3"),
)


class BurnRateRule(_Rule):
    """An SLO's error budget burning too fast, grouped `by` labels (default: per service).

    Availability: bad events are `errors` out of `total` (counters). Latency: with
    `latency_below` (seconds, one of the guard's histogram bounds) bad events are the requests
    slower than it: `total_latency` − `buckets`{le=bound}.
    """

    kind: Literal["burn_rate"]
    objective: Annotated[float, Field(gt=0, lt=1)]
    period: Annotated[Duration, Field(gt=0)] = 30 * 86_400.0
    errors: str = "guard_errors_total"
    total: str = "guard_requests_total"
    latency_below: Duration | None = None
    buckets: str = "guard_duration_le_total"
    total_latency: str = "guard_duration_count_total"
    windows: list[BurnWindow] = Field(default_factory=lambda: list(WORKBOOK_WINDOWS), min_length=1)
    #: fewer events than this in a long window do not count (three requests at night)
    min_events: Annotated[int, Field(ge=0)] = 100
    by: list[str] = Field(default_factory=lambda: ["service"])


class AnomalyRule(_Rule):
    """The latest value (or rate) `z` standard deviations away from its rolling history."""

    kind: Literal["anomaly"]
    metric: str
    rate: Duration | None = None
    window: Annotated[Duration, Field(gt=0)] = 3600.0
    z: Annotated[float, Field(gt=0)] = 3.0
    #: compare with the same time one day or one week earlier instead of the last `window`
    seasonal: Literal["none", "day", "week"] = "none"
    #: history points needed (at most 80 % of what the window holds at its resolution: a
    #: seasonal history comes from 5-minute means, 12 an hour)
    min_samples: Annotated[int, Field(ge=3)] = 30
    #: a deviation under max(min_deviation, relative_deviation × |mean|) is too tiny to judge
    min_deviation: Annotated[float, Field(ge=0)] = 0.0
    relative_deviation: Annotated[float, Field(ge=0)] = 0.01
    direction: Literal["both", "up", "down"] = "both"
    severity: SeverityName = "P3"
    #: at or beyond this z the severity is one step worse
    critical_z: Annotated[float, Field(gt=0)] = 4.0


class LeakRule(_Rule):
    """A gauge (RSS) growing steadily: the least-squares slope and r² of the longest recent
    stretch of the window that rises in a line above the noise (``trend``), and the time until
    `limit`."""

    kind: Literal["leak"]
    metric: str = "guard_rss_bytes"
    limit: Annotated[float, Field(gt=0)]
    window: Annotated[Duration, Field(gt=0)] = 1800.0
    warmup: Duration = 300.0
    min_r2: Annotated[float, Field(ge=0, le=1)] = 0.8
    #: fire when the limit is reached within this
    horizon: Annotated[Duration, Field(gt=0)] = 6 * 3600.0
    #: the fewest points a trend is judged on (3: a leak two intervals old; see ``trend``)
    min_samples: Annotated[int, Field(ge=3)] = 10
    severity: SeverityName = "P2"
    #: an ETA under this is one step worse
    urgent: Duration = 3600.0


class TargetDownRule(_Rule):
    """A target that stops answering (its ``up`` is 0)."""

    kind: Literal["target_down"]
    severity: SeverityName = "P1"


RuleSpec = Annotated[
    ThresholdRule | BurnRateRule | AnomalyRule | LeakRule | TargetDownRule,
    Field(discriminator="kind"),
]
