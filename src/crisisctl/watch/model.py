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
from crisisctl.transport.settings import TransportSpec

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
    stops answering is itself a signal), and ``alertmanager``: an alert the Alertmanager
    intake received (its rule is the ``alertname``)."""

    THRESHOLD = "threshold"
    BURN_RATE = "burn_rate"
    ANOMALY = "anomaly"
    LEAK = "leak"
    TARGET_DOWN = "target_down"
    ALERTMANAGER = "alertmanager"


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


@dataclass(frozen=True, slots=True)
class GuardEndpoint:
    """One guarded instance's control surface, as the response side reaches it.

    `token` is the guard's control token (already resolved from ``env:NAME``): it authorises
    mode changes and must never appear in a log, a timeline or a notification.
    """

    url: str
    prefix: str = "/_crisis"
    token: str | None = field(default=None, repr=False)
    #: curl-style ``HOST:PORT:ADDR`` pins used to reach `url` (see ``crisisctl.transport``)
    resolve: tuple[str, ...] = ()
    #: TLS options (``cacert``, client certificate, ``insecure``) and pins, as the commands'
    #: flags give them; None: the defaults (system trust store)
    transport: TransportSpec | None = None
    #: extra request headers (values already resolved from ``env:NAME``; never logged)
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)


class ServiceDirectory(Protocol):
    """What the response side knows of the watched services (built from the watch file)."""

    def guards(self, service: str) -> Sequence[GuardEndpoint]:
        """Every guarded instance of `service` (empty when it has none)."""
        ...

    def probe_url(self, service: str) -> str | None:
        """The URL a triage of `service` probes, or None when the file names none."""
        ...


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
    "GuardEndpoint",
    "Labels",
    "Responder",
    "RuleKind",
    "SeriesKey",
    "ServiceDirectory",
    "Transition",
    "labels_of",
]
