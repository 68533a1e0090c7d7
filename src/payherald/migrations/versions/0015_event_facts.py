"""What each event is at a glance (kind, amount, customer, subject), for the dashboard;
filled in for the events already stored. And what a notification queued again had been
before (``earlier``), for its trace.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from payherald.event_facts import stored_event_facts

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("kind", sa.String(16)),
    ("amount", sa.BigInteger()),
    ("currency", sa.String(16)),
    ("customer", sa.String(255)),
    ("email", sa.String(255)),
    ("customer_name", sa.String(255)),
    ("subject", sa.String(255)),
)
# Each ends in the order of a page of the dashboard's list (see schema.py).
_INDEXES = {
    "ix_events_livemode_received_at": ["livemode", "received_at", "id"],
    "ix_events_livemode_kind_received_at": ["livemode", "kind", "received_at", "id"],
    "ix_events_livemode_customer_received_at": ["livemode", "customer", "received_at", "id"],
    "ix_events_livemode_email_received_at": ["livemode", "email", "received_at", "id"],
}
# Events read and updated at a time: a large store is filled in without holding all of it.
_BATCH = 1000


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        for name, kind in _COLUMNS:
            batch.add_column(sa.Column(name, kind))
    _fill_in()
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("earlier", sa.Text))
    for name, columns in _INDEXES.items():
        op.create_index(name, "events", columns)
    op.create_index("ix_notifications_updated_at", "notifications", ["updated_at"])


def _fill_in() -> None:
    connection = op.get_bind()
    events = sa.table(
        "events",
        sa.column("id", sa.String),
        sa.column("payload", sa.Text),
        *(sa.column(name, kind) for name, kind in _COLUMNS),
    )
    after = ""
    while True:
        rows = connection.execute(
            sa.select(events.c.id, events.c.payload)
            .where(events.c.id > after)
            .order_by(events.c.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            return
        connection.execute(
            sa.update(events)
            .where(events.c.id == sa.bindparam("event_id"))
            .values({name: sa.bindparam(name) for name, _ in _COLUMNS}),
            [
                {"event_id": event_id, **stored_event_facts(payload).as_row()}
                for event_id, payload in rows
            ],
        )
        after = rows[-1][0]


def downgrade() -> None:
    op.drop_index("ix_notifications_updated_at", table_name="notifications")
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("earlier")
    for name in _INDEXES:
        op.drop_index(name, table_name="events")
    with op.batch_alter_table("events") as batch:
        for name, _ in reversed(_COLUMNS):
            batch.drop_column(name)
