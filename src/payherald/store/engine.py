"""Engines and migrations: SQLite (WAL, the default) and PostgreSQL through psycopg 3."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy.exc import SQLAlchemyError

from payherald.exceptions import StoreUnavailable
from payherald.files import create_private

__all__ = [
    "READ_ONLY",
    "cannot_open",
    "create_store_engine",
    "current_revision",
    "head_revision",
    "migrate",
    "unreachable_advice",
]

_MIGRATIONS = Path(__file__).parent.parent / "migrations"
# How long a SQLite writer waits for another to finish before giving up (seconds).
_SQLITE_BUSY_TIMEOUT = 30.0
# The execution option that marks a transaction as a read: on SQLite it begins DEFERRED.
READ_ONLY = "payherald_read_only"


def create_store_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url`` with the settings payherald relies on.

    On SQLite: a database file that does not exist yet is created readable by its owner
    only (0600, whatever the umask; SQLite gives its -wal and -shm files the same mode),
    for it holds phone numbers, message bodies and raw payloads; WAL (readers never block
    the writer), ``synchronous=FULL`` (a committed event survives a power cut, as promised
    to Stripe when we answer 2xx), foreign keys on, and every transaction opened with
    ``BEGIN IMMEDIATE`` so two writers queue for the lock instead of deadlocking when a
    read turns into a write; a transaction with the execution option ``READ_ONLY`` is a
    plain ``BEGIN``, for reads that must not wait.
    """
    if url.startswith("sqlite"):
        _create_private(make_url(url).database)
        engine = create_engine(
            url,
            connect_args={"timeout": _SQLITE_BUSY_TIMEOUT, "check_same_thread": False},
            **kwargs,
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def _create_private(database: str | None) -> None:
    """Create the SQLite file ``database`` empty with mode 0600 if it does not exist; an
    existing file is left as it is (``doctor`` warns when others may read it)."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    # A directory that is missing or read-only: SQLite's own error says so on connect.
    with contextlib.suppress(OSError):
        create_private(database)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide where transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if not engine.url.database or engine.url.database == ":memory:":
            cursor.execute("PRAGMA journal_mode=MEMORY")
        else:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A read (execution option READ_ONLY) takes no lock: under WAL it sees the last
        # commit and never waits for a writer.
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision; safe to run on an up-to-date database.
    Raises StoreUnavailable (``cannot_open``'s sentence) when the database cannot be
    opened or migrated."""
    try:
        command.upgrade(_alembic_config(engine), "head")
    except SQLAlchemyError as exc:
        raise StoreUnavailable(cannot_open(engine.url, exc)) from exc


def head_revision() -> str:
    head = ScriptDirectory(str(_MIGRATIONS)).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None when it has never been migrated."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def unreachable_advice(url: str | URL) -> str:
    """What to check when the database at ``url`` cannot be opened, for its kind."""
    if make_url(url).get_backend_name() == "postgresql":
        return (
            "check that PostgreSQL is running and accepts connections from here at that host "
            "and port, and that the user, password and database in PAYHERALD_DATABASE_URL "
            "are right"
        )
    return "check PAYHERALD_DATABASE_URL: the SQLite file's directory must exist and be writable"


def cannot_open(url: str | URL, exc: Exception) -> str:
    """The sentence for a database that cannot be opened: where (without its password),
    why (the driver's first line), and what to check."""
    parsed = make_url(url)
    shown = parsed.set(drivername=parsed.get_backend_name()).render_as_string(hide_password=True)
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    reason = lines[0].rstrip(".") if lines else type(cause).__name__
    return f"Cannot open the database at {shown} ({reason}); {unreachable_advice(parsed)}."
