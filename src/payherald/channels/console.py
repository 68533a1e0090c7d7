"""The console channel: prints the message instead of sending it.

The default when no provider is configured, and where every test-mode event goes, so a
developer sees exactly what live mode would send. The number is masked to its last four
digits, like every phone number payherald writes to an output stream: in production,
test-mode events for real customers land here too. The store keeps the full number.
"""

from __future__ import annotations

import sys
import threading
from datetime import datetime
from typing import TextIO

from payherald.channels.base import Message, ReconcileOutcome, Reconciliation
from payherald.recipients import mask_phone

__all__ = ["ConsoleChannel"]

_LABELS = {"sms": "SMS", "whatsapp": "WhatsApp", "voice": "voice call", "slack": "Slack"}


class ConsoleChannel:
    name = "console"

    def __init__(self, *, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self.sent: list[Message] = []

    def send(self, message: Message) -> str:
        stream = self._stream or sys.stdout
        with self._lock:
            stream.write(
                f"[console {_LABELS.get(message.channel, message.channel)}] to "
                f"{mask_phone(message.to)}: {message.body}\n"
            )
            stream.flush()
            self.sent.append(message)
        return f"console-{message.notification_id}"

    def sender(self, message: Message) -> str:
        return "console"

    def reconcile(self, message: Message, attempt_started_at: datetime) -> Reconciliation:
        # Nobody receives a console message, so printing it again harms no one.
        return Reconciliation(ReconcileOutcome.NOT_DELIVERED)
