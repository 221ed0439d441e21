"""Communication about an incident: the seeds' internal alert and stakeholder update, via apprise.

`compose()` renders a template (``internal`` for the responders' chat, ``stakeholder`` for the
people affected) from the incident's stored data into a title and a body; `deliver()` sends it to
apprise URLs (``slack://…``, ``mailto://…``, ``json://host/path`` webhooks, 100+ services). The
caller prints it instead when no URL is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from jinja2 import Environment, PackageLoader, StrictUndefined

from crisisctl.incidents.db import StoreError
from crisisctl.incidents.lifecycle import EVENT_ACTION, EVENT_GUARD_MODE, format_duration
from crisisctl.incidents.postmortem import format_timestamp
from crisisctl.incidents.records import IncidentDetail
from crisisctl.incidents.reports import fmt_ms, fmt_pct

TEMPLATES: Final = ("internal", "stakeholder")
MISSING: Final = "not recorded"
#: how many of the latest "action" events the internal alert lists
MAX_ACTIONS: Final = 5


@dataclass(frozen=True, slots=True)
class Message:
    """A rendered notification."""

    template: str
    title: str
    body: str

    def to_dict(self) -> dict[str, Any]:
        return {"template": self.template, "title": self.title, "body": self.body}


def _impact_sentence(detail: IncidentDetail) -> str:
    imp = detail.incident.impact
    parts = []
    if imp.peak_latency_ms is not None:
        factor = imp.factor
        parts.append(
            f"response times up to {fmt_ms(imp.peak_latency_ms)}"
            + (f" ({factor:.1f}× normal)" if factor is not None else "")
        )
    if imp.error_rate is not None:
        parts.append(f"{fmt_pct(imp.error_rate)} of requests failing")
    if imp.affected_users is not None:
        parts.append(f"{imp.affected_users:,} users affected")
    return ", ".join(parts) if parts else "being assessed (no figures recorded yet)"


def _context(detail: IncidentDetail) -> dict[str, Any]:
    inc = detail.incident
    events = list(detail.events)
    actions = [e.text for e in events if e.kind == EVENT_ACTION][-MAX_ACTIONS:]
    guard = [e for e in events if e.kind == EVENT_GUARD_MODE]
    measurements = [e for e in events if e.kind in ("load_report", "triage", "validation")]
    end = inc.resolved_at or (events[-1].at if events else inc.updated_at)
    return {
        "incident": inc.to_dict(),
        "severity_label": inc.severity.label,
        "business_impact": inc.severity.business_impact,
        "actions": actions,
        "guard_mode": guard[-1].text if guard else None,
        "latest_measurement": measurements[-1].text if measurements else None,
        "duration": format_duration(max(end - inc.started_at, timedelta(0))),
        "impact": _impact_sentence(detail),
    }


def compose(detail: IncidentDetail, template: str) -> Message:
    """Render the `template` ("internal" or "stakeholder") for this incident."""
    if template not in TEMPLATES:
        raise StoreError(f"unknown template {template!r}: use internal or stakeholder.")
    env = Environment(
        loader=PackageLoader("crisisctl.incidents", "templates"),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters.update(
        dt=format_timestamp,
        ms=lambda v: MISSING if v is None else fmt_ms(v),
        pct=lambda v: MISSING if v is None else fmt_pct(v),
    )
    env.globals["MISSING"] = MISSING
    body = env.get_template(f"notify_{template}.txt.j2").render(n=_context(detail)).strip() + "\n"
    inc = detail.incident
    if template == "internal":
        title = f"[{inc.severity.name}] incident #{inc.id}: {inc.title} ({inc.status})"
    else:
        title = f"Performance incident #{inc.id}: {inc.title} — {inc.status}"
    return Message(template, title, body)


def deliver(message: Message, urls: list[str]) -> None:
    """Send `message` to every apprise URL; StoreError naming what could not be used or sent."""
    import apprise

    sender = apprise.Apprise()
    for url in urls:
        if not sender.add(url):
            scheme = url.split("://", 1)[0] if "://" in url else url[:20]
            raise StoreError(
                f"apprise cannot use the notification URL with scheme {scheme!r}: "
                "check it against https://github.com/caronc/apprise/wiki."
            )
    if not sender.notify(title=message.title, body=message.body):
        raise StoreError(
            f"the notification could not be delivered to all {len(urls)} target(s): "
            "check the URLs and that the services are reachable."
        )
