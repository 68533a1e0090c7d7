"""Slack through incoming webhooks (``slack-sdk``): one webhook per team.

A team's address is ``slack:<team>``; the webhook URL comes from the rules file
(``[teams.NAME] slack_webhook``). Slack answers an incoming webhook with 200 ``ok``, or a
4xx naming the problem (``invalid_payload``, ``no_service`` for a revoked webhook), which
retrying will not fix; 429 and 5xx are retried. A team channel seeing an alert twice is
better than not at all, so a 5xx is retried rather than reconciled: a webhook post cannot
be looked up afterwards.

The body arrives ready for Slack's mrkdwn: the composer rendered it with ``escape_mrkdwn``
applied to every value the template printed, so a customer's ``<!channel>`` or
``<https://evil.example|Approve refund>`` shows as text, while a link written in the
template itself stays a link. The channel cannot tell the two apart, so it does not escape.
"""

from __future__ import annotations

import urllib.error
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from slack_sdk.webhook import WebhookClient

from payherald.channels.base import Message, ReconcileOutcome, Reconciliation
from payherald.exceptions import PermanentDeliveryError, TransientDeliveryError

__all__ = ["SlackChannel", "escape_mrkdwn"]

# Slack reads these three as markup (links, mentions, ``<!channel>``) and asks for them to
# be escaped as HTML entities, and only these: others would show as entities.
_MRKDWN = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


def escape_mrkdwn(text: str) -> str:
    """``text`` as plain text inside Slack mrkdwn."""
    return text.translate(_MRKDWN)


class SlackChannel:
    name = "slack"

    def __init__(self, *, webhooks: Mapping[str, str], timeout: float = 10.0) -> None:
        self._clients = {
            team: WebhookClient(url, timeout=int(timeout)) for team, url in webhooks.items()
        }

    def blocks(self, message: Message) -> list[dict[str, Any]]:
        """A readable layout: the message, then where it came from."""
        return [
            {"type": "section", "text": {"type": "mrkdwn", "text": message.body}},
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": f"payherald notification {message.notification_id}"},
                ],
            },
        ]

    def sender(self, message: Message) -> str:
        return message.to  # slack:<team>: one webhook each

    def send(self, message: Message) -> str:
        team = message.to.removeprefix("slack:")
        client = self._clients.get(team)
        if client is None:
            raise PermanentDeliveryError(
                f"No Slack webhook is configured for team {team!r}.", code="slack_no_webhook"
            )
        try:
            response = client.send(text=message.body, blocks=self.blocks(message))
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise TransientDeliveryError(
                f"Could not reach Slack: {exc}", code="connect_error"
            ) from exc
        if response.status_code == 200:
            return f"slack-{message.notification_id}"
        reason = str(response.body or "").strip() or f"HTTP {response.status_code}"
        code = f"slack_{response.status_code}"
        if response.status_code == 429 or response.status_code >= 500:
            retry_after = (response.headers or {}).get("Retry-After")
            raise TransientDeliveryError(
                f"Slack answered {response.status_code}: {reason}",
                code=code,
                retry_after=float(retry_after[0] if isinstance(retry_after, list) else retry_after)
                if retry_after
                else None,
            )
        raise PermanentDeliveryError(f"Slack refused the message: {reason}", code=code)

    def reconcile(self, message: Message, attempt_started_at: datetime) -> Reconciliation:
        return Reconciliation(ReconcileOutcome.UNDETERMINED)
