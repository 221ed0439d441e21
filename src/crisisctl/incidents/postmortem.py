"""Post-mortems generated from stored incident data only, as Markdown, HTML or JSON.

`build_postmortem()` turns an `IncidentDetail` into one JSON-able document with the sections of
the seeds' post-mortem generator and incident report template, in the order of the Google SRE
post-mortem: summary, impact (with before/after figures and improvement), detection, response
and recovery (MTTx), timeline, root causes, resolution steps, validation results, lessons,
prevention measures, action items. It is deterministic (no clock: "as of" is the latest stored
change) and invents nothing: missing data is stated as missing. `render()` formats that
document with the Jinja templates in ``templates/``; the HTML file is self-contained (inline
CSS, an inline SVG latency chart when load or triage reports are attached).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any, Final

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from crisisctl.incidents.chart import latency_series, render_svg
from crisisctl.incidents.lifecycle import (
    ESCALATION_LEVELS,
    ESCALATION_STEPS,
    EVENT_ACTION,
    EVENT_ESCALATION,
    EVENT_GUARD_MODE,
    EVENT_LOAD_REPORT,
    EVENT_SEVERITY,
    EVENT_TRIAGE,
    EVENT_VALIDATION,
    LESSON_KINDS,
    LESSON_TITLES,
    MTTX_DEFINITIONS,
    format_duration,
)
from crisisctl.incidents.records import EventRecord, IncidentDetail, iso, ms
from crisisctl.incidents.reports import compare_load, fmt_ms, fmt_pct, measured_at

FORMATS: Final = ("md", "html", "json")
MISSING: Final = "not recorded"


def _before_after(events: list[EventRecord]) -> tuple[EventRecord, EventRecord] | None:
    """The load reports to compare: the last labelled before/after, else the first and last."""
    loads = sorted(
        (e for e in events if e.kind == EVENT_LOAD_REPORT),
        key=lambda e: (measured_at(e.details, e.at), e.id),
    )
    before = [e for e in loads if e.details.get("label") == "before"]
    after = [e for e in loads if e.details.get("label") == "after"]
    if before and after:
        return before[-1], after[-1]
    if len(loads) >= 2:
        return loads[0], loads[-1]
    return None


def _impact(detail: IncidentDetail, events: list[EventRecord]) -> dict[str, Any]:
    impact = detail.incident.impact.to_dict()
    pair = _before_after(events)
    comparison: dict[str, Any] | None = None
    if pair is not None:
        before, after = pair
        comparison = {
            "before_event": before.id,
            "after_event": after.id,
            "chosen_by": "label" if before.details.get("label") == "before" else "time order",
            "changes": [c.to_dict() for c in compare_load(before.details, after.details)],
        }
    return {**impact, "before_after": comparison}


def _summary(detail: IncidentDetail) -> str:
    inc = detail.incident
    if inc.summary:
        return inc.summary
    times = inc.mttx
    where = f" on {inc.service}" if inc.service else ""
    text = (
        f"{inc.title}: a {inc.severity.label}{where} that started at {iso(inc.started_at)} "
        f"and was detected after {format_duration(times['time_to_detect'])}."
    )
    if inc.mitigated_at is not None:
        text += f" It was mitigated {format_duration(times['time_to_mitigate'])} after it started"
        text += (
            f" and resolved after {format_duration(times['time_to_resolve'])}."
            if inc.resolved_at is not None
            else " and is not resolved yet."
        )
    else:
        text += " Mitigation is not recorded yet."
    return text


def _validation(events: list[EventRecord]) -> list[dict[str, Any]]:
    return [
        {"event": e.id, "at": iso(e.at), "text": e.text, **e.details}
        for e in events
        if e.kind in (EVENT_VALIDATION, EVENT_TRIAGE)
    ]


def build_postmortem(detail: IncidentDetail) -> dict[str, Any]:
    """The post-mortem document (JSON-able; see the module docstring for the sections)."""
    inc = detail.incident
    events = list(detail.events)
    times = inc.mttx
    as_of = max([inc.updated_at, *(e.at for e in events)])
    escalations = [e for e in events if e.kind == EVENT_ESCALATION]
    detection_events = [e for e in events if e.kind in ("opened", "alert", EVENT_TRIAGE)]
    return {
        "report": "postmortem",
        "incident_id": inc.id,
        "title": inc.title,
        "as_of": iso(as_of),
        "incident": inc.to_dict(),
        "summary": _summary(detail),
        "impact": _impact(detail, events),
        "detection": {
            "started_at": iso(inc.started_at),
            "detected_at": iso(inc.detected_at),
            "time_to_detect_ms": ms(times["time_to_detect"]),
            "signals": [
                {"at": iso(e.at), "source": e.source, "text": e.text} for e in detection_events
            ],
        },
        "response": {
            "acknowledged_at": iso(inc.acknowledged_at),
            "mitigated_at": iso(inc.mitigated_at),
            "resolved_at": iso(inc.resolved_at),
            "closed_at": iso(inc.closed_at),
            "mttx": [
                {
                    "name": name,
                    "definition": MTTX_DEFINITIONS[name],
                    "ms": ms(value),
                    "text": format_duration(value),
                }
                for name, value in times.items()
            ],
            "escalation_level": inc.escalation_level,
            "escalation": ESCALATION_LEVELS[inc.escalation_level],
            "escalation_steps": ESCALATION_STEPS[inc.escalation_level],
            "escalations": [{"at": iso(e.at), "text": e.text} for e in escalations],
            "severity_changes": [
                {"at": iso(e.at), "text": e.text} for e in events if e.kind == EVENT_SEVERITY
            ],
            "roles": {"commander": inc.commander, "scribe": inc.scribe, "comms": inc.comms},
        },
        "timeline": [e.to_dict() for e in events],
        "root_causes": [c.to_dict() for c in detail.root_causes],
        "resolution_steps": [
            {"at": iso(e.at), "kind": e.kind, "author": e.author, "text": e.text}
            for e in events
            if e.kind in (EVENT_ACTION, EVENT_GUARD_MODE)
        ],
        "validation": _validation(events),
        "lessons": {
            kind: [lesson.text for lesson in detail.lessons if lesson.kind == kind]
            for kind in LESSON_KINDS
        },
        "prevention_measures": [a.to_dict() for a in detail.actions if a.kind == "prevent"],
        "action_items": [a.to_dict() for a in detail.actions],
        "chart": latency_series(events, inc),
    }


# -- rendering ---------------------------------------------------------------------------------
def format_timestamp(value: str | None) -> str:
    """``2025-11-23 13:19:47 UTC`` from an ISO timestamp; "not recorded" for None."""
    if value is None:
        return MISSING
    return datetime.fromisoformat(value.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M:%S UTC")


def _dur_ms(value: float | None) -> str:
    return MISSING if value is None else format_duration(timedelta(milliseconds=value))


def _num(value: float | int | None, fmt: str = "{:,}") -> str:
    return MISSING if value is None else fmt.format(value)


def _cell(value: Any) -> str:
    """Markdown table cell text: no pipes or line breaks."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _pct_signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1f} %"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}×"


def _figure(metric: str, value: float | None) -> str:
    if metric.endswith("_ms"):
        return fmt_ms(value)
    if metric == "error_rate":
        return fmt_pct(value)
    return "n/a" if value is None else f"{value:,.1f}"


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("crisisctl.incidents", "templates"),
        autoescape=select_autoescape(["html", "html.j2"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        dt=format_timestamp,
        dur=_dur_ms,
        ms=lambda v: MISSING if v is None else fmt_ms(v),
        pct=lambda v: MISSING if v is None else fmt_pct(v),
        num=_num,
        cell=_cell,
        signed=_pct_signed,
        ratio=_ratio,
        figure=_figure,
    )
    env.globals.update(MISSING=MISSING, LESSON_TITLES=LESSON_TITLES)
    return env


def render(document: dict[str, Any], fmt: str) -> str:
    """The post-mortem `document` as ``md``, ``html`` or ``json`` text."""
    if fmt == "json":
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if fmt not in FORMATS:
        raise ValueError(f"unknown post-mortem format {fmt!r}: use md, html or json")
    template = _environment().get_template(f"postmortem.{fmt}.j2")
    svg = render_svg(document["chart"]) if fmt == "html" else ""
    return template.render(pm=document, chart_svg=svg)
