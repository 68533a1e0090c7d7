"""Delivery reports: Twilio status callbacks, and each notification's latest status.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from payherald.store.schema import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "delivery_reports",
        sa.Column("provider_id", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(16), primary_key=True),
        sa.Column("notification_id", _BigId),
        sa.Column("error_code", sa.String(16)),
        sa.Column("received_at", UTCDateTime, nullable=False),
    )
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("delivery_status", sa.String(16)))
        batch.add_column(sa.Column("delivery_error_code", sa.String(16)))


def downgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("delivery_error_code")
        batch.drop_column("delivery_status")
    op.drop_table("delivery_reports")
