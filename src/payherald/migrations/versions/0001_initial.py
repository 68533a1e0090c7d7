"""Events, notifications (the work queue) and meta.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from payherald.store.schema import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("type", sa.String(128), nullable=False),
        sa.Column("livemode", sa.Boolean, nullable=False),
        sa.Column("api_version", sa.String(64)),
        sa.Column("stripe_created_at", UTCDateTime),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("received_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_events_type", "events", ["type"])
    op.create_index("ix_events_received_at", "events", ["received_at"])
    op.create_table(
        "notifications",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(255), nullable=False, unique=True),
        sa.Column("event_id", sa.String(255), sa.ForeignKey("events.id"), nullable=False),
        sa.Column("rule", sa.String(128), nullable=False),
        sa.Column("recipient", sa.String(128), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("livemode", sa.Boolean, nullable=False),
        sa.Column("to", sa.String(255)),
        sa.Column("body", sa.Text),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("provider_id", sa.String(255)),
        sa.Column("error", sa.Text),
        sa.Column("error_code", sa.String(64)),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("run_at", UTCDateTime, nullable=False),
        sa.Column("lease_until", UTCDateTime),
        sa.Column("claimed_by", sa.String(128)),
        sa.Column("attempt_started_at", UTCDateTime),
        sa.Column("sent_at", UTCDateTime),
    )
    op.create_index("ix_notifications_status_run_at", "notifications", ["status", "run_at"])
    op.create_index("ix_notifications_event_id", "notifications", ["event_id"])
    op.create_table(
        "meta",
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("meta")
    op.drop_table("notifications")
    op.drop_table("events")
