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

import pytest

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
    from benchmarks.guard_misses import per_request

    with pytest.raises(RuntimeError, match="expected 13"):
        per_request([1], [2], n1=1, n2=2)  # instructions only: the simulation was off


# real lines of callgrind_annotate --show=Ir,I1mr,D1mr,D1mw,Bcm,Bim --threshold=100 (valgrind
# 3.19, the realistic guard's server), trimmed: a libpython function, code inlined from a
# Python header into the interpreter and into a compiled function, the mypyc runtime, libc
# (a "." is an event that never happened there), uvloop, a Python header inlined into uvloop's
# Cython code, and the totals line (not a function)
SPLIT_SAMPLE = """\
Ir                     I1mr                D1mr                D1mw               Bcm                 Bim                 
--------------------------------------------------------------------------------
2,697,654,209 (100.0%) 48,890,737 (100.0%) 26,583,455 (100.0%) 8,404,395 (100.0%) 29,475,055 (100.0%) 29,561,631 (100.0%)  PROGRAM TOTALS

--------------------------------------------------------------------------------
Ir                   I1mr               D1mr               D1mw               Bcm                Bim                  file:function
--------------------------------------------------------------------------------
 97,554,822 ( 3.62%)   183,225 ( 0.37%)   901,570 ( 3.39%)    50,440 ( 0.60%) 1,597,949 ( 5.42%)          .           /tmp/python-build.20260509073455.222/Python-3.11.7/Objects/dictobject.c:unicodekeys_lookup_unicode [/root/.pyenv/versions/3.11.7/lib/libpython3.11.so.1.0]
 14,298,073 ( 0.53%)     7,041 ( 0.01%)       946 ( 0.00%)   280,652 ( 3.34%)   464,732 ( 1.58%)     11,008 ( 0.04%)  /tmp/python-build.20260509073455.222/Python-3.11.7/./Include/object.h:_PyFrame_Clear
 22,022,707 ( 0.82%)   653,145 ( 1.34%)   108,362 ( 0.41%)    45,283 ( 0.54%)   363,540 ( 1.23%)          .           ./malloc/./malloc/malloc.c:_int_malloc [/usr/lib/x86_64-linux-gnu/libc.so.6]
  1,006,712 ( 0.04%)    63,017 ( 0.13%)    31,506 ( 0.12%)         0             43,544 ( 0.15%)     14,003 ( 0.05%)  /work/main/build/mypyc/c/__native_e186342b7f52add0be2f.c:CPyDef_routetrie____walk [/work/main/src/e186342b7f52add0be2f__mypyc.cpython-311-x86_64-linux-gnu.so]
    699,337 ( 0.03%)    14,004 ( 0.03%)     7,002 ( 0.03%)         0              3,450 ( 0.01%)      7,002 ( 0.02%)  /work/main/.venv/lib/python3.11/site-packages/mypyc/lib-rt/str_ops.c:CPyStr_FindWithEnd [/work/main/src/e186342b7f52add0be2f__mypyc.cpython-311-x86_64-linux-gnu.so]
    370,105 ( 0.01%)    26,509 ( 0.05%)    16,507 ( 0.06%)     3,501 ( 0.04%)    31,099 ( 0.11%)          .           /root/.pyenv/versions/3.11.7/include/python3.11/object.h:CPyDef_ratelimit___MemoryRateLimiter___admit_stacked
  1,033,916 ( 0.04%)   101,519 ( 0.21%)    46,713 ( 0.18%)    10,671 ( 0.13%)    60,976 ( 0.21%)     23,962 ( 0.08%)  /project/uvloop/loop.c:__pyx_tp_new_vectorcall_6uvloop_4loop_TimerHandle [/work/main/.venv/lib/python3.11/site-packages/uvloop/loop.cpython-311-x86_64-linux-gnu.so]
    329,680 ( 0.01%)    34,427 ( 0.07%)     1,682 ( 0.01%)    19,704 ( 0.23%)    44,762 ( 0.15%)          .           /opt/_internal/cpython-3.11.15/include/python3.11/object.h:__pyx_f_6uvloop_4loop_6Handle__run'2
"""


def test_guard_misses_splits_the_listing_by_where_the_code_lives() -> None:
    from benchmarks.guard_misses import by_where

    split = by_where(SPLIT_SAMPLE)
    assert split == {
        "interpreter": [97554822 + 14298073, 183225 + 7041, 901570 + 946, 50440 + 280652,
                        1597949 + 464732, 11008],
        "libc": [22022707, 653145, 108362, 45283, 363540, 0],
        "compiled": [1006712 + 699337 + 370105, 63017 + 14004 + 26509, 31506 + 7002 + 16507,
                     0 + 0 + 3501, 43544 + 3450 + 31099, 14003 + 7002],
        "other": [1033916 + 329680, 101519 + 34427, 46713 + 1682, 10671 + 19704, 60976 + 44762,
                  23962],
    }  # fmt: skip


def test_guard_misses_adds_by_where_per_request_over_the_bare_app(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import benchmarks.guard_misses as misses

    listings = {
        ("realistic_bare", 1): {"interpreter": [100, 10, 0, 0, 0, 0]},
        ("realistic_bare", 3): {"interpreter": [300, 30, 0, 0, 0, 0]},
        ("realistic_guard", 1): {"interpreter": [150, 10, 0, 0, 0, 0], "compiled": [50] * 6},
        ("realistic_guard", 3): {"interpreter": [450, 50, 0, 0, 0, 0], "compiled": [250] * 6},
    }
    files = {job: f"{job[0]}-{job[1]}" for job in listings}
    by_file = {files[job]: split for job, split in listings.items()}
    # the listing of a file is its name here, and its split is the table above
    monkeypatch.setattr(misses, "_listing", lambda out_file: out_file)
    monkeypatch.setattr(misses, "by_where", lambda listing: by_file[listing])
    added = misses.added_by_where(files, 1, 3)  # two extra requests
    assert added["interpreter"] == {"Ir": 50.0, "I1mr": 10.0, "D1mr": 0.0, "D1mw": 0.0,
                                    "Bcm": 0.0, "Bim": 0.0}  # fmt: skip
    assert added["compiled"] == {e: 100.0 for e in misses.WHERE_EVENTS}
