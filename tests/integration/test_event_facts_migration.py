"""Upgrading a store with events in it: the migration that adds each event's kind, amount
and customer reads them from the payloads already stored, so the dashboard lists and
filters old events as it does new ones (on SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import command

from payherald.simulate import build_event
from payherald.store.engine import _alembic_config, create_store_engine, migrate


def test_events_stored_before_the_upgrade_get_their_facts(database_url: str) -> None:
    engine = create_store_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    command.upgrade(_alembic_config(engine), "0014")
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    paid = build_event("payment_intent.succeeded", now=now, amount=1234, currency="eur")
    refund = build_event("charge.refunded", now=now)
    broken = {"id": "evt_broken", "type": "charge.failed"}  # no data: not parsable any more
    events = sa.table(
        "events",
        *(sa.column(name) for name in ("id", "type", "livemode", "payload", "status")),
        sa.column("received_at", sa.DateTime),
    )
    with engine.begin() as connection:
        connection.execute(
            events.insert(),
            [
                {
                    "id": item["id"],
                    "type": item["type"],
                    "livemode": False,
                    "payload": json.dumps(item),
                    "status": "received",
                    "received_at": now.replace(tzinfo=None),
                }
                for item in (paid, refund, broken)
            ],
        )

    migrate(engine)

    with engine.connect() as connection:
        rows = {
            row.id: row
            for row in connection.execute(
                sa.text("SELECT id, kind, amount, currency, email, subject FROM events")
            )
        }
    engine.dispose()
    intent = paid["data"]["object"]["id"]
    assert tuple(rows[paid["id"]])[1:] == (
        "succeeded",
        1234,
        "eur",
        "jenny.rosen@example.com",
        f"payment:{intent}",
    )
    assert rows[refund["id"]].kind == "refund"
    assert rows[refund["id"]].amount == refund["data"]["object"]["amount_refunded"]
    assert rows["evt_broken"].kind == "other"
