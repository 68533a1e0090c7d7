"""The worker: claims due send jobs, with their notifications, and hands them to the
sender, a few at a time; claims the reconcile jobs of notifications whose outcome is
unknown; reaps the leases of workers that vanished. The other kinds of job run on
``payherald.jobs.JobRunner``.

It waits on a wake-up (set by the server in the same process, or by PostgreSQL ``NOTIFY``
from another) and otherwise polls every ``poll_interval`` seconds.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import structlog

from payherald.clock import Clock
from payherald.exceptions import StoreUnavailable
from payherald.jobs import JobRunner
from payherald.sender import Sender
from payherald.store import ClaimedNotification, Store

__all__ = ["Worker", "worker_name"]

_log = structlog.get_logger("payherald.worker")

# How often expired leases are looked for, in seconds.
_REAP_EVERY = 5.0


def worker_name() -> str:
    """A name for one worker's claims, unique across hosts, processes and workers."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Worker:
    def __init__(
        self,
        *,
        store: Store,
        sender: Sender,
        clock: Clock,
        concurrency: int = 8,
        poll_interval: float = 1.0,
        lease: float = 120.0,
        jobs: JobRunner,
        worker_id: str | None = None,
    ) -> None:
        self._queue = store.queue
        self._sender = sender
        self._clock = clock
        self._concurrency = concurrency
        self._poll_interval = poll_interval
        self._lease = lease
        # The deferred work beside the sends: run here only by run_until_idle, else by a
        # thread of its own (Payherald.start_worker).
        self._jobs = jobs
        self.worker_id = worker_id or worker_name()
        self._wake = threading.Event()
        self._slots = threading.BoundedSemaphore(concurrency)
        # While sends are in flight, how many slots must be free before the next claim.
        self._claim_at_least = max(1, concurrency // 4)

    def wake(self) -> None:
        """Tell the worker there is new work (thread-safe, cheap)."""
        self._wake.set()

    # -- loops ------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Work until ``stop`` is set; then finish what is in flight and return."""
        self._sender.warm_up()
        _log.info("worker_started", worker_id=self.worker_id, concurrency=self._concurrency)
        last_reap = 0.0
        few_free_since: float | None = None
        with ThreadPoolExecutor(self._concurrency, thread_name_prefix="payherald-send") as pool:
            while not stop.is_set():
                free, claimed = 0, []
                try:
                    now = self._clock.now().timestamp()
                    if now - last_reap >= _REAP_EVERY:
                        last_reap = now
                        self._reap_and_reconcile()
                    self._wake.clear()
                    free = self._free_slots()
                    if 0 < free < self._claim_at_least:
                        # Busy: claim once a few slots are free, not slot by slot (a claim
                        # is a transaction, and a burst's drain is bound by them), or
                        # after a poll interval of waiting for them.
                        few_free_since = few_free_since or time.monotonic()
                        left = few_free_since + self._poll_interval - time.monotonic()
                        if left > 0:
                            self._wake.wait(left)
                            continue
                    few_free_since = None
                    claimed = self._queue.claim(
                        worker_id=self.worker_id, limit=free, lease=self._lease
                    )
                    for notification in claimed:
                        self._slots.acquire()
                        pool.submit(self._process_in_slot, notification)
                except StoreUnavailable as exc:
                    _log.error("store_unavailable", error=exc.message)
                except Exception:
                    # The loop must outlive any one failure, or the queue silently stops.
                    _log.exception("worker_loop_error")
                if not claimed or len(claimed) == free:
                    self._wake.wait(self._poll_interval)
        try:
            # The jobs of the last notifications it finished, left for the next claim.
            self._queue.discard_finished()
        except StoreUnavailable as exc:
            _log.error("store_unavailable", error=exc.message)
        _log.info("worker_stopped", worker_id=self.worker_id)

    def _free_slots(self) -> int:
        free = 0
        while self._slots.acquire(blocking=False):
            free += 1
        for _ in range(free):
            self._slots.release()
        return free

    def _process_in_slot(self, notification: ClaimedNotification) -> None:
        try:
            self._sender.process(notification)
        except Exception:
            _log.exception("notification_crashed", notification_id=notification.id)
        finally:
            self._slots.release()
            self._wake.set()

    def run_until_idle(self) -> int:
        """Process every notification due now, one at a time, and every due job; return
        how many notifications were handled. For tests and one-shot commands."""
        handled = 0
        self._reap_and_reconcile()
        while True:
            while claimed := self._queue.claim(
                worker_id=self.worker_id, limit=10, lease=self._lease
            ):
                for notification in claimed:
                    self._sender.process(notification)
                    handled += 1
            if not self._jobs.run_until_idle():
                return handled

    # -- crash recovery -----------------------------------------------------------------

    def _reap_and_reconcile(self) -> None:
        try:
            released, orphaned = self._queue.expire_leases()
            if released or orphaned:
                _log.warning("leases_expired", released=released, orphaned=orphaned)
            for notification in self._queue.claim_unknown(
                worker_id=self.worker_id, limit=20, lease=self._lease
            ):
                self._sender.reconcile(notification)
        except StoreUnavailable as exc:
            _log.error("store_unavailable", error=exc.message)
