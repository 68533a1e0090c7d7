"""The Twilio checks of ``payherald doctor``: the credentials and each sender."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from payherald.doctor.check import Check
from payherald.settings import Settings

__all__ = ["twilio_checks"]


def twilio_checks(settings: Settings, client: Any | None) -> Iterator[Check]:
    if client is None:
        yield Check(
            "twilio",
            False,
            "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are not set; SMS, WhatsApp and calls "
            "go to the console",
            "export TWILIO_ACCOUNT_SID=AC... TWILIO_AUTH_TOKEN=... TWILIO_FROM_NUMBER=+1...",
        )
        return
    from twilio.base.exceptions import TwilioException, TwilioRestException

    sid = settings.twilio_account_sid
    try:
        account = client.api.v2010.accounts(sid).fetch()
    except TwilioRestException as exc:
        yield Check(
            "twilio",
            False,
            f"Twilio refused the credentials (HTTP {exc.status}: {exc.msg})",
            "Check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN in the Twilio console",
        )
        return
    except TwilioException as exc:
        yield Check("twilio", False, f"Twilio could not be reached: {exc}", "Check the network")
        return
    status = getattr(account, "status", "active")
    if status != "active":
        yield Check(
            "twilio",
            False,
            f"the Twilio account is {status}",
            "Reactivate it in the Twilio console",
        )
        return
    yield Check("twilio", True, "credentials work")
    number = settings.twilio_from_number
    if not number:
        yield Check(
            "twilio sender",
            True,
            f"Messaging Service {settings.twilio_messaging_service_sid} (not checked)",
        )
        return
    try:
        owned = client.api.v2010.accounts(sid).incoming_phone_numbers.list(
            phone_number=number, limit=20
        )
    except TwilioRestException as exc:
        yield Check(
            "twilio sender",
            False,
            f"could not list the account's numbers (HTTP {exc.status}: {exc.msg})",
            None,
        )
        return
    match = next((n for n in owned if getattr(n, "phone_number", None) == number), None)
    if match is None:
        yield Check(
            "twilio sender",
            False,
            f"TWILIO_FROM_NUMBER {number} is not a number of this Twilio account, so Twilio "
            "would refuse every SMS",
            "Use one of the account's numbers (Phone Numbers > Active numbers)",
        )
        return
    capabilities = getattr(match, "capabilities", None) or {}
    if capabilities and not capabilities.get("sms", False):
        yield Check(
            "twilio sender", False, f"{number} cannot send SMS", "Use an SMS-capable number"
        )
        return
    yield Check("twilio sender", True, f"{number} is on the account and can send SMS")
