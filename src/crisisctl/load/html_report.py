"""The HTML load report: one self-contained file (inline CSS, inline SVG charts, no script).

`render_html(report)` takes the JSON report (`crisisctl.load.report.build_report`) and draws,
server-side, three charts — latency percentiles (p50/p95/p99) over time, throughput and
failures over time, and the latency percentile spectrum on HdrHistogram's ``1/(1-p)`` axis —
then fills `templates_html/report.html.j2` with them, the threshold table and the figures
(a red banner when the run dropped more than 1 % of its arrivals, `report.dropped_warning`).
Nothing refers to anything outside the file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape

from crisisctl.load.report import dropped_warning

__all__ = ["Line", "line_chart", "nice_ticks", "render_html"]

_TEMPLATES = Path(__file__).resolve().parent / "templates_html"
_W, _H = 760, 260
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 16, 16, 40
COLORS = {"p50": "#2b8a3e", "p95": "#e67700", "p99": "#c92a2a", "rps": "#1c7ed6", "bad": "#c92a2a"}


@dataclass(frozen=True, slots=True)
class Line:
    """One series of a chart."""

    label: str
    color: str
    points: Sequence[tuple[float, float]]


def nice_ticks(high: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least `high` (steps of 1, 2 or 5 × 10^k)."""
    if not (math.isfinite(high) and high > 0):
        return [0.0, 1.0]
    raw = high / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    ticks = [0.0]
    while ticks[-1] < high - 1e-12:
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


def _fmt(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e6 else f"{value:.3g}"


def line_chart(
    lines: Sequence[Line],
    *,
    title: str,
    x_label: str,
    y_label: str,
    x_ticks: Sequence[tuple[float, str]] | None = None,
) -> Markup:
    """An inline SVG line chart (axes, grid, ticks, legend) of `lines`."""
    xs = [x for line in lines for x, _ in line.points]
    ys = [y for line in lines for _, y in line.points]
    x0, x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
    if x1 <= x0:
        x1 = x0 + 1.0
    y_ticks = nice_ticks(max(ys, default=0.0))
    y1 = y_ticks[-1] or 1.0
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM

    def px(x: float) -> float:
        return _LEFT + (x - x0) / (x1 - x0) * plot_w

    def py(y: float) -> float:
        return _TOP + plot_h - y / y1 * plot_h

    parts = [
        f'<svg class="chart" viewBox="0 0 {_W} {_H}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    for tick in y_ticks:
        y = py(tick)
        parts.append(
            f'<line class="grid" x1="{_LEFT}" y1="{y:.1f}" x2="{_W - _RIGHT}" y2="{y:.1f}"/>'
        )
        parts.append(
            f'<text class="tick" x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{_fmt(tick)}</text>"
        )
    if x_ticks is None:
        x_ticks = [(x, _fmt(x)) for x in nice_ticks(x1 - x0) if x0 + x <= x1]
        x_ticks = [(x0 + x, label) for x, label in x_ticks]
    for x, label in x_ticks:
        parts.append(
            f'<text class="tick" x="{px(x):.1f}" y="{_H - _BOTTOM + 16}" text-anchor="middle">'
            f"{escape(label)}</text>"
        )
    parts.append(
        f'<line class="axis" x1="{_LEFT}" y1="{_TOP + plot_h}" x2="{_W - _RIGHT}" '
        f'y2="{_TOP + plot_h}"/>'
        f'<line class="axis" x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{_TOP + plot_h}"/>'
        f'<text class="label" x="{_LEFT + plot_w / 2:.0f}" y="{_H - 6}" text-anchor="middle">'
        f"{escape(x_label)}</text>"
        f'<text class="label" x="14" y="{_TOP + plot_h / 2:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {_TOP + plot_h / 2:.0f})">{escape(y_label)}</text>'
    )
    for i, line in enumerate(lines):
        if line.points:
            path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in line.points)
            parts.append(
                f'<polyline fill="none" stroke="{line.color}" stroke-width="1.8" points="{path}">'
                f"<title>{escape(line.label)}</title></polyline>"
            )
        lx = _LEFT + 12 + i * 110
        parts.append(
            f'<rect x="{lx}" y="{_TOP + 2}" width="12" height="4" fill="{line.color}"/>'
            f'<text class="legend" x="{lx + 16}" y="{_TOP + 8}">{escape(line.label)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def _spectrum_x(percentile: float) -> float:
    """HdrHistogram's percentile axis: log10(1 / (1 - p)), capped at the 99.999th."""
    return math.log10(1.0 / max(1.0 - percentile / 100.0, 1e-5))


def _charts(report: dict[str, Any]) -> list[Markup]:
    series = report.get("per_second") or []

    def points(
        key: str, fn: Callable[[dict[str, Any]], float] | None = None
    ) -> list[tuple[float, float]]:
        return [(float(p["second"]), float(fn(p) if fn else p[key])) for p in series]

    latency = line_chart(
        [Line(k, COLORS[k], points(f"{k}_ms")) for k in ("p50", "p95", "p99")],
        title="Latency percentiles over time", x_label="second of the run", y_label="ms",
    )  # fmt: skip
    throughput = line_chart(
        [
            Line("requests/s", COLORS["rps"], points("rps", lambda p: p.get("rps", p["requests"]))),
            Line(
                "failures/s", COLORS["bad"],
                points("errors", lambda p: p["errors"] + p.get("unexpected_status", 0)),
            ),
        ],
        title="Throughput and failures over time", x_label="second of the run",
        y_label="per second",
    )  # fmt: skip
    spectrum = report.get("latency_spectrum_ms") or []
    ticks = [(_spectrum_x(p), f"{p:g}%") for p in (0, 50, 90, 99, 99.9, 99.99, 99.999)]
    spectrum_chart = line_chart(
        [
            Line(
                "latency", COLORS["p99"],
                [(_spectrum_x(s["percentile"]), s["latency_ms"]) for s in spectrum],
            )
        ],
        title="Latency by percentile", x_label="percentile", y_label="ms", x_ticks=ticks,
    )  # fmt: skip
    return [latency, throughput, spectrum_chart]


def _number(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _threshold_value(row: dict[str, Any]) -> str:
    value = row.get("value")
    if value is None:
        return "no data"
    unit = row.get("unit")
    if unit == "fraction":
        return f"{value * 100:.3g} %"
    if unit == "ms":
        return f"{value:,.2f} ms"
    if unit == "req/s":
        return f"{value:,.1f}/s"
    return f"{value:,.0f}"


def render_html(report: dict[str, Any]) -> str:
    """The whole HTML document for a JSON load report."""
    env = Environment(
        loader=FileSystemLoader(_TEMPLATES),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _number
    env.filters["threshold_value"] = _threshold_value
    template = env.get_template("report.html.j2")
    config = report.get("config") or {}
    return template.render(
        r=report,
        charts=_charts(report),
        config_json=json.dumps(config, indent=2, sort_keys=True),
        environment=report.get("environment") or {},
        dropped_warning=dropped_warning(report),
    )
