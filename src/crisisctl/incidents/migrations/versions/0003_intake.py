"""Alertmanager intake: every received alert notification, unique on its dedup key.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "intake_alerts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("dedup_key", sa.String(64), nullable=False),
        sa.Column("am_fingerprint", sa.String(64), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("starts_at", _TS, nullable=False),
        sa.Column("ends_at", _TS, nullable=True),
        sa.Column("alertname", sa.String(200), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("annotations", sa.JSON(), nullable=False),
        sa.Column("generator_url", sa.Text(), nullable=False),
        sa.Column("receiver", sa.String(200), nullable=False),
        sa.Column("received_at", _TS, nullable=False),
        sa.Column("processed_at", _TS, nullable=True),
        sa.UniqueConstraint("dedup_key", name="uq_intake_alerts_dedup_key"),
    )
    op.create_index("ix_intake_alerts_am_fingerprint", "intake_alerts", ["am_fingerprint"])


def downgrade() -> None:
    op.drop_index("ix_intake_alerts_am_fingerprint", table_name="intake_alerts")
    op.drop_table("intake_alerts")
