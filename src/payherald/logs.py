"""Structured logs (structlog): stable keys, secrets scrubbed, phone numbers and email
addresses masked.

Masking works two ways. The fields that hold an address (``to``, ``sender``,
``address``...) are masked whatever form the value is in: a national number such as
``(415) 555-0123``, an email address, a WhatsApp sender. Everywhere else, in free text such
as a provider's error, E.164 numbers and email addresses are found by pattern; a national
number in free text cannot be told from an amount or an identifier, so it is not guessed at.
On a terminal, control characters in a line are shown escaped, never obeyed.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

from payherald.recipients import mask_address, mask_phone
from payherald.terminal import printable

__all__ = ["ADDRESS_KEYS", "configure_logging", "scrubber"]

# E.164 numbers, also URL-encoded (To=%2B14155550123 in a provider's URL).
_PHONE = re.compile(r"(?:\+|%2B)\d{7,15}\b", re.IGNORECASE)
# Email addresses, also URL-encoded (%40): a mailbox, then a domain ending in a name
# (so that user@127.0.0.1 in a URL is left alone).
_EMAIL = re.compile(
    r"(?<![\w.+%-])([\w.+-])[\w.+-]*(@|%40)((?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,})\b",
    re.IGNORECASE,
)

# Log fields (and form fields, in any case) that hold an address: masked whatever they hold.
ADDRESS_KEYS = frozenset(
    {"to", "from", "sender", "raw_sender", "recipient", "address", "phone", "email"}
)


def scrubber(secrets: Iterable[str]) -> structlog.types.Processor:
    """A processor that replaces every configured secret, masks the fields that hold an
    address (ADDRESS_KEYS), and masks E.164 numbers and email addresses anywhere."""
    known = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)

    def clean(value: str, *, address: bool) -> str:
        for secret in known:
            value = value.replace(secret, "[redacted]")
        if address:
            value = mask_address(value)
        value = _PHONE.sub(lambda match: mask_phone(match.group(0)), value)
        return _EMAIL.sub(lambda m: f"{m.group(1)}***{m.group(2)}{m.group(3)}", value)

    def scrub(value: Any, *, address: bool = False) -> Any:
        if isinstance(value, str):
            return clean(value, address=address)
        if isinstance(value, list | tuple):
            return [scrub(item, address=address) for item in value]
        if isinstance(value, dict):
            return {key: scrub(item, address=_holds_address(key)) for key, item in value.items()}
        return value

    def process(
        _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in event_dict.items():
            event_dict[key] = scrub(value, address=_holds_address(key))
        return event_dict

    return process


def _holds_address(key: object) -> bool:
    return isinstance(key, str) and key.lower() in ADDRESS_KEYS


def _terminal_safe(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Control characters in string values shown escaped: a human-readable line goes to a
    terminal, which would obey them (JSON lines escape them already)."""
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = printable(value)
    return event_dict


def configure_logging(
    *, secrets: Iterable[str], log_format: str = "auto", level: int = logging.INFO
) -> None:
    """Log to stderr as JSON (or human-readable lines on a terminal with ``auto``)."""
    render_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if render_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            scrubber(secrets),
            *(() if render_json else (_terminal_safe,)),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
