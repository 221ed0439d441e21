"""The incident store's database handle: URL resolution, engine set-up and schema upgrades.

``resolve_db_url()`` picks the database (``--db`` > ``$CRISISCTL_DB`` > a SQLite file under the
user data dir), ``open_database()`` connects, upgrades the schema to the Alembic head (safe when
several processes do it at once) and returns a `Database`. On SQLite every transaction starts
with ``BEGIN IMMEDIATE`` in WAL mode with a busy timeout, so concurrent writers queue instead of
failing; on PostgreSQL row locks (``SELECT … FOR UPDATE``) do the same job.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    NoSuchModuleError,
    SQLAlchemyError,
)
from sqlalchemy.orm import Session, sessionmaker

#: the newest migration in ``migrations/versions`` (a test checks they agree)
HEAD_REVISION: Final = "0003"
#: seconds a SQLite writer waits for another one before giving up
SQLITE_BUSY_TIMEOUT_S: Final = 30.0
#: PostgreSQL advisory lock serialising concurrent schema upgrades ("crisisctl" in ASCII)
_MIGRATION_LOCK_KEY: Final = 0x63726973
_CONNECT_TIMEOUT_S: Final = 5


class StoreError(Exception):
    """A user-facing incident-store error; ``str(exc)`` is one clear sentence (CLI exit 2)."""


class ConflictError(StoreError):
    """A write collided with a uniqueness rule (e.g. another process took the same dedup key)."""


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def default_db_path() -> Path:
    """``$XDG_DATA_HOME/crisisctl/crisisctl.db`` (or under ``~/.local/share``)."""
    base = os.environ.get("XDG_DATA_HOME", "").strip()
    root = Path(base) if base else Path.home() / ".local" / "share"
    return root / "crisisctl" / "crisisctl.db"


def _normalise(url: str) -> URL:
    """The SQLAlchemy URL for a user's URL or path, with the psycopg 3 driver for PostgreSQL."""
    text_url = url.strip()
    if not text_url:
        raise StoreError("the database URL is empty: give --db URL or set CRISISCTL_DB.")
    if "://" not in text_url:  # a plain file path means a SQLite file
        return URL.create("sqlite", database=str(Path(text_url).expanduser().resolve()))
    try:
        parsed = make_url(text_url)
    except ArgumentError as exc:
        raise StoreError(
            f"{text_url!r} is not a database URL: use sqlite:///path/to/file.db or "
            "postgresql://user@host:5432/dbname."
        ) from exc
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise StoreError(
                "an in-memory SQLite database would forget every incident: "
                "give a file, e.g. sqlite:///incidents.db."
            )
        path = Path(parsed.database or "").expanduser()
        return parsed.set(drivername="sqlite", database=str(path.resolve()))
    raise StoreError(
        f"unsupported database {backend!r} in the URL: use sqlite:///path/to/file.db or "
        "postgresql://user@host:5432/dbname."
    )


def resolve_db_url(explicit: str | None = None) -> str:
    """The database URL to use: `explicit` (--db) > ``$CRISISCTL_DB`` > the default SQLite file.

    Plain ``postgresql://`` URLs get the psycopg 3 driver; a bare path means a SQLite file. The
    default file's folder is created. Raises StoreError for a URL that cannot work.
    """
    chosen = explicit if explicit is not None else os.environ.get("CRISISCTL_DB") or None
    if chosen is None:
        path = default_db_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"could not create the data folder {path.parent} ({exc.strerror or exc}): "
                "give --db or set CRISISCTL_DB."
            ) from exc
        return URL.create("sqlite", database=str(path)).render_as_string(hide_password=False)
    return _normalise(chosen).render_as_string(hide_password=False)


