"""Email over SMTP with ``aiosmtplib``: plain text and HTML, From and Reply-To.

``SMTP_URL`` says where: ``smtp://user:password@host:587`` (STARTTLS when the server
offers it), ``smtps://...:465`` (TLS from the start), or ``smtp://host:25`` without login.
A 5xx refusal (unknown mailbox, relay denied) is permanent; a 4xx, or a server that cannot
be reached, is retried. A connection lost after the message was handed over leaves the
outcome unknown: an SMTP server cannot be asked afterwards, so it is not resent blindly.
An address that is not exactly one plain address (``a@x, b@evil``, a line break) is
refused before anything is sent, permanently: retrying cannot mend it.
"""

from __future__ import annotations

import asyncio
import html
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import make_msgid
from urllib.parse import unquote, urlsplit

import aiosmtplib

from payherald.channels.base import Message, ReconcileOutcome, Reconciliation
from payherald.exceptions import (
    ConfigurationError,
    DeliveryOutcomeUnknown,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from payherald.recipients import email_address_problem

__all__ = ["EmailChannel", "SmtpServer"]


@dataclass(frozen=True, slots=True)
class SmtpServer:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    use_tls: bool = False

    @classmethod
    def from_url(cls, url: str) -> SmtpServer:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ConfigurationError(
                "SMTP_URL must look like smtp://user:password@host:587 or "
                "smtps://user:password@host:465."
            )
        tls = parts.scheme == "smtps"
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if tls else 587),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            use_tls=tls,
        )


class EmailChannel:
    name = "email"

    def __init__(
        self,
        *,
        server: SmtpServer,
        sender: str,
        reply_to: str | None = None,
        subject_prefix: str | None = None,
        timeout: float = 20.0,
    ) -> None:
        self._server = server
        self._sender = sender
        self._reply_to = reply_to
        self._prefix = subject_prefix
        self._timeout = timeout

    def compose(self, message: Message) -> EmailMessage:
        email = EmailMessage()
        first_sentence = message.body.split(". ")[0].rstrip(".")
        subject = first_sentence if len(first_sentence) <= 78 else first_sentence[:75] + "..."
        email["Subject"] = f"{self._prefix}: {subject}" if self._prefix else subject
        email["From"] = self._sender
        email["To"] = message.to
        if self._reply_to:
            email["Reply-To"] = self._reply_to
        email["Message-ID"] = make_msgid(idstring=f"payherald-{message.notification_id}")
        email.set_content(message.body)
        email.add_alternative(
            '<!doctype html><html><body><p style="font-family:sans-serif;font-size:15px">'
            f"{html.escape(message.body)}</p></body></html>",
            subtype="html",
        )
        return email

    def sender(self, message: Message) -> str:
        return self._sender

    def send(self, message: Message) -> str:
        problem = email_address_problem(message.to)
        if problem:
            raise PermanentDeliveryError(
                f"Nothing was sent: {problem}; correct it on the Stripe customer or in "
                "the rules file's team.",
                code="invalid_address",
            )
        email = self.compose(message)
        try:
            asyncio.run(self._send(email))
        except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPConnectTimeoutError) as exc:
            raise TransientDeliveryError(
                f"Could not connect to the SMTP server: {exc}", code="connect_error"
            ) from exc
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refusal = exc.recipients[0] if exc.recipients else None
            code = refusal.code if refusal else 550
            raise self._refused(code, str(refusal.message if refusal else exc)) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise self._refused(exc.code, exc.message) from exc
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError) as exc:
            raise DeliveryOutcomeUnknown(
                f"The SMTP server went away mid-message: {exc}", code="connection_lost"
            ) from exc
        return str(email["Message-ID"])

    @staticmethod
    def _refused(code: int, text: str) -> TransientDeliveryError | PermanentDeliveryError:
        if 400 <= code < 500:
            return TransientDeliveryError(
                f"The SMTP server answered {code}: {text}", code=f"smtp_{code}"
            )
        return PermanentDeliveryError(
            f"The SMTP server refused the message ({code}): {text}", code=f"smtp_{code}"
        )

    async def _send(self, email: EmailMessage) -> None:
        server = self._server
        await aiosmtplib.send(
            email,
            hostname=server.host,
            port=server.port,
            username=server.username,
            password=server.password,
            use_tls=server.use_tls,
            timeout=self._timeout,
        )

    def reconcile(self, message: Message, attempt_started_at: datetime) -> Reconciliation:
        return Reconciliation(ReconcileOutcome.UNDETERMINED)
