"""guard_overhead holds idle CPUs polling while it measures, and lets go after.

`benchmarks/guard_overhead.py`'s `idle_polling` asks the kernel (PM QoS,
``/dev/cpu_dma_latency``) for 0 µs wake-up latency while inside, so idle CPUs poll instead of
halting (the module docstring says why). The file reads back the latency in force, so the test
sees the request take hold and end. Without the right to open it (not root), the benchmark runs
without and says why.
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.guard_overhead import idle_polling

QOS = "/dev/cpu_dma_latency"


def _latency_in_force() -> int:
    with open(QOS, "rb") as f:
        value: int = struct.unpack("i", f.read(4))[0]
        return value


def test_idle_polling_holds_zero_latency_inside_and_lets_go_after() -> None:
    if not os.access(QOS, os.W_OK):
        with idle_polling(True) as (held, why):
            assert held is False and QOS in why
        return
    before = _latency_in_force()
    assert before > 0
    with idle_polling(True) as (held, why):
        assert held is True and "poll" in why
        assert _latency_in_force() == 0
    assert _latency_in_force() == before


def test_turned_off_it_asks_nothing() -> None:
    with idle_polling(False) as (held, why):
        assert held is False and "--no-idle-polling" in why