def _use_wal(cursor: Any) -> None:
    """Switch the file to WAL, waiting out another process that is switching it at once.

    SQLite answers the switch with "database is locked" at once, without calling the busy
    handler, while a second connection holds the file (two watchers opening a new store
    together); the mode is kept in the file, so once it is WAL nothing is left to do.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    pause = 0.005
    while True:
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
                return
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.2)


def _sqlite_engine(url: URL) -> Engine:
    folder = Path(url.database or "").parent
    if not folder.is_dir():
        raise StoreError(
            f"the folder {folder} of the SQLite database does not exist: create it or "
            "choose another --db."
        )
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (below)
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        _use_wal(cursor)
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # take the write lock up front: a deferred transaction that later upgrades to a writer
        # fails with "database is locked" instead of waiting when another writer got there first
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class Database:
    """An open incident store: the engine, a session factory and the (password-hidden) URL."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions: sessionmaker[Session] = sessionmaker(engine, expire_on_commit=False)

    @property
    def url(self) -> str:
        """The database URL with any password hidden, for messages."""
        return self.engine.url.render_as_string(hide_password=True)

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session in one transaction, committed on success and rolled back on error.

        Database failures surface as StoreError with one sentence.
        """
        try:
            with self.sessions() as session, session.begin():
                yield session
        except IntegrityError as exc:
            raise ConflictError(_db_failure(self.url, exc)) from exc
        except DBAPIError as exc:
            raise StoreError(_db_failure(self.url, exc)) from exc

    def close(self) -> None:
        """Release every pooled connection."""
        self.engine.dispose()


def _db_failure(url: str, exc: DBAPIError) -> str:
    detail = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
    return f"the database at {url} failed ({detail}); check --db / CRISISCTL_DB and the server."


def _current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        if not engine.dialect.has_table(connection, "alembic_version"):
            return None
        row = connection.execute(text("SELECT version_num FROM alembic_version")).first()
        return None if row is None else str(row[0])


def upgrade_schema(engine: Engine) -> None:
    """Bring the schema to the Alembic head; a no-op when it is already there."""
    if _current_revision(engine) == HEAD_REVISION:
        return
    from alembic import command
    from alembic.config import Config

    with resources.as_file(resources.files("crisisctl.incidents") / "migrations") as scripts:
        config = Config()
        config.set_main_option("script_location", str(scripts))
        with engine.connect() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")


def lock_for_migration(connection: Any) -> None:
    """Serialise schema upgrades across processes (PostgreSQL; SQLite's BEGIN IMMEDIATE does)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})


def open_database(url: str | None = None) -> Database:
    """Resolve `url`, connect, upgrade the schema to the head and return the handle.

    Raises StoreError with one clear sentence when the URL is bad or the database unusable.
    """
    sa_url = make_url(resolve_db_url(url))
    shown = sa_url.render_as_string(hide_password=True)
    try:
        if sa_url.get_backend_name() == "sqlite":
            engine = _sqlite_engine(sa_url)
        else:
            engine = create_engine(
                sa_url, pool_pre_ping=True, connect_args={"connect_timeout": _CONNECT_TIMEOUT_S}
            )
    except (ArgumentError, NoSuchModuleError) as exc:
        raise StoreError(f"cannot use the database URL {shown} ({exc}).") from exc
    try:
        upgrade_schema(engine)
    except DBAPIError as exc:
        engine.dispose()
        raise StoreError(
            f"could not open the incident database at {shown} "
            f"({str(exc.orig).strip().splitlines()[0] if exc.orig else exc}); "
            "check --db / CRISISCTL_DB and that the server is running."
        ) from exc
    except SQLAlchemyError as exc:
        engine.dispose()
        raise StoreError(f"could not prepare the incident database at {shown} ({exc}).") from exc
    return Database(engine)


__all__ = [
    "HEAD_REVISION",
    "ConflictError",
    "Database",
    "StoreError",
    "default_db_path",
    "lock_for_migration",
    "open_database",
    "resolve_db_url",
    "upgrade_schema",
    "utcnow",
]
