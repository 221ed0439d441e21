"""The pure logic of distributed load: what a worker is sent, what its share is, what its
clock says, and what a lost worker did not send.

- `worker_scenario` is the scenario a worker receives: CSV-fed variables inlined as value lists
  (a worker on another host has none of the coordinator's files), and nothing the worker does not
  need to send its requests (the scenario's name and its thresholds: the coordinator judges).
- `Share` is worker *i* of *N*'s part of the load, the same sharding as ``--processes``
  (`crisisctl.load.plan.share`): the open model's arrivals i, i+N, … of the one schedule
  (the total rate is exact, arrivals interleave), the closed model's users split.
- Clocks: hosts share no ``time.monotonic()``, and their wall clocks may disagree. The one
  clock every host can read is the Redis server's (``TIME``). A worker measures the offset of
  its monotonic clock from it over a few round trips and keeps the one with the shortest round
  trip (`estimate_offset`: NTP's rule; the error is at most half that round trip, reported as
  the uncertainty). The start barrier is an instant on the Redis clock; each worker turns it
  into its own monotonic instant (`local_instant`).
- `lost_worker` accounts for a worker that stopped reporting: its planned share, what its
  ticks said it sent, and the rest, unsent.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crisisctl.load.plan import share
from crisisctl.load.scenario import ClosedModel, OpenModel, Scenario, VariableSpec
from crisisctl.load.schedule import part_of
from crisisctl.load.templates import load_csv_column

__all__ = [
    "ClockSample",
    "Share",
    "estimate_offset",
    "local_instant",
    "lost_worker",
    "plan_shares",
    "worker_scenario",
]


# -- what a worker is sent --------------------------------------------------------------------
def _inline(specs: dict[str, VariableSpec], base_dir: Path) -> dict[str, VariableSpec]:
    out = {}
    for name, spec in specs.items():
        if spec.csv is not None and spec.column is not None:
            values: list[str | int | float | bool] = list(
                load_csv_column(base_dir / spec.csv, spec.column)
            )
            spec = spec.model_copy(update={"values": values, "csv": None, "column": None})
        out[name] = spec
    return out


def worker_scenario(scenario: Scenario, base_dir: Path) -> dict[str, Any]:
    """The scenario as sent to a worker (JSON-able): CSV columns inlined, no name, no
    thresholds. Raises TemplateError when a CSV file cannot be read."""
    operations = [
        op.model_copy(update={"variables": _inline(op.variables, base_dir), "thresholds": []})
        for op in scenario.operations
    ]
    sent = scenario.model_copy(
        update={
            "name": "distributed",
            "thresholds": [],
            "variables": _inline(scenario.variables, base_dir),
            "operations": operations,
        }
    )
    return sent.model_dump(mode="json", by_alias=True, exclude_none=True)


# -- shares -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Share:
    """Worker `index` of `count`'s part: `planned` arrivals (open model) or users (closed)."""

    index: int
    count: int
    model: str
    planned: int

    def describe(self) -> str:
        """One phrase: which part of the load this is."""
        if self.model == "open":
            if self.count == 1:
                return f"all {self.planned} arrivals"
            return (
                f"arrivals {self.index}, {self.index + self.count}, … of every {self.count} "
                f"({self.planned} arrivals)"
            )
        return f"{self.planned} of the users"


def _planned_arrivals(scenario: Scenario, index: int, count: int) -> int:
    model = scenario.model
    assert isinstance(model, OpenModel)
    times = model.schedule().arrivals(model.arrival, scenario.seed)
    return sum(1 for _ in part_of(times, index, count))


def plan_shares(scenario: Scenario, count: int) -> list[Share]:
    """Every worker's `Share` of `scenario` split `count` ways (the open model's arrival count
    is exact: the schedule is walked once per worker)."""
    shares = []
    for index in range(count):
        if isinstance(scenario.model, OpenModel):
            planned = _planned_arrivals(scenario, index, count)
            shares.append(Share(index, count, "open", planned))
        else:
            part = share(scenario, index, count).model
            assert isinstance(part, ClosedModel)
            peak = max(
                [float(part.users), *(s.target for s in part.stages)]
                if part.stages
                else [float(part.users)]
            )
            shares.append(Share(index, count, "closed", math.ceil(peak - 1e-9)))
    return shares


def lost_worker(
    share_: Share, worker: str, sent: int, reason: str, last_seen_s: float | None
) -> dict[str, Any]:
    """The report entry of a worker lost mid-run: its share, what its ticks said it sent
    (requests in flight when it was lost are not counted) and, open model, the arrivals of its
    share it did not send."""
    entry: dict[str, Any] = {
        "worker": worker,
        "index": share_.index,
        "share": share_.describe(),
        "reason": reason,
        "last_seen_s": None if last_seen_s is None else round(last_seen_s, 3),
        "sent_requests": sent,
    }
    if share_.model == "open":
        entry["planned_arrivals"] = share_.planned
        entry["unsent_arrivals"] = max(0, share_.planned - sent)
    else:
        entry["users_lost"] = share_.planned
    return entry


# -- clocks -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ClockSample:
    """One round trip: local monotonic send and receive instants, the Redis clock between."""

    sent: float
    server: float
    received: float


def estimate_offset(samples: Iterable[ClockSample]) -> tuple[float, float]:
    """(offset, uncertainty) of the Redis clock minus the local monotonic clock, from the
    sample with the shortest round trip; the offset is within ± uncertainty (half that trip).
    Raises ValueError without a sample."""
    best: ClockSample | None = None
    for s in samples:
        if s.received < s.sent:
            continue
        if best is None or s.received - s.sent < best.received - best.sent:
            best = s
    if best is None:
        raise ValueError("no clock sample to estimate an offset from.")
    rtt = best.received - best.sent
    return best.server - (best.sent + best.received) / 2.0, rtt / 2.0


def local_instant(server_instant: float, offset: float) -> float:
    """The local monotonic instant of `server_instant` (Redis clock), given the offset."""
    return server_instant - offset
