"""Concurrent writers on real SQLite and PostgreSQL: separate processes, released together, upgrade
an empty schema, open an incident with one dedup key and log to it; nothing is lost."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from test_incident_support import throwaway_pg_database

from crisisctl.incidents import store
from crisisctl.incidents.db import open_database

WRITERS = 3
EVENTS_EACH = 30

_WORKER = """
import sys
from crisisctl.incidents.db import open_database
from crisisctl.incidents import store
from crisisctl.severity import Severity
url, worker, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
print("ready", flush=True)
sys.stdin.readline()  # released together with the other workers
db = open_database(url)  # all upgrade the empty schema at once
inc = store.open_incident(db, title="dup", severity=Severity.P2, dedup_key="race")
for i in range(count):
    store.add_event(db, inc.id, kind="note", text=f"{worker}-{i}", source=worker)
print(inc.id)
db.close()
"""


def _run_workers(url: str, count: int) -> list[str]:
    """Start WRITERS processes, release them together once all are ready, return their output."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, url, f"w{n}", str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(WRITERS)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            outputs.append(out.strip())
        return outputs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _check(url: str) -> None:
    ids = _run_workers(url, EVENTS_EACH)
    assert len(set(ids)) == 1, ids  # one incident for the dedup key, whoever created it
    database = open_database(url)
    try:
        assert [r.id for r in store.list_incidents(database)] == [int(ids[0])]
        notes = store.list_events(database, int(ids[0]), kinds=["note"])
    finally:
        database.close()
    assert len(notes) == WRITERS * EVENTS_EACH
    assert {e.text for e in notes} == {
        f"w{n}-{i}" for n in range(WRITERS) for i in range(EVENTS_EACH)
    }
    for n in range(WRITERS):  # each writer's events keep their order
        mine = [int(e.text.split("-")[1]) for e in notes if e.source == f"w{n}"]
        assert mine == sorted(mine)


def test_concurrent_writers_on_empty_sqlite(tmp_path: Path) -> None:
    """Upgrade from empty, open with one dedup key and log, all at once: nothing is lost."""
    _check(f"sqlite:///{tmp_path / 'race.db'}")


def test_concurrent_writers_on_empty_postgresql() -> None:
    """The same on a throwaway PostgreSQL database."""
    with throwaway_pg_database() as url:
        _check(url)
