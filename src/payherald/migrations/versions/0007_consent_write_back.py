"""Consent records carry their write-back to the Stripe customer's metadata.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from payherald.store.schema import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("consents") as batch:
        batch.add_column(sa.Column("stripe_status", sa.String(16)))
        batch.add_column(
            sa.Column("stripe_attempts", sa.Integer, nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("stripe_due_at", UTCDateTime))
        batch.add_column(sa.Column("stripe_result", sa.Text))
    op.create_index("ix_consents_stripe_due", "consents", ["stripe_status", "stripe_due_at"])


def downgrade() -> None:
    op.drop_index("ix_consents_stripe_due", "consents")
    with op.batch_alter_table("consents") as batch:
        batch.drop_column("stripe_result")
        batch.drop_column("stripe_due_at")
        batch.drop_column("stripe_attempts")
        batch.drop_column("stripe_status")
