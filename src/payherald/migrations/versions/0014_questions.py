"""Questions texted to customers whose answer acts on Stripe (the fraud check).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from payherald.store.schema import UTCDateTime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "questions",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("notification_id", _BigId, nullable=False, unique=True),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("phone", sa.String(64), nullable=False),
        sa.Column("livemode", sa.Boolean, nullable=False),
        sa.Column("review_id", sa.String(255)),
        sa.Column("charge_id", sa.String(255)),
        sa.Column("payment_intent_id", sa.String(255)),
        sa.Column("amount", sa.BigInteger),
        sa.Column("currency", sa.String(16)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("asked_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.Column("answered_at", UTCDateTime),
        sa.Column("answer_id", sa.String(64)),
        sa.Column("outcome", sa.Text),
    )
    op.create_index("ix_questions_phone_status", "questions", ["phone", "status"])
    op.create_index("ix_questions_event_id", "questions", ["event_id"])


def downgrade() -> None:
    op.drop_table("questions")
