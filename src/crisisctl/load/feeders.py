"""Feeders: per-user rows of data for journeys, from a CSV or JSONL file.

`load_rows(path, kind)` reads every row once, before the run (a CSV's header names the
columns; a JSONL line is one JSON object); `Feeder` hands rows to virtual users by mode:
``sequential`` (each journey takes the next row, wrapping), ``random`` (a row drawn per
journey) or ``unique`` (user *i* keeps row *i* for the whole run — in the open model, arrival
*i* gets row *i*; `check_unique` makes more users or arrivals than rows an error before
anything is sent). `part`/`parts` give a process of a
multi-process run its own slice of a unique feeder's rows, so no two users share one.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Feeder", "FeederError", "load_rows"]

Row = dict[str, str]


class FeederError(ValueError):
    """A data file that cannot feed a run (the message says why)."""


def _text(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return "" if value is None else str(value)


def load_rows(path: Path, kind: str) -> list[Row]:
    """Every row of the ``csv`` or ``jsonl`` file at `path`; FeederError when it cannot be read,
    is not valid, or has no rows."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            if kind == "csv":
                reader = csv.DictReader(fh)
                rows = [{k: v or "" for k, v in row.items() if k is not None} for row in reader]
                if not reader.fieldnames:
                    raise FeederError(f"the CSV file {path} has no header line naming its columns.")
            else:
                rows = []
                for number, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    try:
                        data = json.loads(line)
                    except ValueError:
                        raise FeederError(f"{path}:{number} is not a JSON object.") from None
                    if not isinstance(data, dict):
                        raise FeederError(f"{path}:{number} is not a JSON object.")
                    rows.append({str(k): _text(v) for k, v in data.items()})
    except OSError as exc:
        raise FeederError(f"cannot read the data file {path} ({exc.strerror or exc}).") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise FeederError(f"the data file {path} is not valid UTF-8 {kind} ({exc}).") from None
    if not rows:
        raise FeederError(f"the data file {path} has no rows.")
    return rows


def columns_of(rows: Sequence[Row]) -> set[str]:
    """The columns every row has (a template may only use those)."""
    common = set(rows[0])
    for row in rows[1:]:
        common &= set(row)
    return common


@dataclass(slots=True)
class Feeder:
    """Rows handed out by `mode` (see the module's docstring)."""

    rows: Sequence[Row]
    mode: str = "sequential"
    name: str = "feeder"
    _next: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not self.rows:
            raise FeederError(f"the {self.name} has no rows.")

    def part(self, index: int, count: int) -> Feeder:
        """Process `index` of `count`'s feeder: a unique feeder's rows index, index+count, …"""
        if self.mode != "unique" or count <= 1:
            return self
        return Feeder(self.rows[index::count], self.mode, self.name)

    def check_unique(self, needed: int, what: str = "users") -> None:
        """FeederError when a unique feeder has fewer rows than the run has users (or
        open-model arrivals: `what`)."""
        if self.mode == "unique" and needed > len(self.rows):
            each, fewer = (
                ("user", "add rows or run fewer users")
                if what == "users"
                else ("arrival", "add rows, lower the rate or shorten the run")
            )
            raise FeederError(
                f"the {self.name} gives each {each} its own row (mode unique) but has "
                f"{len(self.rows)} rows for {needed} {what}; {fewer}."
            )

    def row(self, user: int, rng: random.Random) -> Row:
        """The row of user `user` for its next journey."""
        if self.mode == "unique":
            return self.rows[user % len(self.rows)]
        if self.mode == "random":
            return self.rows[rng.randrange(len(self.rows))]
        row = self.rows[self._next]
        self._next = (self._next + 1) % len(self.rows)
        return row
