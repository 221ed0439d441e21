"""Initial incident store: incidents, timeline events, action items, root causes, lessons,
baselines.

Revision ID: 0001
Revises:
Create Date: 2025-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def _incident_fk() -> sa.Column[int]:
    return sa.Column(
        "incident_id",
        sa.Integer(),
        sa.ForeignKey("incidents.id", ondelete="CASCADE"),
        nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("service", sa.String(200), nullable=True),
        sa.Column("severity", sa.String(2), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("escalation_level", sa.Integer(), nullable=False),
        sa.Column("dedup_key", sa.String(300), nullable=True),
        sa.Column("open_dedup_key", sa.String(300), nullable=True),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.Column("commander", sa.String(200), nullable=True),
        sa.Column("scribe", sa.String(200), nullable=True),
        sa.Column("comms", sa.String(200), nullable=True),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("detected_at", _TS, nullable=False),
        sa.Column("acknowledged_at", _TS, nullable=True),
        sa.Column("mitigated_at", _TS, nullable=True),
        sa.Column("resolved_at", _TS, nullable=True),
        sa.Column("closed_at", _TS, nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("peak_latency_ms", sa.Float(), nullable=True),
        sa.Column("baseline_latency_ms", sa.Float(), nullable=True),
        sa.Column("degradation_factor", sa.Float(), nullable=True),
        sa.Column("error_rate", sa.Float(), nullable=True),
        sa.Column("affected_requests", sa.Integer(), nullable=True),
        sa.Column("affected_users", sa.Integer(), nullable=True),
        sa.Column("downtime_ms", sa.Float(), nullable=True),
        sa.UniqueConstraint("open_dedup_key", name="uq_incidents_open_dedup_key"),
    )
    op.create_index("ix_incidents_status", "incidents", ["status"])
    op.create_table(
        "incident_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        _incident_fk(),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("author", sa.String(200), nullable=True),
        sa.Column("at", _TS, nullable=False),
        sa.Column("pinned", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_incident_events_incident_at", "incident_events", ["incident_id", "at"])
    op.create_table(
        "action_items",
        sa.Column("id", sa.Integer(), primary_key=True),
        _incident_fk(),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("owner", sa.String(200), nullable=True),
        sa.Column("due_date", sa.Date(), nullable=True),
        sa.Column("priority", sa.String(10), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("completed_at", _TS, nullable=True),
    )
    op.create_index("ix_action_items_incident_id", "action_items", ["incident_id"])
    op.create_table(
        "root_causes",
        sa.Column("id", sa.Integer(), primary_key=True),
        _incident_fk(),
        sa.Column("category", sa.String(100), nullable=False),
        sa.Column("cause", sa.Text(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("author", sa.String(200), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_index("ix_root_causes_incident_id", "root_causes", ["incident_id"])
    op.create_table(
        "lessons",
        sa.Column("id", sa.Integer(), primary_key=True),
        _incident_fk(),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("author", sa.String(200), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_index("ix_lessons_incident_id", "lessons", ["incident_id"])
    op.create_table(
        "baselines",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("profile", sa.JSON(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
    )


def downgrade() -> None:
    for table in ("baselines", "lessons", "root_causes", "action_items", "incident_events"):
        op.drop_table(table)
    op.drop_index("ix_incidents_status", table_name="incidents")
    op.drop_table("incidents")
