"""Consent: what a reply means (STOP, START, HELP; YES or NO to a question), and the records
of who agreed to what (kept by ``Store.consents``, ``payherald.store.consents``).

A YES or NO (``answer_of``) answers the number's latest open question first (the fraud
check, ``payherald.fraud``): YES is then an answer, not an opt-in. STOP always opts out,
and closes what is open.

A reply is a keyword only when the keyword is the whole message, in any case, with spaces
and punctuation around it ignored: "stop", " Stop! ", "OPT OUT." opt out; "please stop
texting me about my order" is an ordinary reply and changes nothing.

Consent is recorded under the number in E.164, the form payherald sends to, however the
reply's sender was written ("4155550123", "(415) 555-0123", "whatsapp:+1 415 555 0123"):
``reply_sender`` reads it as ``optout add`` and ``optout import`` read a number.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from typing import Any, Literal, TextIO

import structlog

from payherald.recipients import mask_phone, normalise_phone
from payherald.store import Store
from payherald.store.consents import RECORD_FIELDS, ConsentRow
from payherald.store.questions import Answer, ReplyToQuestion

__all__ = [
    "HELP",
    "NO",
    "OPT_IN",
    "OPT_OUT",
    "YES",
    "Action",
    "ConsentRow",
    "LegacyOptOut",
    "Reply",
    "answer_of",
    "classify_reply",
    "legacy_opt_outs",
    "must_not_be_messaged",
    "neutralise_cell",
    "read_consent_csv",
    "record_reply",
    "reply_sender",
    "upgrade_legacy_opt_outs",
    "write_consent_csv",
]

_log = structlog.get_logger("payherald.consent")

Action = Literal["opt_out", "opt_in", "help"]

OPT_OUT = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPT OUT", "OPTOUT"}
)
OPT_IN = frozenset({"START", "YES", "UNSTOP"})
HELP = frozenset({"HELP", "INFO"})
# The answers to a question texted to the customer (the fraud check). YES is an opt-in
# keyword too: to an open question it is an answer, not an opt-in.
YES = frozenset({"YES", "Y"})
NO = frozenset({"NO", "N"})

_NOT_WORD = re.compile(r"[^\w]+")


def _words(text: str) -> str:
    return " ".join(_NOT_WORD.sub(" ", text).split()).upper()


def classify_reply(text: str) -> Action | None:
    """The keyword ``text`` is, if it is one."""
    words = _words(text)
    if words in OPT_OUT:
        return "opt_out"
    if words in OPT_IN:
        return "opt_in"
    if words in HELP:
        return "help"
    return None


def answer_of(text: str) -> Answer | None:
    """The answer ``text`` is to a yes-or-no question, if it is one ("yes", " Y! ", "No.")."""
    words = _words(text)
    if words in YES:
        return "yes"
    if words in NO:
        return "no"
    return None


_WHATSAPP = "whatsapp:"
# A number in E.164 as Twilio writes a sender: a country code and 8 to 15 digits in all.
_E164_SENDER = re.compile(r"\+[1-9]\d{7,14}")


def reply_sender(raw: str, *, default_region: str) -> tuple[str, str | None]:
    """The channel a reply came by (``sms`` or ``whatsapp``) and its sender in E.164, or
    None when ``raw`` (Twilio's From) is not a phone number. Numbers written without a
    country code are read in ``default_region``. A sender already written in E.164 is
    taken as it is even when the phone-number metadata does not know it as valid (a new
    range): a STOP is recorded rather than dropped."""
    raw = raw.strip()
    whatsapp = raw[: len(_WHATSAPP)].lower() == _WHATSAPP
    number = raw[len(_WHATSAPP) :] if whatsapp else raw
    address = normalise_phone(number, default_region)
    if address is None and _E164_SENDER.fullmatch(number):
        address = number
    return ("whatsapp" if whatsapp else "sms"), address


@dataclass(frozen=True, slots=True)
class Reply:
    """What an inbound message came to: whether it was new (a replay acts on nothing), its
    keyword, whether consent changed, and what it did to its number's questions."""

    new: bool
    action: Action | None
    changed: bool
    question: ReplyToQuestion


def record_reply(
    store: Store,
    *,
    provider_id: str,
    sender: str,
    body: str,
    channel: str,
    raw_sender: str | None = None,
    write_back: bool = False,
) -> Reply:
    """Record an inbound message once per ``provider_id`` and act on it: a keyword, or an
    answer to the number's open question (see ``Consents.record_reply``). ``sender`` is
    the E.164 number consent is recorded under (see ``reply_sender``), ``raw_sender`` the
    From field as received, kept beside it. A ``provider_id`` seen before is not acted on
    again, even once retention has blanked its row (``retention``): a replayed request,
    however old, changes nothing."""
    action = classify_reply(body)
    new, changed, question = store.consents.record_reply(
        provider_id=provider_id,
        sender=sender,
        body=body,
        action=action,
        answer=answer_of(body),
        channel=channel,
        raw_sender=raw_sender,
        write_back=write_back,
    )
    return Reply(new, action, changed, question)


CSV_FIELDS = RECORD_FIELDS
# What a spreadsheet takes as the start of a formula (OWASP's "CSV injection" list).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# A phone number in E.164 is a constant to a spreadsheet, not a formula: it is left as it
# is, so that the file feeds other tools too.
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")


def neutralise_cell(value: str) -> str:
    """``value`` as a CSV cell a spreadsheet never runs: one that would start a formula
    (``=HYPERLINK(...)``, ``-2+3``, ``@SUM(A1)``) gets a leading single quote, which
    ``read_consent_csv`` takes off again. An E.164 number (``+14155550123``) is kept."""
    if value.startswith(_FORMULA_STARTS) and not _E164.fullmatch(value):
        return f"'{value}"
    return value


def _unneutralised(value: str) -> str:
    if value.startswith("'") and value[1:].startswith(_FORMULA_STARTS):
        return value[1:]
    return value


def write_consent_csv(stream: TextIO, records: list[dict[str, Any]]) -> None:
    """Write ``records`` (as ``Store.consents.records`` gives them) as CSV, every cell that could
    start a formula neutralised."""
    writer = csv.writer(stream)
    writer.writerow(CSV_FIELDS)
    for record in records:
        cells = {**record, "created_at": record["created_at"].isoformat()}
        writer.writerow(
            neutralise_cell(str(cells[name])) if cells[name] is not None else ""
            for name in CSV_FIELDS
        )


def read_consent_csv(text: str, *, default_region: str) -> tuple[list[ConsentRow], list[str]]:
    """Rows of an opt-out list, and a sentence per bad row naming its line.

    The header needs ``phone`` (or ``address``); ``action`` (``opt_out``, the default, or
    ``opt_in``) and ``words`` (or ``reason``) are optional. Numbers without a country code
    are read in ``default_region``.
    """
    reader = csv.DictReader(io.StringIO(text))
    fields = {name.strip().lower() for name in reader.fieldnames or ()}
    column = "phone" if "phone" in fields else "address" if "address" in fields else None
    if column is None:
        return [], [
            "line 1: the header needs a 'phone' column (and may have 'action' and 'words')."
        ]
    rows, problems = [], []
    for record in reader:
        line = reader.line_num
        # A cell our own export neutralised ("'+14155550123") reads as written.
        values = {
            key.strip().lower(): _unneutralised((value or "").strip())
            for key, value in record.items()
            if key is not None
        }
        number = normalise_phone(values.get(column, ""), default_region)
        action = values.get("action") or "opt_out"
        if number is None:
            problems.append(f"line {line}: {values.get(column)!r} is not a phone number.")
        elif action not in ("opt_out", "opt_in"):
            problems.append(f"line {line}: action {action!r} must be opt_out or opt_in.")
        else:
            rows.append(
                ConsentRow(
                    address=number,
                    action=action,  # type: ignore[arg-type]
                    words=values.get("words") or values.get("reason") or None,
                )
            )
    return rows, problems


def must_not_be_messaged(address: str, reason: str) -> str:
    """Why a message to someone on the suppression list is not sent, their address
    masked."""
    return f"{mask_phone(address)} must not be messaged: {reason}"


@dataclass(frozen=True, slots=True)
class LegacyOptOut:
    """An opt-out an older payherald recorded under the sender as Twilio wrote it
    (``4155550123``), which the exact match at send time never finds."""

    address: str
    # Its E.164 form read in the default region, or None when it does not read.
    reads_as: str | None
    channel: str
    reason: str
    # Its E.164 form is suppressed, or has had a consent recorded since: nothing to do.
    settled: bool


def legacy_opt_outs(store: Store, *, default_region: str) -> list[LegacyOptOut]:
    """The suppressions whose address is neither in E.164 nor an email address, each
    read as ``reply_sender`` reads a sender now."""
    rows = [
        (address, reason, created_at, *reply_sender(address, default_region=default_region))
        for address, reason, created_at in store.consents.suppressions_by_age()
        if "@" not in address and not _E164.fullmatch(address)
    ]
    # Asked of the store in one read, for those whose E.164 form reads.
    spoken_for = iter(
        store.consents.spoken_for(
            [(reads_as, since) for _, _, since, _, reads_as in rows if reads_as is not None]
        )
    )
    return [
        LegacyOptOut(
            address, reads_as, channel, reason, settled=reads_as is not None and next(spoken_for)
        )
        for address, reason, _, channel, reads_as in rows
    ]


def upgrade_legacy_opt_outs(store: Store, *, default_region: str) -> list[LegacyOptOut]:
    """Record each legacy opt-out (``legacy_opt_outs``) that reads in ``default_region``
    under its E.164 form too, the old row kept, and return those recorded. Run after every
    migration: a second run changes nothing. One is left alone when its E.164 form is
    already suppressed, or has had a consent recorded since (a later START under the
    number payherald now records stands). One that does not read is left for ``doctor``
    to name."""
    upgraded = []
    for legacy in legacy_opt_outs(store, default_region=default_region):
        if legacy.reads_as is None or legacy.settled:
            continue
        # Read again in the transaction that writes: a reply may have come in since.
        if not store.consents.upgrade_opt_out(
            legacy_address=legacy.address,
            address=legacy.reads_as,
            channel=legacy.channel,
            source=f"upgrade: read {legacy.address} as {legacy.reads_as}",
            reason=legacy.reason,
        ):
            continue
        _log.info(
            "legacy_opt_out_upgraded",
            address=mask_phone(legacy.address),
            reads_as=mask_phone(legacy.reads_as),
        )
        upgraded.append(legacy)
    return upgraded
