"""Attribution (``Store.attribution``): the paylinks payherald texted, and each payment
credited to the message that brought it, written in the transaction that records the event
that tells it (see ``payherald.attribution``); and the revenue so credited, with what dunning
recovered (``Store.dunning``), per rule, channel, campaign and currency."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, literal, or_, select

from payherald.attribution import PAYLINK_RULE, Paylink, PaymentMade
from payherald.store.database import Database
from payherald.store.dunning import Dunning
from payherald.store.schema import attributions, notifications, paylinks, subject_aliases
from payherald.store.statuses import NotificationStatus as S

__all__ = ["Attribution"]


class Attribution:
    """The ``paylinks`` and ``attributions`` tables."""

    def __init__(self, *, db: Database, dunning: Dunning) -> None:
        self._db = db
        self._dunning = dunning

    # -- with the events ------------------------------------------------------------------

    def record_in(
        self,
        connection: Connection,
        items: Sequence[tuple[str, Paylink | None, PaymentMade | None]],
        now: datetime,
    ) -> None:
        """For each new event of ``items`` (its id, the paylink it texts, the payment it
        tells), in ``connection``'s transaction, after its notifications were queued: keep
        the paylink with the notification that texts it, and credit the payment to the
        message that brought it, unless an earlier event credited it. The failure texts of
        every payment of ``items`` are read in one statement (this is the webhook's
        transaction)."""
        for event_id, paylink, _ in items:
            if paylink is not None:
                self._keep_paylink_in(connection, event_id, paylink, now)
        payments = [(event_id, payment) for event_id, _, payment in items if payment is not None]
        if not payments:
            return
        failures = self._failure_credits(
            connection, {payment.payment_intent for _, payment in payments} - {None}
        )
        for event_id, payment in payments:
            credit = self._paylink_credit(connection, payment) or failures.get(
                payment.payment_intent
            )
            if credit is not None:
                self._credit_in(connection, event_id, payment, credit, now)

    def _keep_paylink_in(
        self, connection: Connection, event_id: str, paylink: Paylink, now: datetime
    ) -> None:
        notification = connection.execute(
            select(func.min(notifications.c.id)).where(notifications.c.event_id == event_id)
        ).scalar()
        connection.execute(
            self._db.insert(paylinks)
            .values(
                id=paylink.id,
                stripe_id=paylink.stripe_id,
                url=paylink.url,
                campaign=paylink.campaign,
                livemode=paylink.livemode,
                event_id=event_id,
                notification_id=notification,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=[paylinks.c.id])
        )

    def _credit_in(
        self,
        connection: Connection,
        event_id: str,
        payment: PaymentMade,
        credit: Mapping[str, Any],
        now: datetime,
    ) -> None:
        connection.execute(
            self._db.insert(attributions)
            .values(
                payment=payment.payment,
                event_id=event_id,
                livemode=payment.livemode,
                amount=payment.amount,
                currency=payment.currency,
                created_at=now,
                **credit,
            )
            .on_conflict_do_nothing(index_elements=[attributions.c.payment])
        )

    @staticmethod
    def _paylink_credit(connection: Connection, payment: PaymentMade) -> dict[str, Any] | None:
        """The paylink the payment followed, by the metadata payherald gave it or the link
        its session names, and the notification that texted it."""
        named = []
        if payment.paylink:
            named.append(paylinks.c.id == payment.paylink)
        if payment.stripe_link:
            named.append(paylinks.c.stripe_id == payment.stripe_link)
        if not named:
            return None
        row = connection.execute(
            select(
                paylinks.c.id,
                paylinks.c.campaign,
                paylinks.c.notification_id,
                notifications.c.rule,
                notifications.c.channel,
                notifications.c.status,
            )
            .select_from(
                paylinks.outerjoin(notifications, notifications.c.id == paylinks.c.notification_id)
            )
            .where(or_(*named))
            .limit(1)
        ).first()
        if row is None:
            return None  # not a link of this payherald's (another installation's, say)
        # A text that never went (opted out, failed) brought nothing by its channel: the
        # payment is the link's, with no channel.
        sent = row.status == S.SENT
        return {
            "notification_id": row.notification_id,
            "rule": row.rule or PAYLINK_RULE,
            "channel": row.channel if sent else None,
            "campaign": row.campaign,
            "paylink_id": row.id,
        }

    @staticmethod
    def _failure_credits(
        connection: Connection, intents: Collection[str | None]
    ) -> dict[str | None, dict[str, Any]]:
        """For each payment intent of ``intents``, the last customer message sent about a
        failed attempt of it, if any: its failed charges are linked to the intent as one
        payment (``Store.links``), and a failure's message is keyed on its charge."""
        if not intents:
            return {}
        asked = subject_aliases.alias("asked")
        linked = subject_aliases.alias("linked")
        # "payment:ch_1" (a linked alias) -> "failed_attempt:ch_1" (a failure's subject).
        attempt = literal("failed_attempt:") + func.substr(linked.c.alias, len("payment:") + 1)
        rows = connection.execute(
            select(
                asked.c.alias.label("asked"),
                notifications.c.id,
                notifications.c.rule,
                notifications.c.channel,
                notifications.c.sent_at,
            )
            .select_from(
                asked.join(linked, linked.c.canonical == asked.c.canonical).join(
                    notifications, notifications.c.subject == attempt
                )
            )
            .where(
                asked.c.alias.in_([f"payment:{intent}" for intent in intents]),
                linked.c.alias.like("payment:%"),
                notifications.c.recipient == "customer",
                notifications.c.status == S.SENT,
            )
        )
        latest: dict[str | None, tuple[tuple[Any, int], dict[str, Any]]] = {}
        for row in rows:
            intent = row.asked.removeprefix("payment:")
            order = (row.sent_at, row.id)
            if intent not in latest or order > latest[intent][0]:
                credit = {"notification_id": row.id, "rule": row.rule, "channel": row.channel}
                latest[intent] = (order, credit)
        return {intent: credit for intent, (_, credit) in latest.items()}

    # -- reading --------------------------------------------------------------------------

    def paylink(self, paylink_id: str) -> dict[str, Any] | None:
        """The paylink ``paylink_id`` as stored, with its notification's ``status``; None
        if there is none."""
        query = (
            select(paylinks, notifications.c.status)
            .select_from(
                paylinks.outerjoin(notifications, notifications.c.id == paylinks.c.notification_id)
            )
            .where(paylinks.c.id == paylink_id)
        )
        with self._db.read() as connection:
            row = connection.execute(query).mappings().first()
        return dict(row) if row is not None else None

    def revenue(self, since: datetime, *, livemode: bool = True) -> list[dict[str, Any]]:
        """The payments of ``livemode`` credited since ``since`` to a message, per rule,
        channel, campaign and currency, with their count (``payments``) and ``amount``:
        those a paylink or a failure message brought, and the invoices dunning recovered
        after a step was sent (a recovery with no step sent is no message's)."""
        query = (
            select(
                attributions.c.rule,
                attributions.c.channel,
                attributions.c.campaign,
                attributions.c.currency,
                func.count().label("payments"),
                func.coalesce(func.sum(attributions.c.amount), 0).label("amount"),
            )
            .where(attributions.c.livemode == livemode, attributions.c.created_at >= since)
            .group_by(
                attributions.c.rule,
                attributions.c.channel,
                attributions.c.campaign,
                attributions.c.currency,
            )
        )
        with self._db.read() as connection:
            rows = [dict(row) for row in connection.execute(query).mappings()]
        for row in rows:
            row["amount"] = int(row["amount"])
        recovered = self._dunning.recovery(since, livemode=livemode)["by_step"]
        rows += [
            {
                "rule": row["rule"],
                "channel": row["channel"],
                "campaign": None,
                "currency": row["currency"],
                "payments": row["invoices"],
                "amount": row["amount"],
            }
            for row in recovered
            if row["rule"] is not None
        ]
        return sorted(rows, key=lambda row: (str(row["currency"]), -row["amount"], row["rule"]))
