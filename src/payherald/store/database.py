"""One database: its engine, its transactions, and what its errors mean.

Every repository of the store (events, notifications, consents, delivery reports, jobs)
reads and writes through a ``Database``, and nothing outside ``payherald.store`` sees a
connection.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, DBAPIError, SQLAlchemyError

from payherald.exceptions import SchemaOutOfDate, StoreUnavailable, ValueNotStorable
from payherald.store.engine import READ_ONLY, cannot_open, current_revision, head_revision

__all__ = ["FEED_CHANNEL", "WAKE_CHANNEL", "Database", "Engine"]

# The PostgreSQL NOTIFY channel that wakes workers when work is queued.
WAKE_CHANNEL = "payherald_work"
# The one that tells every dashboard's live feed that events were stored.
FEED_CHANNEL = "payherald_feed"


class Database:
    """Transactions on ``engine``, whose database errors become StoreUnavailable (or
    ValueNotStorable for a value the database refuses)."""

    def __init__(self, *, engine: Engine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        # SQLite has one writer at a time, and a writer that finds the lock taken sleeps in
        # SQLite's busy handler (up to 100 ms a turn) however soon the lock is free. The
        # threads of one process (the group committer, the worker's senders) therefore
        # queue here instead, and each goes the moment the one before it commits.
        self._write_lock = threading.Lock() if not self.postgres else None

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A transaction that may write."""
        lock = self._write_lock or contextlib.nullcontext()
        with lock, _unavailable_on_error(), self.engine.begin() as connection:
            yield connection

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A transaction that only reads: on SQLite it neither takes nor waits for the
        write lock, and sees the last commit."""
        with (
            _unavailable_on_error(),
            self.engine.connect().execution_options(**{READ_ONLY: True}) as connection,
            connection.begin(),
        ):
            yield connection

    def insert(self, table: Any) -> Any:
        """An INSERT with this database's ON CONFLICT support."""
        return (postgresql.insert if self.postgres else sqlite.insert)(table)

    def wake_workers(self, connection: Connection) -> None:
        """Wake the workers of other processes when ``connection``'s transaction commits
        (PostgreSQL ``NOTIFY``; delivered on commit, so a woken worker always finds the
        work). Once per transaction is enough: PostgreSQL folds identical notifications."""
        self._notify(connection, WAKE_CHANNEL)

    def announce_events(self, connection: Connection) -> None:
        """Tell the live feeds of other processes, when ``connection``'s transaction
        commits, that it stored events (PostgreSQL ``NOTIFY``, as ``wake_workers``)."""
        self._notify(connection, FEED_CHANNEL)

    def _notify(self, connection: Connection, channel: str) -> None:
        if self.postgres:
            connection.execute(text("SELECT pg_notify(:channel, '')"), {"channel": channel})

    def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers."""
        with self.read() as connection:
            connection.execute(select(1))

    def check_schema(self) -> None:
        """Raise SchemaOutOfDate unless the database is migrated to the newest revision."""
        try:
            revision = current_revision(self.engine)
        except SQLAlchemyError as exc:
            raise StoreUnavailable(cannot_open(self.engine.url, exc)) from exc
        if revision != head_revision():
            raise SchemaOutOfDate(
                f"The database schema is at {revision or 'nothing'}, this payherald needs "
                f"{head_revision()}: run `payherald migrate` first."
            )

    def dispose(self) -> None:
        """Close every pooled connection (a command's last step)."""
        self.engine.dispose()


@contextmanager
def _unavailable_on_error() -> Iterator[None]:
    try:
        yield
    except DBAPIError as exc:
        # The driver's first line says what failed; psycopg adds hints on lines of their
        # own, which would break the one-line log and doctor's one-line check.
        reason = (str(exc.orig).strip().splitlines() or [""])[0]
        if isinstance(exc, DataError):
            # A value the database refuses (SQLSTATE class 22: a NUL in text, a string too
            # long for its column): the same write fails the same way every time.
            raise ValueNotStorable(
                f"The database refused a value: {type(exc.orig).__name__}: {reason}"
            ) from exc
        raise StoreUnavailable(
            f"The event store is unavailable: {type(exc.orig).__name__}: {reason}"
        ) from exc
    except SQLAlchemyError as exc:  # pool exhausted, connection invalidated...
        raise StoreUnavailable(f"The event store is unavailable: {exc}") from exc
