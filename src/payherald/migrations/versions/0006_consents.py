"""Consent records and inbound messages.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from payherald.store.schema import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "consents",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("address", sa.String(255), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("words", sa.Text),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_consents_address", "consents", ["address"])
    op.create_table(
        "inbound_messages",
        sa.Column("provider_id", sa.String(64), primary_key=True),
        sa.Column("sender", sa.String(255), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("action", sa.String(16)),
        sa.Column("received_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("inbound_messages")
    op.drop_index("ix_consents_address", "consents")
    op.drop_table("consents")
