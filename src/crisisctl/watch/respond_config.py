"""The response half of a watch file: incidents, notifications, runbooks and escalation.

These sections of ``watch.yaml`` say what watch does when an alert fires (the other sections,
targets and rules, say what it watches; see ``config``)::

    incidents:
      open_at: P3            # the least severe alert that opens (or joins) an incident
      resolve_after: 10m     # all alerts of the service resolved and healthy this long
      on_resolve: [{guard_mode: normal}]   # run when it resolves (default: nothing)
    notify:
      urls: ["json://127.0.0.1:9000/hook", "env:SLACK_URL"]   # apprise URLs; env:NAME allowed
      cooldown: 5m           # one notification per incident and kind within this
      retries: 3
    runbooks:
      P1:                    # the alert's severity → escalation levels, in order
        - level: 1           # automatic recovery
          actions:
            - {guard_mode: emergency, reason: "watch: {rule}"}
            - {webhook: "http://127.0.0.1:9000/act"}
            - {command: ["./scripts/scale-up.sh"], timeout: 30s}
          escalate_after: 10m
        - level: 2           # manual intervention: notify these people
          notify: ["mailto://oncall@example.com"]
          escalate_after: 30m
        - level: 3           # rollback: runs only when unattended is true
          actions: [{command: ["./scripts/rollback.sh"], timeout: 5m}]
          unattended: false

Every model forbids unknown fields, so a typo is an error with its line (see ``config``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from crisisctl.load.scenario import Duration
from crisisctl.severity import Severity


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


NotifyOn = Literal["fire", "escalate", "resolve"]
_ALL_EVENTS: tuple[NotifyOn, ...] = ("fire", "escalate", "resolve")


class NotifyConfig(_Strict):
    """Where notifications go (apprise URLs), how often at most, and how hard to retry."""

    urls: list[str] = Field(default_factory=list)
    cooldown: Duration = 300.0
    retries: Annotated[int, Field(ge=0, le=10)] = 3
    on: list[NotifyOn] = Field(default_factory=lambda: list(_ALL_EVENTS))


class GuardModeAction(_Strict):
    """Switch the guard of every instance of the service (through its control token)."""

    guard_mode: Literal["normal", "emergency", "recovering"]
    reason: str = "crisisctl watch: {rule}"


class WebhookAction(_Strict):
    """POST the alert as JSON to a URL."""

    webhook: str
    timeout: Duration = 10.0


class CommandAction(_Strict):
    """Run a command (argv, no shell), time-bounded; its output goes on the timeline."""

    command: list[str] = Field(min_length=1)
    timeout: Duration = 60.0


Action = GuardModeAction | WebhookAction | CommandAction


class IncidentPolicy(_Strict):
    """When a firing alert opens an incident and when sustained health resolves it."""

    open_at: Literal["P0", "P1", "P2", "P3"] = "P3"
    resolve_after: Duration = 600.0
    #: run a triage of the service's probe URL and put its verdict on the new incident's timeline
    triage: bool = True
    #: actions run when the incident resolves (e.g. ``{guard_mode: normal}``); none by default:
    #: a guard switched to emergency stays there until a person or this list switches it back
    on_resolve: list[Action] = Field(default_factory=list)


class EscalationLevel(_Strict):
    """One level of a runbook: its actions, who hears of it, and when to go to the next."""

    level: Annotated[int, Field(ge=1, le=4)]
    actions: list[Action] = Field(default_factory=list)
    notify: list[str] = Field(default_factory=list)
    escalate_after: Duration | None = None
    #: levels 3 and 4 (rollback, full recovery) run their actions only when this is true
    unattended: bool = False


class ResponseConfig(_Strict):
    """The response sections of a watch file, with their defaults."""

    incidents: IncidentPolicy = IncidentPolicy()
    notify: NotifyConfig = NotifyConfig()
    runbooks: dict[Literal["P0", "P1", "P2", "P3"], list[EscalationLevel]] = Field(
        default_factory=dict
    )

    def runbook(self, severity: Severity) -> list[EscalationLevel]:
        """The escalation levels for an alert of `severity` (empty: notify only)."""
        return list(self.runbooks.get(severity.name, []))  # type: ignore[call-overload]


__all__ = [
    "Action",
    "CommandAction",
    "EscalationLevel",
    "GuardModeAction",
    "IncidentPolicy",
    "NotifyConfig",
    "ResponseConfig",
    "WebhookAction",
]
