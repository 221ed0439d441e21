# ruff: noqa: E501, W291  (the sample is callgrind_annotate output as printed)
"""Reading callgrind_annotate's function listing in benchmarks/guard_instructions.py.

The sample is real output of valgrind 3.19's callgrind_annotate (``--auto=no``), trimmed;
a function listed twice (code inlined from a header) adds up as self cost and keeps its
larger entry as inclusive cost. Also benchmarks/guard_misses.py's per-request figures from
callgrind's event totals (with the cache and branch simulations on).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.guard_instructions import parse_annotate

SAMPLE = """\
--------------------------------------------------------------------------------
Profile data file '/tmp/x.out' (creator: callgrind-3.19.0)
--------------------------------------------------------------------------------
Events recorded:  Ir
Auto-annotation:  off

--------------------------------------------------------------------------------
Ir               
--------------------------------------------------------------------------------
126,573 (100.0%)  PROGRAM TOTALS

--------------------------------------------------------------------------------
Ir               file:function
--------------------------------------------------------------------------------
21,172 (16.73%)  ./elf/./elf/dl-lookup.c:do_lookup_x [/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2]
 8,262 ( 6.53%)  ./elf/../sysdeps/generic/dl-new-hash.h:_dl_lookup_symbol_x
 8,128 ( 6.42%)  ./elf/./elf/dl-lookup.c:_dl_lookup_symbol_x [/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2]
   586  build/mypyc/c/__native_a3.c:CPyDef_routes___RouteTable___resolve [a3__mypyc.cpython-311-x86_64-linux-gnu.so]

--------------------------------------------------------------------------------
-- Auto-annotated source: nothing here
  1,000  if (--op->ob_refcnt == 0) {
"""


def test_self_costs_of_a_function_listed_twice_add_up() -> None:
    counts = parse_annotate(SAMPLE)
    assert counts == {
        "do_lookup_x": 21172,
        "_dl_lookup_symbol_x": 8262 + 8128,
        "CPyDef_routes___RouteTable___resolve": 586,
    }


def test_an_inclusive_cost_keeps_the_larger_entry() -> None:
    assert parse_annotate(SAMPLE, inclusive=True)["_dl_lookup_symbol_x"] == 8262


def test_guard_misses_per_request_is_the_difference_over_the_extra_requests() -> None:
    from benchmarks.guard_misses import EVENTS, MISS_EVENTS, per_request

    low = [1000 * (i + 1) for i in range(len(EVENTS))]
    high = [value + 300 * (i + 1) for i, value in enumerate(low)]
    figures = per_request(low, high, n1=500, n2=800)  # 300 extra requests
    assert [figures[e] for e in EVENTS] == [float(i + 1) for i in range(len(EVENTS))]
    assert figures["miss_events"] == sum(EVENTS.index(e) + 1 for e in MISS_EVENTS)


def test_guard_misses_refuses_a_run_without_the_simulated_events() -> None:
    import pytest
    from benchmarks.guard_misses import per_request

    with pytest.raises(RuntimeError, match="expected 13"):
        per_request([1], [2], n1=1, n2=2)  # instructions only: the simulation was off
