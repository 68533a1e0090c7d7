"""Writing opt-outs and opt-ins back to the Stripe customer.

When someone replies STOP (or START), or an operator runs ``payherald optout``, the consent
record is committed with ``stripe_status = 'pending'`` in the same transaction as the change
to the suppression list. The worker then sets, on every Stripe customer payherald has
messaged at that number::

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
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

import stripe
import structlog

from payherald.clock import Clock
from payherald.store import Store

__all__ = ["OPTED_OUT_AT_KEY", "OPTED_OUT_KEY", "ConsentWriteBack", "customers_of_events"]

_log = structlog.get_logger("payherald.stripe_sync")

OPTED_OUT_KEY = "payherald_opted_out"
OPTED_OUT_AT_KEY = "payherald_opted_out_at"
# How long one write-back may take before another worker may pick it up again.
_LEASE = timedelta(minutes=2)
_MAX_ATTEMPTS = 10
# Notifications looked at to find the customers behind a number.
_RECENT = 200


class ConsentWriteBack:
    def __init__(
        self,
        *,
        store: Store,
        client: stripe.StripeClient,
        clock: Clock,
        backoff: Callable[[int], float] = lambda attempt: min(3600.0, 10.0 * 2**attempt),
    ) -> None:
        self._store = store
        self._client = client
        self._clock = clock
        self._backoff = backoff

    def run_due(self, limit: int = 20) -> int:
        """Write back the consent records that are due; returns how many were settled."""
        settled = 0
        for row in self._claim(limit):
            if self._write(row):
                settled += 1
        return settled

    def _claim(self, limit: int) -> list[dict[str, Any]]:
        return self._store.consents.claim_write_backs(limit, lease=_LEASE)

    def _write(self, row: dict[str, Any]) -> bool:
        log = _log.bind(consent_id=row["id"], action=row["action"])
        later, payloads = self._store.consents.write_back_targets(
            row["id"], row["address"], recent=_RECENT
        )
        customers = customers_of_events(payloads)
        if later is not None:
            self._settle(row, "superseded", f"consent record {later} came after it")
            return True
        if not customers:
            self._settle(row, "no_customer", "no Stripe customer has been messaged at this number")
            log.info("consent_write_back", outcome="no_customer")
            return True
        opted_out = row["action"] == "opt_out"
        metadata = {
            OPTED_OUT_KEY: "true" if opted_out else "",
            OPTED_OUT_AT_KEY: row["created_at"].strftime("%Y-%m-%dT%H:%M:%SZ") if opted_out else "",
        }
        written, gone = [], []
        try:
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
        except stripe.StripeError as exc:
            return self._retry(row, f"{type(exc).__name__}: {exc.user_message or exc}", log)
        result = "updated " + ", ".join(written) if written else "updated none"
        if gone:
            result += "; could not update " + "; ".join(gone)
        self._settle(row, "done", result)
        log.info("consent_write_back", outcome="done", customers=written, failed=gone)
        return True

    def _retry(self, row: dict[str, Any], error: str, log: Any) -> bool:
        attempts = row["stripe_attempts"] + 1
        if attempts >= _MAX_ATTEMPTS:
            self._settle(row, "failed", f"gave up after {attempts} attempts: {error}", attempts)
            log.warning("consent_write_back", outcome="failed", error=error)
            return True
        self._store.consents.retry_write_back(
            row["id"],
            attempts=attempts,
            due_at=self._clock.now() + timedelta(seconds=self._backoff(attempts)),
            error=error,
        )
        log.warning("consent_write_back", outcome="retry", error=error)
        return False

    def _settle(
        self, row: dict[str, Any], status: str, result: str, attempts: int | None = None
    ) -> None:
        self._store.consents.settle_write_back(
            row["id"],
            status=status,
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
