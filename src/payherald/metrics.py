"""Prometheus metrics: what came in, what went out, how long it took, what waits.

Each ``Metrics`` has a registry of its own, never prometheus_client's global one, so that
several payheralds built in one process (as tests do) do not clash. Counters and
histograms count what this process did. The queue gauges are read from the database at
each scrape, so every process reports the whole queue, whichever process filled it: with
several processes, aggregate them with ``max``, not ``sum``.

    payherald_events_total{type, outcome}          webhook requests (rejected ones: type "unknown")
    payherald_notifications_total{channel, status} outcomes the worker recorded
    payherald_queue_depth{status}                  notifications waiting, by state
    payherald_queue_oldest_age_seconds             how long the oldest due one has waited
    payherald_jobs{status}                         jobs (deferred work) by status
    payherald_ingest_seconds                       request in to answer ready (accepted events)
    payherald_end_to_end_seconds                   event received to provider accepted
    payherald_reconciliations_total{result}        scheduled reconciliations: ok, failed
    payherald_recovered_events_total               events reconciliation found undelivered
"""

from __future__ import annotations

from collections.abc import Iterator
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from payherald.exceptions import StoreUnavailable
from payherald.store import Store

__all__ = [
    "END_TO_END_BUCKETS",
    "EVENT_OUTCOMES",
    "INGEST_BUCKETS",
    "NOTIFICATION_STATUSES",
    "QUEUE_STATES",
    "Metrics",
    "QueueCollector",
]

_log = structlog.get_logger("payherald.metrics")

# What became of a webhook request: stored with notifications queued; an event id seen
# before; stored with nothing to send (no rule, or everything already notified); stored
# but planning failed (a bug of ours, kept for replay); not stored (503, Stripe retries);
# refused before parsing (bad signature, malformed, too large).
EVENT_OUTCOMES = ("queued", "duplicate", "nothing_to_do", "failed", "not_stored", "rejected")
# What the worker recorded for a notification. "refused": a channel refused it for good and
# the rule's next channel is tried; "unknown": the provider may or may not have it.
NOTIFICATION_STATUSES = ("sent", "failed", "skipped", "deferred", "retry", "unknown", "refused")
QUEUE_STATES = ("pending_due", "pending_scheduled", "claimed", "sending", "unknown")

# The answer is a database commit away: milliseconds, seconds when the disk or the
# database struggles.
INGEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Event to provider: well under a second when idle; seconds to minutes behind a rate
# limit, a burst or retries; hours for a message held by quiet hours.
END_TO_END_BUCKETS = (
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)


class Metrics:
    """payherald's metrics, in a registry of their own. With ``store``, the scrape also
    reads the work queue's gauges from it (see ``QueueCollector``)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, *, store: Store | None = None) -> None:
        self.registry = CollectorRegistry()
        self._events = Counter(
            "payherald_events",
            "Stripe webhook requests, by event type and outcome "
            "(queued, duplicate, nothing_to_do, failed, not_stored, rejected).",
            ["type", "outcome"],
            registry=self.registry,
        )
        self._notifications = Counter(
            "payherald_notifications",
            "Notification outcomes recorded by the worker, by channel and status "
            "(sent, failed, skipped, deferred, retry, unknown, refused).",
            ["channel", "status"],
            registry=self.registry,
        )
        self._ingest = Histogram(
            "payherald_ingest_seconds",
            "Time from a webhook request arriving to its answer being ready, for accepted events.",
            buckets=INGEST_BUCKETS,
            registry=self.registry,
        )
        self._end_to_end = Histogram(
            "payherald_end_to_end_seconds",
            "Time from an event being received to the provider accepting its message.",
            buckets=END_TO_END_BUCKETS,
            registry=self.registry,
        )
        self._reconciliations = Counter(
            "payherald_reconciliations",
            "Scheduled reconciliations with Stripe's event list, by result (ok, failed).",
            ["result"],
            registry=self.registry,
        )
        self._recovered = Counter(
            "payherald_recovered_events",
            "Events a scheduled reconciliation found at Stripe that no webhook had delivered.",
            registry=self.registry,
        )
        # A series that appears at 1 hides its first increase from rate() and increase():
        # start the ones alerts watch at 0.
        self._events.labels(type="unknown", outcome="rejected")
        for result in ("ok", "failed"):
            self._reconciliations.labels(result=result)
        if store is not None:
            self.registry.register(QueueCollector(store))

    def event(self, event_type: str, outcome: str) -> None:
        """Count a webhook request about a verified ``event_type`` that ended in ``outcome``."""
        self._events.labels(type=event_type, outcome=outcome).inc()

    def rejected(self) -> None:
        """Count a webhook request refused before its event could be trusted or read."""
        self._events.labels(type="unknown", outcome="rejected").inc()

    def notification(self, channel: str, status: str) -> None:
        """Count an outcome the worker recorded for a notification on ``channel``."""
        self._notifications.labels(channel=channel, status=status).inc()

    def reconciled(self, *, recovered: int) -> None:
        """Count a scheduled reconciliation that finished, and the events it brought in."""
        self._reconciliations.labels(result="ok").inc()
        self._recovered.inc(recovered)

    def reconcile_failed(self) -> None:
        self._reconciliations.labels(result="failed").inc()

    def observe_ingest(self, seconds: float) -> None:
        self._ingest.observe(seconds)

    def observe_end_to_end(self, seconds: float) -> None:
        self._end_to_end.observe(max(0.0, seconds))

    def exposition(self) -> bytes:
        """Every metric in Prometheus' text format (reads the queue from the database)."""
        return generate_latest(self.registry)

    def serve(self, *, port: int, host: str = "127.0.0.1") -> WSGIServer:
        """Serve ``GET /metrics`` on ``host:port`` from a daemon thread, for a process
        without the HTTP app such as ``payherald worker``; ``shutdown()`` and
        ``server_close()`` on the answer stop it."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server


class QueueCollector(Collector):
    """The work queue's and the job queue's gauges, read from the store at each scrape
    (one query each)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def describe(self) -> Iterator[Metric]:
        # Names only, so that registering never touches the database.
        yield _depth()
        yield _oldest()
        yield _jobs()

    def collect(self) -> Iterator[Metric]:
        try:
            stats = self._store.queue_stats()
        except StoreUnavailable as exc:
            # The counters are still worth scraping; the gauges go missing, which
            # `absent(payherald_queue_depth)` can alert on.
            _log.warning("metrics_queue_unavailable", error=exc.message)
            return
        depth = _depth()
        for state in QUEUE_STATES:
            depth.add_metric([state], stats.depth.get(state, 0))
        yield depth
        oldest = _oldest()
        oldest.add_metric([], stats.oldest_due_age)
        yield oldest
        try:
            counts = self._store.jobs.counts()
        except StoreUnavailable as exc:
            _log.warning("metrics_queue_unavailable", error=exc.message)
            return
        jobs = _jobs()
        for status, count in counts.items():
            jobs.add_metric([status.value], count)
        yield jobs


def _depth() -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "payherald_queue_depth",
        "Notifications waiting, by state: pending_due (due now), pending_scheduled (a retry, "
        "or quiet hours, later), claimed, sending, unknown (being reconciled).",
        labels=["status"],
    )


def _oldest() -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "payherald_queue_oldest_age_seconds",
        "Seconds since the oldest pending notification that is due now became due; 0 when none is.",
    )


def _jobs() -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "payherald_jobs",
        "Jobs (deferred work of every kind), by status: pending, running, done, failed "
        "(failed on every attempt: its last_error says why).",
        labels=["status"],
    )
