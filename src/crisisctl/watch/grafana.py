"""A Grafana dashboard of the guarded services, over the guard's own families and the
generated SLO records.

`dashboard()` is the JSON model (schemaVersion 39, importable as is, or provisioned): a
``datasource`` variable (any Prometheus), ``job``, ``service`` and ``instance`` variables
(from ``crisisctl_http_requests_total``; the SLO panels, grouped by service, ignore ``job``
and ``instance``), and one panel per figure: request rate, error ratio (5xx),
latency p50/p95/p99 (``histogram_quantile`` over ``crisisctl_http_request_duration_seconds_
bucket``), concurrency limit, in flight and queued, requests shed by reason, the guard's mode,
the SLOs' burn rates (``crisisctl:slo_burn_rate``) and error budget left
(``crisisctl:slo_error_budget_remaining``). `concrete_queries` gives every panel's PromQL with
the dashboard variables replaced, as Prometheus itself would be asked.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["SUBSTITUTIONS", "UID", "concrete_queries", "dashboard", "dashboard_json"]

UID: Final = "crisisctl-guards"
_DS: Final = {"type": "prometheus", "uid": "${datasource}"}
_SEL: Final = 'job=~"$job",service=~"$service",instance=~"$instance"'
#: the dashboard variables as a plain query reads them (every service, every instance)
SUBSTITUTIONS: Final = {
    "$__rate_interval": "1m",
    "$job": ".*",
    "$service": ".*",
    "$instance": ".*",
}


def _rate(family: str, extra: str = "", by: str = "service, instance") -> str:
    selector = f"{{{_SEL}{',' + extra if extra else ''}}}"
    return f"sum by ({by}) (rate({family}{selector}[$__rate_interval]))"


def _quantile(q: str) -> str:
    return (
        f"histogram_quantile({q}, "
        + _rate("crisisctl_http_request_duration_seconds_bucket", by="le, service")
        + ")"
    )


#: (title, panel type, unit, [(expr, legend)])
_PANELS: Final[list[tuple[str, str, str, list[tuple[str, str]]]]] = [
    (
        "Request rate",
        "timeseries",
        "reqps",
        [(_rate("crisisctl_http_requests_total"), "{{service}} {{instance}}")],
    ),
    (
        "Error ratio (5xx)",
        "timeseries",
        "percentunit",
        [
            (
                _rate("crisisctl_http_requests_total", 'status_class="5xx"', "service")
                + "\n/ "
                + _rate("crisisctl_http_requests_total", by="service"),
                "{{service}}",
            )
        ],
    ),
    (
        "Latency p50 / p95 / p99",
        "timeseries",
        "s",
        [(_quantile(q), f"{{{{service}}}} p{q[2:]}") for q in ("0.5", "0.95", "0.99")],
    ),
    (
        "Concurrency limit",
        "timeseries",
        "short",
        [(f"crisisctl_guard_concurrency_limit{{{_SEL}}}", "{{service}} {{instance}}")],
    ),
    (
        "In flight and queued",
        "timeseries",
        "short",
        [
            (f"crisisctl_guard_in_flight{{{_SEL}}}", "in flight {{service}} {{instance}}"),
            (f"crisisctl_guard_queue_length{{{_SEL}}}", "queued {{service}} {{instance}}"),
        ],
    ),
    (
        "Shed by reason",
        "timeseries",
        "reqps",
        [(_rate("crisisctl_guard_rejected_total", by="service, reason"), "{{service}} {{reason}}")],
    ),
    (
        "Mode",
        "state-timeline",
        "short",
        [(f"crisisctl_guard_mode{{{_SEL}}} == 1", "{{service}} {{instance}} {{mode}}")],
    ),
    (
        "SLO burn rate",
        "timeseries",
        "short",
        [
            (
                'crisisctl:slo_burn_rate{service=~"$service"}',
                "{{service}} {{crisisctl_rule}} {{window}}",
            )
        ],
    ),
    (
        "Error budget left",
        "stat",
        "percentunit",
        [
            (
                'crisisctl:slo_error_budget_remaining{service=~"$service"}',
                "{{service}} {{crisisctl_rule}}",
            )
        ],
    ),
]


def _variable(name: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": name,
        "type": "query",
        "datasource": _DS,
        "definition": query,
        "query": {"query": query, "refId": f"{name}-variable"},
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": "All", "value": "$__all"},
        "sort": 1,
    }


def dashboard() -> dict[str, Any]:
    """The dashboard's JSON model."""
    panels = []
    for index, (title, kind, unit, queries) in enumerate(_PANELS):
        panels.append(
            {
                "id": index + 1,
                "type": kind,
                "title": title,
                "datasource": _DS,
                "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "options": {},
                "targets": [
                    {
                        "refId": chr(ord("A") + i),
                        "datasource": _DS,
                        "expr": expr,
                        "legendFormat": legend,
                    }
                    for i, (expr, legend) in enumerate(queries)
                ],
            }
        )
    return {
        "uid": UID,
        "title": "crisisctl: guarded services",
        "tags": ["crisisctl"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "refresh": 1,
                },
                _variable("job", "label_values(crisisctl_http_requests_total, job)"),
                _variable(
                    "service", 'label_values(crisisctl_http_requests_total{job=~"$job"}, service)'
                ),
                _variable(
                    "instance",
                    'label_values(crisisctl_http_requests_total{job=~"$job",service=~"$service"}, '
                    "instance)",
                ),
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def dashboard_json() -> str:
    """The dashboard as the JSON text Grafana imports."""
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def concrete_queries(
    model: Mapping[str, Any], substitutions: Mapping[str, str] = SUBSTITUTIONS
) -> list[tuple[int, str]]:
    """(panel id, PromQL) of every target, with the dashboard variables replaced."""
    out = []
    for panel in model.get("panels", []):
        for target in panel.get("targets", []):
            expr = str(target["expr"])
            for variable, value in substitutions.items():
                expr = expr.replace(variable, value)
            out.append((int(panel["id"]), expr))
    return out
