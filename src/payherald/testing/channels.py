"""A channel that answers from a script (``payherald.channels.Channel``)."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from datetime import datetime

from payherald.channels.base import Message, ReconcileOutcome, Reconciliation

__all__ = ["ScriptedChannel"]


class ScriptedChannel:
    """A channel that records every send and answers from a script.

    Each scripted answer is an exception to raise, or None to accept; when the script
    runs out, sends are accepted. ``reconcile_answer`` is what ``reconcile`` returns.
    """

    def __init__(
        self,
        name: str = "sms",
        *,
        script: Iterable[BaseException | None] = (),
        reconcile_answer: Reconciliation | None = None,
    ) -> None:
        self.name = name
        self._script = deque(script)
        self._lock = threading.Lock()
        self.attempts: list[Message] = []
        self.delivered: list[Message] = []
        self.reconcile_answer = reconcile_answer or Reconciliation(ReconcileOutcome.NOT_DELIVERED)

    def script(self, *answers: BaseException | None) -> None:
        """Answer the next sends with ``answers``, in order, after what is scripted already:
        an exception is raised, None accepts."""
        with self._lock:
            self._script.extend(answers)

    def send(self, message: Message) -> str:
        with self._lock:
            self.attempts.append(message)
            answer = self._script.popleft() if self._script else None
            if answer is None:
                self.delivered.append(message)
        if answer is not None:
            raise answer
        return f"{self.name}-{message.notification_id}-{len(self.attempts)}"

    def sender(self, message: Message) -> str:
        return self.name

    def reconcile(self, message: Message, attempt_started_at: datetime) -> Reconciliation:
        return self.reconcile_answer
