"""payherald's state, on SQLite or PostgreSQL: the only package that speaks SQL.

engine      engines and migrations (SQLite in WAL with fsync, PostgreSQL via psycopg)
schema      the tables, which the migrations create
database    Database: transactions, the SQLite write lock, driver errors, the wake-up
events      Store: events recorded with their notifications, replayed, read; the
            repositories below hang off it
links       Store.links: the identifiers of one payment linked as one subject
meta        Store.meta: a small key-value table (the development secret, fingerprints)
outbox      a planned notification's row and its job, queued with the event
queue       Store.queue: the notifications as a work queue, claimed through their jobs,
            leases, state changes (queue_statements: its statements, built once)
transitions what can become of a claimed notification, in one table
told        whether another notification about the same thing was told, and the locks
            that keep two from being told at once
jobs        Store.jobs: deferred work of every kind, one queue, claimed with a lease, once
            per key
dunning     Store.dunning: an invoice's dunning sequence, started and ended with the events
questions   Store.questions: the fraud check's questions, opened with their texts and
            answered with the replies
digest      Store.digest: the daily digest's figures of a day, from the events and dunning
attribution Store.attribution: the paylinks texted, and each payment credited to the
            message that brought it, with the events; revenue per rule and channel
consents    Store.consents: the suppression list, consent records, inbound messages, and
            each record's write-back to Stripe, queued as a job
deliveries  Store.deliveries: Twilio's delivery reports, moving a notification forward
history     Store.history: what the dashboard and the JSON API read (events page by page,
            an event's trace, today's figures and the chart)
pruning     Store.pruning: retention's deletes and counts, batch by batch
records     what goes in and comes out (planned events, claimed notifications, jobs)
statuses    every status stored, one enum per kind of row

``open_store`` opens the store at a URL; nothing outside this package imports SQLAlchemy.
"""

from __future__ import annotations

from payherald.clock import Clock
from payherald.store.database import WAKE_CHANNEL, Database, Engine
from payherald.store.engine import create_store_engine
from payherald.store.events import TERMINAL_STATUSES, Store
from payherald.store.jobs import Job, Jobs
from payherald.store.records import ClaimedNotification, PlannedEvent, QueueStats, RecordResult

__all__ = [
    "TERMINAL_STATUSES",
    "WAKE_CHANNEL",
    "ClaimedNotification",
    "Database",
    "Engine",
    "Job",
    "Jobs",
    "PlannedEvent",
    "QueueStats",
    "RecordResult",
    "Store",
    "open_store",
]


def open_store(url: str, *, clock: Clock) -> Store:
    """The store of the database at ``url`` (SQLAlchemy's form: ``Settings.sqlalchemy_url``),
    on an engine made for it (``create_store_engine``). Nothing is connected yet."""
    return Store(engine=create_store_engine(url), clock=clock)
