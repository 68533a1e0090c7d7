"""Dunning sequences: one an invoice whose payment failed, and each step's notification
names its sequence.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from payherald.store.schema import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("sequence", sa.String(255)))
    op.create_index("ix_notifications_sequence", "notifications", ["sequence"])
    op.create_table(
        "dunning",
        sa.Column("invoice_id", sa.String(255), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("livemode", sa.Boolean, nullable=False),
        sa.Column("event_id", sa.String(255)),
        sa.Column("customer_id", sa.String(255)),
        sa.Column("subscription_id", sa.String(255)),
        sa.Column("amount", sa.BigInteger),
        sa.Column("currency", sa.String(16)),
        sa.Column("started_at", UTCDateTime),
        sa.Column("ended_at", UTCDateTime),
        sa.Column("end_reason", sa.Text),
        sa.Column("recovered_amount", sa.BigInteger),
        sa.Column("recovered_rule", sa.String(128)),
        sa.Column("recovered_channel", sa.String(32)),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_dunning_subscription_id", "dunning", ["subscription_id"])
    op.create_index("ix_dunning_status_started_at", "dunning", ["status", "started_at"])


def downgrade() -> None:
    op.drop_table("dunning")
    op.drop_index("ix_notifications_sequence", "notifications")
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("sequence")
