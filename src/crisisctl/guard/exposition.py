"""The text of the control surface's documents, written by hand where the libraries would
walk whole structures: Prometheus lines (format 0.0.4, as `prometheus_client.generate_latest`
writes them: labels escaped, values as Go floats) and the compact JSON of a route's figures (as
`json.dumps(..., separators=(",", ":"))` writes them). Used by guard/digest.py; compiled.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Final

from prometheus_client.utils import floatToGoString as _float_to_go

from crisisctl.guard.metrics import (
    CIRCUIT,
    DURATION,
    DURATION_BUCKETS_S,
    IN_FLIGHT,
    REJECTED,
    REQUESTS,
    ROUTE_LIMIT,
    STATUS_CLASSES,
)

#: prometheus_client's number format (Go's float formatting), typed
go_float: Final[Callable[[float], str]] = _float_to_go
LE_LABELS: Final = [f'le="{go_float(b)}",route=' for b in DURATION_BUCKETS_S]


def escape(value: str) -> str:
    """A label value escaped as the Prometheus text format wants it."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def header(name: str, doc: str, kind: str) -> str:
    doc = doc.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {doc}\n# TYPE {name} {kind}\n"


HEADERS: Final = (
    header(REQUESTS[0] + "_total", REQUESTS[1], "counter").encode(),
    header(DURATION[0], DURATION[1], "histogram").encode(),
    header(IN_FLIGHT[0], IN_FLIGHT[1], "gauge").encode(),
    header(REJECTED[0] + "_total", REJECTED[1], "counter").encode(),
    header(CIRCUIT[0], CIRCUIT[1], "gauge").encode(),
)

#: the per-route limit gauge's header (its lines are written by `digest.Digest`)
ROUTE_LIMIT_HEADER: Final = header(ROUTE_LIMIT[0], ROUTE_LIMIT[1], "gauge")


def num(n: int) -> str:
    """`go_float(n)` for a count, without its float round trip when n is small."""
    return f"{n}.0" if 0 <= n < 1_000_000 else go_float(n)


def classes(counts: list[int]) -> dict[str, int]:
    out = {cls: counts[i + 1] for i, cls in enumerate(STATUS_CLASSES)}
    if counts[0]:
        out["unknown"] = counts[0]
    return out


def classes_json(counts: list[int]) -> str:
    """`json.dumps(classes(counts))` (compact), without the encoder."""
    text = (
        f'{{"1xx":{counts[1]},"2xx":{counts[2]},"3xx":{counts[3]},"4xx":{counts[4]},'
        f'"5xx":{counts[5]}'
    )
    return f'{text},"unknown":{counts[0]}}}' if counts[0] else text + "}"


def summary_json(summary: dict[str, float | int]) -> str:
    """`json.dumps(summary)` (compact) of a `window_summary`: its keys are plain names and its
    values finite numbers, written as json writes them (`repr`)."""
    return "{" + ",".join([f'"{key}":{value!r}' for key, value in summary.items()]) + "}"


def counts_json(counts: dict[str, int]) -> str:
    """`json.dumps(counts)` (compact) of a {reason: count} dict."""
    if not counts:
        return "{}"
    return "{" + ",".join([f"{json_key(k)}:{n}" for k, n in counts.items()]) + "}"


_JSON_KEYS: dict[str, str] = {}


def json_key(key: str) -> str:
    text = _JSON_KEYS.get(key)
    if text is None:
        text = json.dumps(key)
        if len(_JSON_KEYS) < 1024:  # (refusal reasons: a handful)
            _JSON_KEYS[key] = text
    return text
