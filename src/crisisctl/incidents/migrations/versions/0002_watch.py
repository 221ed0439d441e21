"""Watch response state: alerts by fingerprint, per-incident escalation state, silences.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "watch_alerts",
        sa.Column("fingerprint", sa.String(64), primary_key=True),
        sa.Column("rule", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("service", sa.String(200), nullable=False),
        sa.Column("severity", sa.String(2), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("active_since", _TS, nullable=False),
        sa.Column("fired_at", _TS, nullable=True),
        sa.Column("resolved_at", _TS, nullable=True),
        sa.Column("last_seen_at", _TS, nullable=False),
        sa.Column(
            "incident_id",
            sa.Integer(),
            sa.ForeignKey("incidents.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("silenced_by", sa.Integer(), nullable=True),
    )
    op.create_index("ix_watch_alerts_service", "watch_alerts", ["service"])
    op.create_index("ix_watch_alerts_state", "watch_alerts", ["state"])
    op.create_index("ix_watch_alerts_incident_id", "watch_alerts", ["incident_id"])
    op.create_table(
        "watch_incidents",
        sa.Column(
            "incident_id",
            sa.Integer(),
            sa.ForeignKey("incidents.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("service", sa.String(200), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("level_since", _TS, nullable=False),
        sa.Column("healthy_since", _TS, nullable=True),
        sa.Column("notified", sa.JSON(), nullable=False),
    )
    op.create_index("ix_watch_incidents_service", "watch_incidents", ["service"])
    op.create_table(
        "watch_silences",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("rule", sa.String(200), nullable=True),
        sa.Column("matchers", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("author", sa.String(200), nullable=True),
        sa.Column("starts_at", _TS, nullable=False),
        sa.Column("ends_at", _TS, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_index("ix_watch_silences_ends_at", "watch_silences", ["ends_at"])


def downgrade() -> None:
    op.drop_table("watch_silences")
    op.drop_index("ix_watch_incidents_service", table_name="watch_incidents")
    op.drop_table("watch_incidents")
    for name in ("incident_id", "state", "service"):
        op.drop_index(f"ix_watch_alerts_{name}", table_name="watch_alerts")
    op.drop_table("watch_alerts")
