"""The evaluation engine: rules' findings over time → alerts and their transitions.

Each cycle every rule is evaluated against the store (``rules_eval``); a finding is matched to
the alert of the same rule and labels (one alert per rule and label set, `Alert.fingerprint`):

* a new finding makes a PENDING alert; it FIRES once its condition has held for the rule's
  ``for`` (at once when ``for`` is 0);
* a FIRING alert whose condition no longer holds keeps firing for ``keep_firing_for``
  (anti-flap), then is RESOLVED; a PENDING one whose condition lapses is dropped;
* a FIRING alert whose severity changes is a transition too (FIRING → FIRING).

Transitions are reported when an alert starts firing, changes severity while firing, and
resolves: the response side acts on those. Pending alerts are listed (`alerts`) but make no
transition. `state`/`restore` carry the alerts across a restart, so a restarted watch does
not fire (nor open an incident for) what was already firing. A restored alert no cycle has
judged again yet is not resolved for lack of data: a restarted watch has few samples (a rate
needs two, a window its span), so it lapses only after its rule's look-back has been refilled
(`settle_s`: the rule's span, at least one interval, at most 10 minutes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from crisisctl.severity import Severity
from crisisctl.watch.model import Alert, AlertState, RuleKind, Transition
from crisisctl.watch.rules import Finding
from crisisctl.watch.rules_eval import evaluate_rule, rule_reads
from crisisctl.watch.rules_spec import RuleSpec, ThresholdRule
from crisisctl.watch.store import SeriesStore

__all__ = ["Engine", "alert_from_dict", "alert_to_dict", "settle_s"]

_Key = tuple[str, tuple[tuple[str, str], ...]]
#: a restored alert is held at most this long waiting for data to judge it again
MAX_SETTLE_S = 600.0


def settle_s(rule: RuleSpec, interval_s: float) -> float:
    """How long after a restart `rule` needs before its silence means "healthy": the span it
    reads (a gauge threshold reads only the last sample), at least one interval, at most
    `MAX_SETTLE_S`."""
    span = max(rule_reads(rule).values(), default=0.0)
    if isinstance(rule, ThresholdRule) and rule.rate is None and rule.ratio_to is None:
        span = 0.0
    return min(max(span, interval_s), MAX_SETTLE_S)


def _at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class Engine:
    """Evaluates `rules` against `store` and keeps each alert's state between cycles."""

    def __init__(self, rules: Sequence[RuleSpec], store: SeriesStore) -> None:
        self.rules = list(rules)
        self.store = store
        self.active: dict[_Key, Alert] = {}
        #: when each alert's condition last held (epoch s), for keep_firing_for
        self.last_true: dict[_Key, float] = {}
        #: restored alerts no cycle has judged again → when they may lapse (None: not yet
        #: evaluated since the restore)
        self.unconfirmed: dict[_Key, float | None] = {}

    def alerts(self) -> list[Alert]:
        """Every pending and firing alert, worst first."""
        return sorted(self.active.values(), key=lambda a: (-a.severity, a.rule, a.labels))

    def firing(self) -> list[Alert]:
        return [a for a in self.alerts() if a.state is AlertState.FIRING]

    def evaluate(self, now: float, *, ignore_for: bool = False) -> list[Transition]:
        """One cycle at `now` (epoch seconds); the transitions it caused. `ignore_for` fires
        at once whatever the rule's ``for`` (``watch --once``)."""
        transitions: list[Transition] = []
        for index in range(len(self.rules)):
            transitions += self.evaluate_one(index, now, ignore_for=ignore_for)
        return transitions

    def evaluate_one(self, index: int, now: float, *, ignore_for: bool = False) -> list[Transition]:
        """Rule number `index` at `now`: its part of a cycle."""
        rule = self.rules[index]
        at = _at(now)
        transitions: list[Transition] = []
        seen: set[_Key] = set()
        for finding in evaluate_rule(rule, self.store, now):
            key = (rule.name, finding.labels)
            if key in seen:
                continue
            seen.add(key)
            self.last_true[key] = now
            self.unconfirmed.pop(key, None)
            hold = 0.0 if ignore_for else rule.for_
            change = self._held(rule, key, finding, now, at, hold)
            if change is not None:
                transitions.append(change)
        for key in [k for k in self.active if k[0] == rule.name and k not in seen]:
            if key in self.unconfirmed:
                deadline = self.unconfirmed[key]
                if deadline is None:
                    deadline = self.unconfirmed[key] = now + settle_s(rule, self.store.interval_s)
                if now < deadline:
                    continue  # too few samples since the restart to call it healthy
                del self.unconfirmed[key]
            change = self._lapsed(rule, key, now, at)
            if change is not None:
                transitions.append(change)
        return transitions

    def _held(
        self, rule: RuleSpec, key: _Key, finding: Finding, now: float, at: datetime, hold: float
    ) -> Transition | None:
        old = self.active.get(key)
        figures: dict[str, Any] = {
            "severity": finding.severity,
            "value": finding.value,
            "threshold": finding.threshold,
            "summary": finding.summary,
            "evidence": finding.evidence,
        }
        if old is None:
            old = Alert(
                rule.name,
                RuleKind(rule.kind),
                finding.labels,
                finding.service,
                finding.severity,
                AlertState.PENDING,
                at,
            )
        alert = dataclasses.replace(old, **figures)
        change: Transition | None = None
        if alert.state is AlertState.PENDING:
            # datetimes keep microseconds: compare with a millisecond of slack
            if now - alert.active_since.timestamp() >= hold - 1e-3:
                alert = dataclasses.replace(alert, state=AlertState.FIRING, fired_at=at)
                change = Transition(alert, AlertState.PENDING if key in self.active else None, at)
        elif alert.severity != old.severity:
            change = Transition(alert, AlertState.FIRING, at)
        self.active[key] = alert
        return change

    def _lapsed(self, rule: RuleSpec, key: _Key, now: float, at: datetime) -> Transition | None:
        alert = self.active[key]
        if alert.state is AlertState.FIRING:
            if now - self.last_true.get(key, now) < rule.keep_firing_for:
                return None
            resolved = dataclasses.replace(alert, state=AlertState.RESOLVED, resolved_at=at)
            del self.active[key]
            self.last_true.pop(key, None)
            return Transition(resolved, AlertState.FIRING, at)
        del self.active[key]
        self.last_true.pop(key, None)
        return None

    # -- persistence ---------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The alerts as a JSON-able document (for the state snapshot)."""
        return {
            "alerts": [
                {**alert_to_dict(a), "last_true": self.last_true.get(k)}
                for k, a in self.active.items()
            ]
        }

    def restore(self, document: Mapping[str, Any]) -> int:
        """Bring back the alerts of a `state` document (rules no longer in the file are
        dropped); returns how many came back."""
        names = {rule.name for rule in self.rules}
        count = 0
        for row in document.get("alerts", []):
            try:
                alert = alert_from_dict(row)
            except (KeyError, ValueError, TypeError):
                continue
            if alert.rule not in names:
                continue
            key = (alert.rule, alert.labels)
            self.active[key] = alert
            self.unconfirmed[key] = None
            if isinstance(row.get("last_true"), int | float):
                self.last_true[key] = float(row["last_true"])
            count += 1
        return count


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _dt(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def alert_to_dict(alert: Alert) -> dict[str, Any]:
    """An alert as JSON-able data (what ``watch --once --json`` prints and the state keeps)."""
    return {
        "rule": alert.rule,
        "kind": alert.kind.value,
        "labels": dict(alert.labels),
        "service": alert.service,
        "severity": alert.severity.name,
        "state": alert.state.value,
        "active_since": _iso(alert.active_since),
        "fired_at": _iso(alert.fired_at),
        "resolved_at": _iso(alert.resolved_at),
        "value": alert.value,
        "threshold": alert.threshold,
        "summary": alert.summary,
        "evidence": dict(alert.evidence),
        "fingerprint": alert.fingerprint,
    }


def alert_from_dict(row: Mapping[str, Any]) -> Alert:
    """The inverse of `alert_to_dict` (KeyError/ValueError on a malformed row)."""
    since = _dt(row["active_since"])
    if since is None:
        raise ValueError("active_since missing")
    return Alert(
        rule=str(row["rule"]),
        kind=RuleKind(row["kind"]),
        labels=tuple(sorted((str(k), str(v)) for k, v in dict(row["labels"]).items())),
        service=str(row["service"]),
        severity=Severity.parse(str(row["severity"])),
        state=AlertState(row["state"]),
        active_since=since,
        fired_at=_dt(row.get("fired_at")),
        resolved_at=_dt(row.get("resolved_at")),
        value=row.get("value"),
        threshold=row.get("threshold"),
        summary=str(row.get("summary", "")),
        evidence=dict(row.get("evidence") or {}),
    )
