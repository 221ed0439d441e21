"""The watch room's shared vocabulary: series keys, alerts and their state transitions.

The rule engine (``rules``/``engine``) turns samples into `Alert` values and reports every
change of state as a `Transition`; the response side (incidents, notifications, runbooks,
escalation) consumes transitions. Both sides meet only here, so either can change inside
without the other noticing.

An alert is identified by its rule and its label set (`Alert.fingerprint`): one alert per rule
and labels, whatever the number of scrapes that saw it. Alerts of one `service` group into one
incident. Times are timezone-aware UTC datetimes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from crisisctl.severity import Severity

#: a label set: (name, value) pairs sorted by name, so equal sets compare and hash equal
Labels = tuple[tuple[str, str], ...]


def labels_of(mapping: Mapping[str, str]) -> Labels:
    """The canonical (sorted) label tuple of a mapping."""
    return tuple(sorted((str(k), str(v)) for k, v in mapping.items()))


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """One time series: a metric name and its labels (``instance`` and ``service`` included)."""

    name: str
    labels: Labels = ()

    def label(self, name: str, default: str = "") -> str:
        """The value of label `name`, or `default`."""
        return next((v for k, v in self.labels if k == name), default)


class AlertState(StrEnum):
    """Where an alert is: its condition holds but not yet for long enough, fires, or ended."""

    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


class RuleKind(StrEnum):
    """The kinds of rule a watch file may hold (``target_down`` is built in: a target that
    stops answering is itself a signal)."""

    THRESHOLD = "threshold"
    BURN_RATE = "burn_rate"
    ANOMALY = "anomaly"
    LEAK = "leak"
    TARGET_DOWN = "target_down"


@dataclass(frozen=True, slots=True)
class Alert:
    """One rule's verdict on one label set, at the instant it was last evaluated."""

    rule: str
    kind: RuleKind
    labels: Labels
    #: the service the alert is about: alerts of one service group into one incident
    service: str
    severity: Severity
    state: AlertState
    #: when the condition first held (pending since)
    active_since: datetime
    fired_at: datetime | None = None
    resolved_at: datetime | None = None
    #: the figure the rule judged and the bound it was judged against (None where not one)
    value: float | None = None
    threshold: float | None = None
    #: one sentence a person reads in a notification or on a timeline
    summary: str = ""
    #: the breached figures, JSON-serialisable (windows, burn rates, slope, r², ETA, ...)
    evidence: Mapping[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """A stable id of (rule, labels): the same alert across scrapes and restarts."""
        text = self.rule + "\x00" + "\x00".join(f"{k}={v}" for k, v in self.labels)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Transition:
    """An alert changed state (``previous`` None: first seen) at instant `at`.

    A severity change of a firing alert is a transition too (previous FIRING, state FIRING):
    the response side may escalate on it.
    """

    alert: Alert
    previous: AlertState | None
    at: datetime


class Responder(Protocol):
    """What the watch loop calls after each evaluation cycle (the response side implements it)."""

    async def handle(
        self, transitions: Sequence[Transition], firing: Sequence[Alert], now: datetime
    ) -> None:
        """Act on this cycle's transitions; `firing` is every alert firing now (for timers)."""
        ...


__all__ = [
    "Alert",
    "AlertState",
    "Labels",
    "Responder",
    "RuleKind",
    "SeriesKey",
    "Transition",
    "labels_of",
]
