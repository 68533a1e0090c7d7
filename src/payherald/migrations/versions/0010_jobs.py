"""One durable queue for deferred work of every kind: the jobs table.

Consent records whose write-back to Stripe was still pending (due by their own
``stripe_due_at`` until now) each get their write-back job, due when they were, so that
none is left behind by the upgrade.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from payherald.store.schema import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("key", sa.String(255), nullable=False, unique=True),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("due_at", UTCDateTime, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("lease_until", UTCDateTime),
        sa.Column("claimed_by", sa.String(128)),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("finished_at", UTCDateTime),
    )
    op.create_index("ix_jobs_status_due_at", "jobs", ["status", "due_at"])
    op.execute(
        "INSERT INTO jobs (kind, key, payload, status, due_at, attempts, created_at, updated_at) "
        "SELECT 'consent.write_back', 'consent.write_back:' || CAST(id AS VARCHAR(20)), "
        "'{\"consent_id\": ' || CAST(id AS VARCHAR(20)) || '}', 'pending', "
        "COALESCE(stripe_due_at, created_at), stripe_attempts, created_at, created_at "
        "FROM consents WHERE stripe_status = 'pending'"
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_status_due_at", "jobs")
    op.drop_table("jobs")
