"""Dunning on older Stripe API versions, named, on SQLite and PostgreSQL: the invoice's
failure and payment in each version's shapes (before basil an invoice names its
subscription and payment at the top; from basil under ``parent`` and through invoice
payments) make the same one sequence, ended the same way."""

from __future__ import annotations

import copy

import pytest

from payherald.simulate import build_renewal_failure_events
from tests.integration.test_dunning import DAY, GRACE, PHONE, Stripe, keyless

__all__ = ["keyless"]  # the fixture, used by name

VERSIONS = ["2024-06-20", "2024-10-28.acacia", "2025-03-31.basil"]


def fail_in(stripe: Stripe, version: str) -> dict[str, object]:
    events = build_renewal_failure_events(
        now=stripe.clock.now(), phone=PHONE, livemode=True, api_version=version
    )
    for event in events:
        assert event["api_version"] == version
        stripe.send(event)
    stripe.later(GRACE + 1)
    return events[0]


@pytest.mark.parametrize("version", VERSIONS)
def test_an_older_versions_failure_starts_one_sequence_and_its_payment_ends_it(
    keyless: Stripe, version: str
) -> None:
    failed = fail_in(keyless, version)
    retry = copy.deepcopy(failed)  # Stripe's retry of the payment, a day later
    retry["id"] += "_retry"
    retry["data"]["object"]["attempt_count"] = 2
    keyless.later(DAY)
    keyless.send(retry)
    keyless.later(3 * DAY)
    assert keyless.steps() == {
        "invoice_payment_failed": "sent",
        "dunning_reminder": "sent",
        "dunning_final": "pending",
    }
    paid = copy.deepcopy(failed)
    paid["id"] += "_paid"
    paid["type"] = "invoice.payment_succeeded"
    paid["data"]["object"].update(status="paid", amount_paid=paid["data"]["object"]["amount_due"])
    keyless.send(paid)
    keyless.later(4 * DAY)
    assert keyless.steps()["dunning_final"] == "skipped"
    assert len(keyless.texts()) == 2
    sequence = keyless.ph.store.dunning.get(failed["data"]["object"]["id"])
    assert sequence is not None
    assert (sequence["status"], sequence["recovered_rule"]) == ("recovered", "dunning_reminder")
    # The subscription is read from where the version keeps it.
    assert sequence["subscription_id"] is not None
    assert sequence["subscription_id"].startswith("sub_")
