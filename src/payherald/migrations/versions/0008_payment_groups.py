"""Notifications name the subject they were keyed on, so that two notifications about one
payment, queued before its events were linked, are told once.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("subject", sa.String(255)))
    op.create_index("ix_notifications_subject", "notifications", ["subject"])
    op.create_index("ix_subject_aliases_canonical", "subject_aliases", ["canonical"])


def downgrade() -> None:
    op.drop_index("ix_subject_aliases_canonical", "subject_aliases")
    op.drop_index("ix_notifications_subject", "notifications")
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("subject")
