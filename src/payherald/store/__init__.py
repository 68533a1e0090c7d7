"""payherald's state, on SQLite or PostgreSQL: the only package that speaks SQL.

engine     engines and migrations (SQLite in WAL with fsync, PostgreSQL via psycopg)
schema     the tables, which the migrations create
database   Database: transactions, the SQLite write lock, driver errors, the wake-up
events     Store: events recorded with their notifications, payments' identifiers
queue      the notifications as a work queue: claims, leases and state changes
jobs       Jobs: deferred work of every kind, one queue, claimed with a lease, once per key
records    what goes in and comes out (planned events, claimed notifications)
"""

from __future__ import annotations

from payherald.store.database import WAKE_CHANNEL, Database
from payherald.store.events import TERMINAL_STATUSES, Store
from payherald.store.jobs import Job, Jobs
from payherald.store.records import ClaimedNotification, PlannedEvent, QueueStats, RecordResult

__all__ = [
    "TERMINAL_STATUSES",
    "WAKE_CHANNEL",
    "ClaimedNotification",
    "Database",
    "Job",
    "Jobs",
    "PlannedEvent",
    "QueueStats",
    "RecordResult",
    "Store",
]
