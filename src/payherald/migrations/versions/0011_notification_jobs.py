"""Notifications are scheduled by the job queue: every waiting notification has a job.

Each notification still waiting when the upgrade runs gets its job, due at its
``run_at``: ``notification.send`` for those pending or claimed, ``notification.reconcile``
for those whose outcome is unknown or that were being sent (a claim left ``sending`` by the
version before is found out by reconciling it, never sent again blindly). The claim looks
for due jobs of one kind, so the jobs' index leads with the kind.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_QUEUE = (
    "INSERT INTO jobs (kind, key, payload, status, due_at, attempts, created_at, updated_at) "
    "SELECT '{kind}', 'notification:' || CAST(id AS VARCHAR(20)), "
    "'{{\"notification\": ' || CAST(id AS VARCHAR(20)) || '}}', 'pending', run_at, 0, "
    "updated_at, updated_at FROM notifications WHERE status IN ({statuses})"
)


def upgrade() -> None:
    op.drop_index("ix_jobs_status_due_at", "jobs")
    op.create_index("ix_jobs_kind_status_due_at", "jobs", ["kind", "status", "due_at"])
    op.execute(_QUEUE.format(kind="notification.send", statuses="'pending', 'claimed'"))
    op.execute(_QUEUE.format(kind="notification.reconcile", statuses="'sending', 'unknown'"))


def downgrade() -> None:
    op.execute("DELETE FROM jobs WHERE kind IN ('notification.send', 'notification.reconcile')")
    op.drop_index("ix_jobs_kind_status_due_at", "jobs")
    op.create_index("ix_jobs_status_due_at", "jobs", ["status", "due_at"])
