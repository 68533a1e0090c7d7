"""Channels: the ways a message reaches a person, all behind ``Channel``."""

from __future__ import annotations

from payherald.channels.base import Channel, Message, ReconcileOutcome, Reconciliation
from payherald.channels.console import ConsoleChannel
from payherald.channels.router import ChannelRouter
from payherald.channels.twilio_channels import (
    TwilioSmsChannel,
    TwilioVoiceChannel,
    TwilioWhatsAppChannel,
    twilio_client,
)

__all__ = [
    "Channel",
    "ChannelRouter",
    "ConsoleChannel",
    "Message",
    "ReconcileOutcome",
    "Reconciliation",
    "TwilioSmsChannel",
    "TwilioVoiceChannel",
    "TwilioWhatsAppChannel",
    "twilio_client",
]
