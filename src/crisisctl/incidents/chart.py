"""The post-mortem's latency chart: data points from attached reports and an inline SVG.

`latency_series()` collects, in time order, the p50/p95/p99 latency of every attached load report
(its per-second series, placed at the report's measurement time) and triage report (one point).
`render_svg()` draws them with the incident's milestones as an inline SVG (no script, no external
resource): one line per load report and percentile, a dot per triage, dashed milestone markers.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any, Final

from crisisctl.incidents.lifecycle import EVENT_LOAD_REPORT, EVENT_TRIAGE
from crisisctl.incidents.records import EventRecord, IncidentRecord, iso
from crisisctl.incidents.reports import measured_at

WIDTH: Final = 760
HEIGHT: Final = 300
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 16, 28, 44
_COLOURS: Final = {"p50_ms": "#2b8a3e", "p95_ms": "#e8590c", "p99_ms": "#c92a2a"}
_MILESTONES: Final = ("started_at", "detected_at", "mitigated_at", "resolved_at")


def latency_series(events: list[EventRecord], incident: IncidentRecord) -> dict[str, Any]:
    """{"series": [{event, kind, label, points: [{at, p50_ms, p95_ms, p99_ms}]}], "milestones"}."""
    series: list[dict[str, Any]] = []
    for event in events:
        start = measured_at(event.details, event.at)
        if event.kind == EVENT_LOAD_REPORT:
            points = [
                {
                    "at": iso(start + timedelta(seconds=float(p.get("t_s", 0.0)))),
                    **{k: p[k] for k in _COLOURS if isinstance(p.get(k), int | float)},
                }
                for p in event.details.get("series") or []
                if isinstance(p, dict)
            ]
            if not points:  # an old report without a series: its overall percentiles
                lat = event.details.get("latency_ms") or {}
                points = [{"at": iso(start), **_percentiles(lat)}]
        elif event.kind == EVENT_TRIAGE:
            points = [{"at": iso(start), **_percentiles(event.details.get("latency_ms") or {})}]
        else:
            continue
        points = [p for p in points if len(p) > 1]
        if points:
            label = event.details.get("label") or ""
            series.append({"event": event.id, "kind": event.kind, "label": label, "points": points})
    milestones = [
        {"name": name.removesuffix("_at"), "at": iso(getattr(incident, name))}
        for name in _MILESTONES
        if getattr(incident, name) is not None
    ]
    return {"series": series, "milestones": milestones}


def _percentiles(latency: dict[str, Any]) -> dict[str, float]:
    return {
        f"{k}_ms": float(latency[k])
        for k in ("p50", "p95", "p99")
        if isinstance(latency.get(k), int | float)
    }


def _time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _nice_step(span: float, ticks: int = 5) -> float:
    raw = span / ticks
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def render_svg(chart: dict[str, Any]) -> str:
    """The chart as an inline ``<svg>`` element; empty string when there is nothing to draw."""
    series = chart.get("series") or []
    if not series:
        return ""
    stamps = [_time(p["at"]) for s in series for p in s["points"]]
    stamps += [_time(m["at"]) for m in chart.get("milestones") or []]
    t0, t1 = min(stamps), max(stamps)
    if t1 - t0 < 1.0:
        t0, t1 = t0 - 30.0, t1 + 30.0
    top = float(max(p.get(k, 0.0) for s in series for p in s["points"] for k in _COLOURS))
    step = _nice_step(max(top, 1e-3) * 1.05)
    y_max = step * math.ceil(max(top, 1e-3) * 1.05 / step)
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM

    def x(t: float) -> float:
        return _LEFT + (t - t0) / (t1 - t0) * plot_w

    def y(v: float) -> float:
        return _TOP + plot_h - v / y_max * plot_h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{WIDTH}" '
        f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        'aria-label="latency across the incident">',
        f'<rect x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" fill="#fafafa" '
        'stroke="#ccc"/>',
    ]
    tick = 0.0
    while tick <= y_max + step / 2:
        yy = y(tick)
        out.append(
            f'<line x1="{_LEFT}" y1="{yy:.1f}" x2="{WIDTH - _RIGHT}" y2="{yy:.1f}" '
            'stroke="#e5e5e5"/>'
            f'<text x="{_LEFT - 6}" y="{yy + 4:.1f}" text-anchor="end" font-size="11">'
            f"{tick:g}</text>"
        )
        tick += step
    out.append(
        f'<text x="14" y="{_TOP + plot_h / 2:.1f}" font-size="11" '
        f'transform="rotate(-90 14 {_TOP + plot_h / 2:.1f})" text-anchor="middle">latency ms</text>'
    )
    for index, milestone in enumerate(chart.get("milestones") or []):
        xx = x(_time(milestone["at"]))
        out.append(
            f'<line class="milestone" x1="{xx:.1f}" y1="{_TOP}" x2="{xx:.1f}" '
            f'y2="{_TOP + plot_h}" stroke="#555" stroke-dasharray="4 3"/>'
            f'<text x="{xx + 3:.1f}" y="{_TOP - 6 - (index % 2) * 10 + 10:.1f}" font-size="10">'
            f"{escape(milestone['name'])}</text>"
        )
    for s in series:
        for key, colour in _COLOURS.items():
            pts = [(x(_time(p["at"])), y(p[key])) for p in s["points"] if key in p]
            if len(pts) > 1:
                path = " ".join(f"{px:.1f},{py:.1f}" for px, py in pts)
                out.append(
                    f'<polyline class="series {key}" fill="none" stroke="{colour}" '
                    f'stroke-width="1.5" points="{path}"/>'
                )
            else:
                out.extend(
                    f'<circle class="point {key}" cx="{px:.1f}" cy="{py:.1f}" r="3.5" '
                    f'fill="{colour}"/>'
                    for px, py in pts
                )
    first = datetime.fromtimestamp(t0, UTC).strftime("%H:%M:%S")
    last = datetime.fromtimestamp(t1, UTC).strftime("%H:%M:%S")
    out.append(
        f'<text x="{_LEFT}" y="{HEIGHT - 24}" font-size="11">{first} UTC</text>'
        f'<text x="{WIDTH - _RIGHT}" y="{HEIGHT - 24}" font-size="11" text-anchor="end">'
        f"{last} UTC</text>"
    )
    legend_x = _LEFT
    for key, colour in _COLOURS.items():
        out.append(
            f'<rect x="{legend_x}" y="{HEIGHT - 14}" width="12" height="4" fill="{colour}"/>'
            f'<text x="{legend_x + 16}" y="{HEIGHT - 9}" font-size="11">'
            f"{key.removesuffix('_ms')}</text>"
        )
        legend_x += 60
    out.append("</svg>")
    return "\n".join(out)
