"""Post-mortems and notifications rendered from fixed incident records: golden Markdown files,
the HTML's structure (sections, inline SVG chart, no external resource) and the JSON's shape.

Regenerate the golden files after an intended change with CRISISCTL_UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from crisisctl.incidents.lifecycle import Status
from crisisctl.incidents.notify import compose
from crisisctl.incidents.postmortem import build_postmortem, render
from crisisctl.incidents.records import (
    ActionItemRecord,
    EventRecord,
    Impact,
    IncidentDetail,
    IncidentRecord,
    LessonRecord,
    RootCauseRecord,
)
from crisisctl.incidents.reports import summarise_report
from crisisctl.severity import Severity

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
T0 = datetime(2025, 11, 23, 10, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def _incident(**over: Any) -> IncidentRecord:
    fields: dict[str, Any] = dict(
        id=7, title="Checkout p95 at 4 s", service="checkout", severity=Severity.P0,
        status=Status.RESOLVED, escalation_level=2, dedup_key=None, summary=None,
        commander="bob", scribe="dana", comms="erin", started_at=at(0), detected_at=at(7.5),
        acknowledged_at=at(10), mitigated_at=at(40), resolved_at=at(90), closed_at=None,
        created_at=at(7.5), updated_at=at(95),
        impact=Impact(peak_latency_ms=4100.0, baseline_latency_ms=180.0, error_rate=0.12,
                      affected_requests=120_000, affected_users=5400, downtime_ms=720_000.0),
    )  # fmt: skip
    fields.update(over)
    return IncidentRecord(**fields)


def _load(p95: float, rps: float, label: str) -> dict[str, Any]:
    report = {
        "report": "load", "url": "http://127.0.0.1:8000/", "requests": 3000,
        "requests_per_second": rps, "error_total": 30 if label == "before" else 0,
        "status_counts": {"200": 2970}, "started_at": "",
        "latency_ms": {"p50": p95 / 3, "p95": p95, "p99": p95 * 1.5, "max": p95 * 2},
        "per_second": [{"second": s, "requests": int(rps), "errors": 0, "p50_ms": p95 / 3,
                        "p95_ms": p95 + s, "p99_ms": p95 * 1.5 + s} for s in range(5)],
    }  # fmt: skip
    return summarise_report(report, label=label)[2]


def _event(n: int, minutes: float, kind: str, text: str, **details: Any) -> EventRecord:
    return EventRecord(n, 7, kind, text, details, "cli", "alice", at(minutes), n == 3)


def full_detail() -> IncidentDetail:
    before, after = _load(3900.0, 80.0, "before"), _load(210.0, 160.0, "after")
    events = (
        _event(1, 7.5, "opened", "incident opened: Checkout p95 at 4 s (P1, urgent (4-24 hours))"),
        _event(2, 8, "triage", "triage of http://127.0.0.1:8000/: P1 — p95 3900 ms",
               report="triage", latency_ms={"p50": 900.0, "p95": 3900.0, "p99": 5000.0}),
        _event(3, 10, "status_change", "status detected → investigating"),
        _event(4, 12, "load_report", "load report (before)", **before),
        _event(5, 15, "guard_mode", "guard mode normal → emergency"),
        _event(6, 20, "action", "raised the DB pool from 10 to 40 connections"),
        _event(7, 25, "severity_change", "severity raised P1 → P0: errors 12 %"),
        _event(8, 30, "escalation", "escalation level 1 → 2 (manual intervention)"),
        _event(9, 40, "status_change", "status investigating → mitigated"),
        _event(10, 85, "load_report", "load report (after)", **after),
        _event(11, 88, "validation", "validation: PASSED, 7/7 checks passed", report="validate"),
        _event(12, 90, "status_change", "status mitigated → resolved"),
    )  # fmt: skip
    return IncidentDetail(
        incident=_incident(),
        events=events,
        actions=(
            ActionItemRecord(
                1,
                7,
                "Alert on pool saturation",
                "prevent",
                "carol",
                date(2025, 12, 15),
                "high",
                "open",
                at(95),
                at(95),
                None,
            ),
            ActionItemRecord(
                2,
                7,
                "Write the pool runbook",
                "process",
                None,
                None,
                "medium",
                "done",
                at(95),
                at(96),
                at(96),
            ),
        ),
        root_causes=(
            RootCauseRecord(
                1,
                "Resource Management",
                "pool of 10 exhausted by report queries",
                ("pool wait p95 3.8 s", "40 report queries in flight"),
                "bob",
                at(92),
            ),
        ),
        lessons=(
            LessonRecord(1, "went_well", "the guard shed load within seconds", "bob", at(93)),
            LessonRecord(2, "got_lucky", "the spike hit outside business hours", "dana", at(93)),
        ),
    )


def empty_detail() -> IncidentDetail:
    incident = _incident(
        status=Status.DETECTED, service=None, commander=None, scribe=None, comms=None,
        acknowledged_at=None, mitigated_at=None, resolved_at=None, updated_at=at(7.5),
        impact=Impact(), started_at=at(7.5),
    )  # fmt: skip
    return IncidentDetail(incident=incident, events=(_event(1, 7.5, "opened", "incident opened"),))


@pytest.mark.parametrize("name", ["full", "empty"])
def test_markdown_golden(name: str) -> None:
    detail = full_detail() if name == "full" else empty_detail()
    text = render(build_postmortem(detail), "md")
    path = GOLDEN / f"postmortem_{name}.md"
    if os.environ.get("CRISISCTL_UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")
    assert "{{" not in text and "{%" not in text
    assert render(build_postmortem(detail), "md") == text  # deterministic


def test_markdown_states_missing_data() -> None:
    text = render(build_postmortem(empty_detail()), "md")
    for line in ("Root causes: not recorded", "Before/after figures: not recorded",
                 "Validation results: not recorded", "| Peak latency | not recorded |",
                 "| time to resolve | resolved − started | not recorded |"):  # fmt: skip
        assert line in text


class _Structure(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.ids: list[str] = []
        self.external: list[str] = []
        self.classes: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for key, value in attrs:
            if key == "id" and value:
                self.ids.append(value)
            if key == "class" and value:
                self.classes.append(value)
            if key in ("src", "href") or (tag == "link"):
                self.external.append(f"{tag} {key}={value}")


def test_html_structure_and_chart() -> None:
    html = render(build_postmortem(full_detail()), "html")
    parser = _Structure()
    parser.feed(html)
    assert parser.ids[:1] == ["summary"]
    sections = ["impact", "detection", "response", "timeline", "root-causes", "resolution"]
    sections += ["validation", "lessons", "prevention", "action-items", "latency-chart"]
    assert set(sections) <= set(parser.ids)
    assert parser.external == [] and "script" not in parser.tags
    assert parser.tags.count("svg") == 1
    # one polyline per percentile for each of the two load reports, a dot per triage percentile
    assert parser.tags.count("polyline") == 6 and parser.tags.count("circle") == 3
    assert sum(c == "milestone" for c in parser.classes) == 4
    assert "&lt;" not in html.split("<svg", 1)[1].split("</svg>", 1)[0]
    no_chart = render(build_postmortem(empty_detail()), "html")
    assert "<svg" not in no_chart and "Latency chart: no load or triage reports" in no_chart


def test_html_escapes_user_text() -> None:
    detail = full_detail()
    evil = IncidentDetail(incident=_incident(title="<script>alert(1)</script>"), events=())
    html = render(build_postmortem(evil), "html")
    assert "<script>alert" not in html and "&lt;script&gt;" in html
    assert detail.incident.title in render(build_postmortem(detail), "html")


def test_json_shape() -> None:
    doc = json.loads(render(build_postmortem(full_detail()), "json"))
    assert doc["report"] == "postmortem" and doc["incident_id"] == 7
    assert doc["as_of"] == "2025-11-23T11:35:00Z"
    mttx = {m["name"]: m["ms"] for m in doc["response"]["mttx"]}
    assert mttx == {
        "time_to_detect": 450_000.0,
        "time_to_acknowledge": 150_000.0,
        "time_to_mitigate": 2_400_000.0,
        "time_to_resolve": 5_400_000.0,
    }
    changes = {c["metric"]: c for c in doc["impact"]["before_after"]["changes"]}
    assert changes["p95_ms"]["improvement_percent"] == pytest.approx((3900 - 210) / 3900 * 100)
    assert changes["requests_per_second"]["ratio"] == pytest.approx(2.0)
    assert changes["error_rate"]["improvement_percent"] == pytest.approx(100.0)
    assert doc["impact"]["before_after"]["chosen_by"] == "label"
    assert [a["title"] for a in doc["prevention_measures"]] == ["Alert on pool saturation"]
    assert doc["lessons"]["went_wrong"] == []
    assert len(doc["chart"]["series"]) == 3 and len(doc["timeline"]) == 12


def test_notification_templates() -> None:
    internal = compose(full_detail(), "internal")
    assert internal.title == "[P0] incident #7: Checkout p95 at 4 s (resolved)"
    assert "🚨 PERFORMANCE EMERGENCY 🚨" in internal.body
    assert "Auto-recovery (guard): guard mode normal → emergency" in internal.body
    assert "- raised the DB pool from 10 to 40 connections" in internal.body
    assert "Latency: peak 4100 ms (baseline 180 ms, 22.8× degraded)" in internal.body
    stakeholder = compose(empty_detail(), "stakeholder")
    assert "We are responding to a performance incident" in stakeholder.body
    assert "Impact: being assessed (no figures recorded yet)" in stakeholder.body
    assert "{{" not in internal.body + stakeholder.body
