"""Cross-process wake-ups on PostgreSQL: LISTEN for the NOTIFY that queueing work sends
(the workers), or that storing events sends (the dashboard's live feed)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import psycopg
import structlog

from payherald.store import WAKE_CHANNEL

__all__ = ["listen", "listen_for_work"]

_log = structlog.get_logger("payherald.wakeup")


def listen_for_work(
    conninfo: str,
    on_wake: Callable[[], None],
    stop: threading.Event,
    *,
    reconnect_after: float = 2.0,
) -> None:
    """Call ``on_wake`` for every NOTIFY on the work channel until ``stop`` is set."""
    listen(conninfo, WAKE_CHANNEL, on_wake, stop, reconnect_after=reconnect_after)


def listen(
    conninfo: str,
    channel: str,
    on_wake: Callable[[], None],
    stop: threading.Event,
    *,
    reconnect_after: float = 2.0,
) -> None:
    """Call ``on_wake`` for every NOTIFY on ``channel`` until ``stop`` is set.

    A lost connection is re-opened; meanwhile the listener's own polling keeps it going.
    """
    while not stop.is_set():
        try:
            with psycopg.connect(conninfo, autocommit=True) as connection:
                connection.execute(f"LISTEN {channel}")
                # Something may have happened while we were not listening.
                on_wake()
                while not stop.is_set():
                    for _ in connection.notifies(timeout=1.0):
                        on_wake()
        except psycopg.Error as exc:
            _log.warning("listen_failed", channel=channel, error=str(exc), retry_in=reconnect_after)
            stop.wait(reconnect_after)
