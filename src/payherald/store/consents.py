"""Consent: the suppression list, the consent records, and the inbound messages.

An opt-out or opt-in is one transaction: the consent record and the change to the
suppression list are committed together, and so is the job that writes the change back to
the Stripe customer (kind ``WRITE_BACK_JOB``, run by ``stripe_sync``), so that it is
neither lost nor done twice. What a reply means, and how a number is read, is
``payherald.consent``'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, and_, delete, select, update

from payherald.clock import Clock
from payherald.store.database import Database
from payherald.store.jobs import Jobs
from payherald.store.questions import Answer, Questions, ReplyToQuestion
from payherald.store.schema import consents, events, inbound_messages, notifications, suppressions
from payherald.store.statuses import WriteBackStatus

__all__ = ["RECORD_FIELDS", "WRITE_BACK_JOB", "ConsentRow", "Consents"]

# The kind of job that writes a consent record to the Stripe customers messaged at its
# address; its payload names the record (``consent_id``).
WRITE_BACK_JOB = "consent.write_back"

# What ``Consents.records`` gives of a consent record (and the CSV export writes).
RECORD_FIELDS = ("address", "action", "channel", "words", "source", "created_at")


@dataclass(frozen=True, slots=True)
class ConsentRow:
    address: str
    action: Literal["opt_out", "opt_in"]
    words: str | None


class Consents:
    """Who agreed to what (``Store.consents``)."""

    def __init__(self, *, db: Database, clock: Clock, jobs: Jobs, questions: Questions) -> None:
        self._db = db
        self._clock = clock
        self._jobs = jobs
        self._questions = questions

    # -- recording --------------------------------------------------------------------

    def record(
        self,
        *,
        address: str,
        action: Literal["opt_out", "opt_in"],
        channel: str,
        words: str | None,
        source: str,
        write_back: bool = False,
    ) -> bool:
        """Record an opt-out or opt-in and apply it to the suppression list, in one
        transaction. Returns whether it changed anything (an opt-out of someone already out
        changes nothing, but is still recorded). With ``write_back``, a change is queued to
        be written to the Stripe customers messaged at ``address``."""
        with self._db.transaction() as connection:
            return self._apply(
                connection,
                address=address,
                action=action,
                channel=channel,
                words=words,
                source=source,
                write_back=write_back,
            )

    def record_reply(
        self,
        *,
        provider_id: str,
        sender: str,
        body: str,
        action: str | None,
        channel: str,
        answer: Answer | None = None,
        raw_sender: str | None = None,
        write_back: bool = False,
    ) -> tuple[bool, bool, ReplyToQuestion]:
        """Record an inbound message once per ``provider_id`` and, the first time, act on
        it, in one transaction: an opt-out (``action``) closes the number's open questions
        too; a YES or NO (``answer``) or other words go to its open question first
        (``Store.questions``), and a YES that answers one is not an opt-in; an opt-out or
        opt-in otherwise changes the suppression list. Returns (first time seen, whether
        consent changed, what it did to a question). A ``provider_id`` seen before is not
        acted on again, even once retention has blanked its row."""
        now = self._clock.now()
        nothing = ReplyToQuestion("none")  # what a keyword alone does to questions
        with self._db.transaction() as connection:
            new = (
                connection.execute(
                    self._db.insert(inbound_messages)
                    .values(
                        provider_id=provider_id,
                        sender=sender,
                        raw_sender=raw_sender,
                        body=body,
                        action=action,
                        received_at=now,
                    )
                    .on_conflict_do_nothing(index_elements=["provider_id"])
                    .returning(inbound_messages.c.provider_id)
                ).first()
                is not None
            )
            if not new:
                return False, False, nothing
            questioned = nothing
            suppressed = connection.execute(
                select(suppressions.c.address).where(suppressions.c.address == sender)
            ).first()
            # STOP, START and HELP are keywords whatever is open (an opt-out closes it), and
            # so is a YES from a number that opted out (a question is never sent to one); a
            # YES otherwise, a NO or other words go to the number's question first.
            if (action is None or answer is not None) and not (action == "opt_in" and suppressed):
                questioned = self._questions.reply_in(
                    connection, sender=sender, answer=answer, provider_id=provider_id
                )
            if action not in ("opt_out", "opt_in") or questioned.kind in ("answered", "closed"):
                return True, False, questioned
            changed = self._apply(
                connection,
                address=sender,
                action=action,
                channel=channel,
                words=body.strip(),
                source="reply",
                write_back=write_back,
            )
            return True, changed, questioned

    def import_rows(
        self, rows: Iterable[ConsentRow], *, source: str, write_back: bool = False
    ) -> int:
        """Apply ``rows`` in one transaction (all or none); returns how many changed a
        suppression. With ``write_back``, each change is queued for the Stripe customers
        messaged at that number, as ``record`` does."""
        with self._db.transaction() as connection:
            return sum(
                self._apply(
                    connection,
                    address=row.address,
                    action=row.action,
                    channel="csv",
                    words=row.words,
                    source=source,
                    write_back=write_back,
                )
                for row in rows
            )

    def upgrade_opt_out(
        self, *, legacy_address: str, address: str, channel: str, source: str, reason: str
    ) -> bool:
        """Record the opt-out suppressed under ``legacy_address`` under ``address`` too
        (with its ``reason``), unless, read again in the transaction that writes, the
        legacy row is gone or ``address`` has been spoken for since (``spoken_for``).
        Returns whether it was recorded."""
        with self._db.transaction() as connection:
            since = connection.execute(
                select(suppressions.c.created_at).where(suppressions.c.address == legacy_address)
            ).scalar_one_or_none()
            if since is None or _spoken_for(connection, address, since):
                return False
            self._apply(
                connection,
                address=address,
                action="opt_out",
                channel=channel,
                words=None,
                source=source,
                reason=reason,
            )
        return True

    def _apply(
        self,
        connection: Connection,
        *,
        address: str,
        action: str,
        channel: str,
        words: str | None,
        source: str,
        write_back: bool = False,
        reason: str | None = None,
    ) -> bool:
        now = self._clock.now()
        if action == "opt_out":
            changed = (
                connection.execute(
                    self._db.insert(suppressions)
                    .values(
                        address=address,
                        reason=reason or f"opted out ({source}: {words or action})",
                        source=source,
                        created_at=now,
                    )
                    .on_conflict_do_nothing(index_elements=["address"])
                    .returning(suppressions.c.address)
                ).first()
                is not None
            )
            # Whatever is asked of the number is closed with it: no answer will come.
            self._questions.close_in(connection, sender=address)
        else:
            changed = bool(
                connection.execute(
                    delete(suppressions).where(suppressions.c.address == address)
                ).rowcount
            )
        # A change is written to the Stripe customers messaged at the address by a job
        # (``stripe_sync``) queued with it: committed with the change itself, so it is
        # neither lost nor done twice.
        written_back = write_back and changed
        consent_id = connection.execute(
            consents.insert()
            .values(
                address=address,
                action=action,
                channel=channel,
                words=words,
                source=source,
                created_at=now,
                stripe_status=WriteBackStatus.PENDING.value if written_back else None,
            )
            .returning(consents.c.id)
        ).scalar_one()
        if written_back:
            self._jobs.enqueue_in(
                connection,
                WRITE_BACK_JOB,
                f"{WRITE_BACK_JOB}:{consent_id}",
                {"consent_id": consent_id},
            )
        return changed

    # -- reading ----------------------------------------------------------------------

    def records(self) -> list[dict[str, Any]]:
        """Every consent record (its ``RECORD_FIELDS``), oldest first."""
        with self._db.read() as connection:
            return [
                dict(row)
                for row in connection.execute(
                    select(*(consents.c[name] for name in RECORD_FIELDS)).order_by(consents.c.id)
                ).mappings()
            ]

    def suppressed(self) -> list[dict[str, Any]]:
        """The suppression list, oldest first."""
        with self._db.read() as connection:
            return [
                dict(row)
                for row in connection.execute(
                    select(suppressions).order_by(suppressions.c.created_at)
                ).mappings()
            ]

    def first_suppressed(self, addresses: Sequence[str]) -> tuple[str, str] | None:
        """The first of ``addresses`` that must not be messaged, and why; None if none
        (one query, whatever their number)."""
        if not addresses:
            return None
        with self._db.read() as connection:
            reasons = {
                address: reason
                for address, reason in connection.execute(
                    select(suppressions.c.address, suppressions.c.reason).where(
                        suppressions.c.address.in_(list(addresses))
                    )
                )
            }
        return next(((a, str(reasons[a])) for a in addresses if a in reasons), None)

    def suppression(self, address: str) -> str | None:
        """Why ``address`` must not be messaged, or None."""
        found = self.first_suppressed([address])
        return found[1] if found is not None else None

    def suppressions_by_age(self) -> list[tuple[str, str, datetime]]:
        """Every suppression's address, reason and time, oldest first (then by address)."""
        with self._db.read() as connection:
            rows = connection.execute(
                select(
                    suppressions.c.address, suppressions.c.reason, suppressions.c.created_at
                ).order_by(suppressions.c.created_at, suppressions.c.address)
            ).all()
        return [(address, str(reason), created_at) for address, reason, created_at in rows]

    def spoken_for(self, wanted: Sequence[tuple[str, datetime]]) -> list[bool]:
        """For each (address, since) of ``wanted``, in one read: whether the address is
        suppressed, or has a consent recorded at ``since`` or later."""
        with self._db.read() as connection:
            return [_spoken_for(connection, address, since) for address, since in wanted]

    # -- writing back to Stripe (stripe_sync) -----------------------------------------

    def write_back_record(self, consent_id: int) -> dict[str, Any] | None:
        """The consent record ``consent_id`` while its write-back is pending; None once
        it is settled (or if there is no such record)."""
        with self._db.read() as connection:
            row = (
                connection.execute(
                    select(consents).where(
                        consents.c.id == consent_id,
                        consents.c.stripe_status == WriteBackStatus.PENDING.value,
                    )
                )
                .mappings()
                .first()
            )
        return dict(row) if row is not None else None

    def write_back_targets(
        self, consent_id: int, address: str, *, recent: int
    ) -> tuple[int | None, list[str]]:
        """In one transaction: the id of a later consent record for ``address`` that is
        written back too (None if none), and, when there is none, the payloads of the
        events whose last ``recent`` notifications to a customer went to ``address``, most
        recent first."""
        with self._db.read() as connection:
            later = connection.execute(
                select(consents.c.id)
                .where(
                    consents.c.address == address,
                    consents.c.id > consent_id,
                    consents.c.stripe_status.is_not(None),
                )
                .limit(1)
            ).first()
            if later:
                return int(later[0]), []
            payloads = connection.execute(
                select(events.c.payload)
                .join(notifications, notifications.c.event_id == events.c.id)
                .where(notifications.c.to == address, notifications.c.recipient == "customer")
                .order_by(notifications.c.id.desc())
                .limit(recent)
            ).scalars()
            return None, list(payloads)

    def retry_write_back(self, consent_id: int, *, attempts: int, error: str) -> None:
        """Note on ``consent_id`` that its write-back failed, ``attempts`` times so far,
        and why (its job tries again)."""
        with self._db.transaction() as connection:
            connection.execute(
                update(consents)
                .where(consents.c.id == consent_id)
                .values(stripe_attempts=attempts, stripe_result=error)
            )

    def settle_write_back(
        self, consent_id: int, *, status: str, result: str, attempts: int
    ) -> None:
        """Finish the write-back of ``consent_id`` (if still pending) as ``status``."""
        with self._db.transaction() as connection:
            connection.execute(
                update(consents)
                .where(
                    and_(
                        consents.c.id == consent_id,
                        consents.c.stripe_status == WriteBackStatus.PENDING.value,
                    )
                )
                .values(
                    stripe_status=status,
                    stripe_result=result,
                    stripe_attempts=attempts,
                )
            )


def _spoken_for(connection: Connection, address: str, since: Any) -> bool:
    """Whether ``address`` is suppressed, or has a consent recorded at ``since`` or later."""
    suppressed_now = connection.execute(
        select(suppressions.c.address).where(suppressions.c.address == address)
    ).first()
    later = connection.execute(
        select(consents.c.id)
        .where(consents.c.address == address, consents.c.created_at >= since)
        .limit(1)
    ).first()
    return suppressed_now is not None or later is not None
