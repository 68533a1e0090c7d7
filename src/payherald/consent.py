"""Consent: what a reply means (STOP, START, HELP), and the records of who agreed to what.

A reply is a keyword only when the keyword is the whole message, in any case, with spaces
and punctuation around it ignored: "stop", " Stop! ", "OPT OUT." opt out; "please stop
texting me about my order" is an ordinary reply and changes nothing.
"""

from __future__ import annotations

import re
from typing import Literal

from sqlalchemy import Connection, delete

from payherald.store import Store
from payherald.tables import consents, inbound_messages, suppressions

__all__ = [
    "HELP",
    "OPT_IN",
    "OPT_OUT",
    "Action",
    "classify_reply",
    "record_consent",
    "record_reply",
]

Action = Literal["opt_out", "opt_in", "help"]

OPT_OUT = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPT OUT", "OPTOUT"}
)
OPT_IN = frozenset({"START", "YES", "UNSTOP"})
HELP = frozenset({"HELP", "INFO"})

_NOT_WORD = re.compile(r"[^\w]+")


def classify_reply(text: str) -> Action | None:
    """The keyword ``text`` is, if it is one."""
    words = " ".join(_NOT_WORD.sub(" ", text).split()).upper()
    if words in OPT_OUT:
        return "opt_out"
    if words in OPT_IN:
        return "opt_in"
    if words in HELP:
        return "help"
    return None


def record_consent(
    store: Store,
    *,
    address: str,
    action: Literal["opt_out", "opt_in"],
    channel: str,
    words: str | None,
    source: str,
) -> bool:
    """Record an opt-out or opt-in and apply it to the suppression list, in one
    transaction. Returns whether it changed anything (an opt-out of someone already out
    changes nothing, but is still recorded)."""
    with store.transaction() as connection:
        return _apply(
            store,
            connection,
            address=address,
            action=action,
            channel=channel,
            words=words,
            source=source,
        )


def record_reply(
    store: Store, *, provider_id: str, sender: str, body: str, channel: str
) -> tuple[bool, Action | None, bool]:
    """Record an inbound message once per ``provider_id`` and act on its keyword.
    Returns (first time seen, keyword, whether consent changed)."""
    action = classify_reply(body)
    now = store.clock.now()
    with store.transaction() as connection:
        new = (
            connection.execute(
                store.insert(inbound_messages)
                .values(
                    provider_id=provider_id,
                    sender=sender,
                    body=body,
                    action=action,
                    received_at=now,
                )
                .on_conflict_do_nothing(index_elements=["provider_id"])
                .returning(inbound_messages.c.provider_id)
            ).first()
            is not None
        )
        if not new or action not in ("opt_out", "opt_in"):
            return new, action, False
        changed = _apply(
            store,
            connection,
            address=sender,
            action=action,
            channel=channel,
            words=body.strip(),
            source="reply",
        )
        return True, action, changed


def _apply(
    store: Store,
    connection: Connection,
    *,
    address: str,
    action: str,
    channel: str,
    words: str | None,
    source: str,
) -> bool:
    now = store.clock.now()
    connection.execute(
        consents.insert().values(
            address=address,
            action=action,
            channel=channel,
            words=words,
            source=source,
            created_at=now,
        )
    )
    if action == "opt_out":
        return (
            connection.execute(
                store.insert(suppressions)
                .values(
                    address=address,
                    reason=f"opted out ({source}: {words or action})",
                    source=source,
                    created_at=now,
                )
                .on_conflict_do_nothing(index_elements=["address"])
                .returning(suppressions.c.address)
            ).first()
            is not None
        )
    return bool(
        connection.execute(delete(suppressions).where(suppressions.c.address == address)).rowcount
    )
