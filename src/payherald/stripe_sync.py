"""Writing opt-outs and opt-ins back to the Stripe customer.

When someone replies STOP (or START), or an operator runs ``payherald optout``, the consent
record is committed with ``stripe_status = 'pending'``, and a job that writes it back
(``WRITE_BACK_JOB``), in the same transaction as the change to the suppression list. The
job runner then sets, on every Stripe customer payherald has messaged at that number::

    payherald_opted_out = "true"            # "" on opting back in, which Stripe deletes
    payherald_opted_out_at = "2026-11-22T13:37:00Z"

so that the rest of the business (support, a CRM, a Stripe search) sees it. Each update
carries an idempotency key made from the consent record and the customer, so a retry after
a crash or a timeout changes nothing twice. A record made obsolete by a later one for the
same number is not written (``superseded``): the last word is the one Stripe keeps. The
records are read and settled through ``Store.consents``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import stripe
import structlog

from payherald.jobs import Job, JobRunner
from payherald.store import Store
from payherald.store.consents import WRITE_BACK_JOB
from payherald.store.statuses import WriteBackStatus

__all__ = ["OPTED_OUT_AT_KEY", "OPTED_OUT_KEY", "ConsentWriteBack", "customers_of_events"]

_log = structlog.get_logger("payherald.stripe_sync")

OPTED_OUT_KEY = "payherald_opted_out"
OPTED_OUT_AT_KEY = "payherald_opted_out_at"
# How long one write-back may take before another worker may take its job again.
_LEASE = 120.0
_MAX_ATTEMPTS = 10
# The first retry waits 20 to 40 s, each next one twice as long, up to an hour.
_RETRY_BASE = 40.0
# Notifications looked at to find the customers behind a number.
_RECENT = 200


class ConsentWriteBack:
    """The handler of write-back jobs (``WRITE_BACK_JOB``), one consent record each."""

    def __init__(self, *, store: Store, client: stripe.StripeClient) -> None:
        self._store = store
        self._client = client

    def register(self, runner: JobRunner) -> None:
        """Run write-back jobs on ``runner``: retried after a Stripe error, with backoff,
        and given up after ten attempts."""
        runner.register(
            WRITE_BACK_JOB,
            self.handle,
            lease=_LEASE,
            max_attempts=_MAX_ATTEMPTS,
            retry_base=_RETRY_BASE,
            retry_cap=3600.0,
        )

    def handle(self, job: Job) -> None:
        """Write the consent record of ``job`` back. Whatever stops it (a Stripe error,
        the store) is noted on the record and raised, for the job to be tried again; on
        the last attempt the record is settled as ``failed``: the job's attempts are the
        record's."""
        row = self._store.consents.write_back_record(int(job.payload["consent_id"]))
        if row is None:
            return  # settled already: a job run again after its lease ran out
        log = _log.bind(consent_id=row["id"], action=row["action"])
        try:
            self._write(row, log)
        except Exception as exc:
            reason = exc.user_message if isinstance(exc, stripe.StripeError) else None
            self._failed(row, f"{type(exc).__name__}: {reason or exc}", job.attempts + 1, log)
            raise

    def _write(self, row: dict[str, Any], log: Any) -> None:
        later, payloads = self._store.consents.write_back_targets(
            row["id"], row["address"], recent=_RECENT
        )
        customers = customers_of_events(payloads)
        if later is not None:
            self._settle(row, WriteBackStatus.SUPERSEDED, f"consent record {later} came after it")
            return
        if not customers:
            self._settle(
                row,
                WriteBackStatus.NO_CUSTOMER,
                "no Stripe customer has been messaged at this number",
            )
            log.info("consent_write_back", outcome="no_customer")
            return
        opted_out = row["action"] == "opt_out"
        metadata = {
            OPTED_OUT_KEY: "true" if opted_out else "",
            OPTED_OUT_AT_KEY: row["created_at"].strftime("%Y-%m-%dT%H:%M:%SZ") if opted_out else "",
        }
        written, gone = [], []
        for customer in customers:
            try:
                self._client.v1.customers.update(
                    customer,
                    params={"metadata": metadata},
                    options={"idempotency_key": f"payherald-consent-{row['id']}-{customer}"},
                )
                written.append(customer)
            except stripe.InvalidRequestError as exc:
                gone.append(f"{customer} ({exc.user_message or exc})")  # deleted, say
        result = "updated " + ", ".join(written) if written else "updated none"
        if gone:
            result += "; could not update " + "; ".join(gone)
        self._settle(row, WriteBackStatus.DONE, result)
        log.info("consent_write_back", outcome="done", customers=written, failed=gone)

    def _failed(self, row: dict[str, Any], error: str, attempts: int, log: Any) -> None:
        if attempts >= _MAX_ATTEMPTS:
            self._settle(
                row, WriteBackStatus.FAILED, f"gave up after {attempts} attempts: {error}", attempts
            )
            log.warning("consent_write_back", outcome="failed", error=error)
            return
        self._store.consents.retry_write_back(row["id"], attempts=attempts, error=error)
        log.warning("consent_write_back", outcome="retry", error=error)

    def _settle(
        self, row: dict[str, Any], status: WriteBackStatus, result: str, attempts: int | None = None
    ) -> None:
        self._store.consents.settle_write_back(
            row["id"],
            status=status.value,
            result=result,
            attempts=attempts if attempts is not None else row["stripe_attempts"],
        )


def customers_of_events(payloads: Iterable[str]) -> list[str]:
    """The Stripe customers of the events whose ``payloads`` are given, each once, in
    their order (``Consents.write_back_targets`` gives those messaged at a number, most
    recent first)."""
    found: list[str] = []
    for payload in payloads:
        customer = _customer_of(json.loads(payload))
        if customer and customer not in found:
            found.append(customer)
    return found


def _customer_of(payload: dict[str, Any]) -> str | None:
    obj = payload.get("data", {}).get("object", {})
    if obj.get("object") == "customer":
        return str(obj.get("id") or "") or None
    customer = obj.get("customer")
    if isinstance(customer, dict):
        customer = customer.get("id")
    return customer if isinstance(customer, str) and customer.startswith("cus_") else None
