"""Payment links payherald texted, and the payments credited to the messages that brought
them.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from payherald.store.schema import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# A 64-bit key on PostgreSQL, an INTEGER on SQLite (as the schema's notifications.id).
_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "paylinks",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("stripe_id", sa.String(255), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("campaign", sa.String(255)),
        sa.Column("livemode", sa.Boolean, nullable=False),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("notification_id", _BigId),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_paylinks_stripe_id", "paylinks", ["stripe_id"])
    op.create_table(
        "attributions",
        sa.Column("payment", sa.String(255), primary_key=True),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("livemode", sa.Boolean, nullable=False),
        sa.Column("notification_id", _BigId),
        sa.Column("rule", sa.String(128), nullable=False),
        sa.Column("channel", sa.String(32)),
        sa.Column("campaign", sa.String(255)),
        sa.Column("paylink_id", sa.String(64)),
        sa.Column("amount", sa.BigInteger),
        sa.Column("currency", sa.String(16)),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_index(
        "ix_attributions_livemode_created_at", "attributions", ["livemode", "created_at"]
    )


def downgrade() -> None:
    op.drop_table("attributions")
    op.drop_table("paylinks")
