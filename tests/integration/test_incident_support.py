"""Shared fixtures of the incident-store tests: a SQLite file and a throwaway PostgreSQL database.

Throwaway PostgreSQL databases ``crisisctl_test_<random>`` are created on the server named by
``CRISISCTL_TEST_DATABASE_URL`` and dropped afterwards, so repeated or parallel runs never clash
and no other data is touched. An unreachable server fails the tests that need it with a clear
message (``make test`` starts it); it never skips them. (This module holds no tests.)
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from crisisctl.incidents.db import Database, open_database

PG_URL = os.environ.get("CRISISCTL_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgresql"]


@contextmanager
def throwaway_pg_database() -> Iterator[str]:
    """A new, empty database on the test server (its URL); dropped on exit."""
    server = make_url(PG_URL).set(drivername="postgresql")
    name = f"crisisctl_test_{uuid.uuid4().hex[:12]}"
    dsn = server.render_as_string(hide_password=False)
    try:
        admin = psycopg.connect(dsn, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL at {server.render_as_string(hide_password=True)} is unreachable ({exc}); "
            "start it (`make services`) or set CRISISCTL_TEST_DATABASE_URL.",
            pytrace=False,
        )
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield server.set(database=name).render_as_string(hide_password=False)
        finally:
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            admin.execute(drop.format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def pg_session_url() -> Iterator[str]:
    """One throwaway PostgreSQL database for the whole session (schema upgraded on first use)."""
    with throwaway_pg_database() as url:
        yield url


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL on each backend: a fresh SQLite file, or the session's PostgreSQL db."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'incidents.db'}"
    return str(request.getfixturevalue("pg_session_url"))


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """An open store on each backend."""
    database = open_database(db_url)
    try:
        yield database
    finally:
        database.close()
