"""Alembic environment of the incident store: runs on the connection `upgrade_schema` passes.

crisisctl configures Alembic in code (no alembic.ini): ``config.attributes["connection"]`` is an
open SQLAlchemy connection. The whole upgrade is one transaction that first takes the migration
lock, so two processes upgrading at once serialise and the second finds the head already there.
"""

from __future__ import annotations

from alembic import context

from crisisctl.incidents.db import lock_for_migration
from crisisctl.incidents.models import Base


def run_migrations() -> None:
    """Upgrade on the caller's connection, inside one locked transaction."""
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("crisisctl migrations run only through crisisctl.incidents.db")
    with connection.begin():
        lock_for_migration(connection)
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()


run_migrations()
