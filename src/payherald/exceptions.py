"""Every error payherald raises on purpose.

The hierarchy::

    PayheraldError
    ├── ConfigurationError          settings are missing or wrong; fix them and restart
    ├── WebhookRejected             an incoming webhook is refused; nothing is stored
    │   ├── PayloadTooLarge         the body is over the size limit (HTTP 413)
    │   ├── SignatureInvalid        the Stripe-Signature header does not verify (HTTP 400)
    │   └── MalformedEvent          the body verifies but is not a Stripe event (HTTP 400)
    ├── RequestBodyIncomplete       the body did not all arrive: too slow, or the client left
    ├── StoreUnavailable            the database cannot be reached or written; retryable
    │   └── ValueNotStorable        the database refused a value (a NUL, too long): permanent
    ├── SchemaOutOfDate             the database needs `payherald migrate`
    ├── RecipientNotFound           no usable address for the recipient; permanent
    ├── RenderError                 a message template cannot be rendered; permanent
    ├── PaylinkRefused              a payment link request is wrong; nothing was made
    ├── PaylinkFailed               Stripe could not be asked to make the link; retryable
    └── DeliveryError               a channel did not deliver a message
        ├── TransientDeliveryError  not accepted, try again later: 429, cannot connect
        ├── PermanentDeliveryError  invalid number, unsubscribed: never retry
        └── DeliveryOutcomeUnknown  may have been accepted (5xx, dropped connection):
                                    ask the provider before any resend

Each class's docstring is its default message. ``retryable`` says whether doing the same
thing again later can succeed.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "DeliveryError",
    "DeliveryOutcomeUnknown",
    "MalformedEvent",
    "PayheraldError",
    "PaylinkConflict",
    "PaylinkFailed",
    "PaylinkMisconfigured",
    "PaylinkRefused",
    "PayloadTooLarge",
    "PermanentDeliveryError",
    "RecipientNotFound",
    "RenderError",
    "RequestBodyIncomplete",
    "SchemaOutOfDate",
    "SignatureInvalid",
    "StoreUnavailable",
    "TransientDeliveryError",
    "ValueNotStorable",
    "WebhookRejected",
]


class PayheraldError(Exception):
    """payherald failed."""

    retryable = False

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self.args[0])


class ConfigurationError(PayheraldError):
    """payherald is not configured correctly."""


class WebhookRejected(PayheraldError):
    """The webhook request was refused."""

    status_code = 400


class PayloadTooLarge(WebhookRejected):
    """The request body is larger than 1 MiB; Stripe events are far smaller."""

    status_code = 413


class SignatureInvalid(WebhookRejected):
    """The Stripe-Signature header does not verify."""


class MalformedEvent(WebhookRejected):
    """The body is not a Stripe event."""


class RequestBodyIncomplete(PayheraldError):
    """The request body did not all arrive in the time allowed; send it again, at once."""

    status_code = 408


class StoreUnavailable(PayheraldError):
    """The event store is unavailable."""

    retryable = True


# A StoreUnavailable, so that every caller that survives an unwritable store survives this
# too; the webhook tells it apart and answers it as permanent.
class ValueNotStorable(StoreUnavailable):
    """The database refused a value it was given (a NUL character, a value too long for its
    column); storing the same thing again fails the same way."""

    retryable = False


class SchemaOutOfDate(PayheraldError):
    """The database schema is not up to date: run `payherald migrate`."""


class RecipientNotFound(PayheraldError):
    """No usable address was found for the recipient."""


class RenderError(PayheraldError):
    """The message template could not be rendered."""


class PaylinkRefused(PayheraldError):
    """The payment link request is refused; nothing was made or recorded."""

    status_code = 422  # what the API answers: the request is what is wrong


class PaylinkConflict(PaylinkRefused):
    """The request's id (Idempotency-Key) was used before for another request."""

    status_code = 409


class PaylinkMisconfigured(PaylinkRefused):
    """payherald is not set up to make the link (its key, its permissions, its rules): the
    operator's to fix, not the request's."""

    status_code = 503


class PaylinkFailed(PayheraldError):
    """Stripe could not be reached to make the payment link; send the same request again."""

    retryable = True


class DeliveryError(PayheraldError):
    """The message was not delivered."""

    def __init__(self, message: str | None = None, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class TransientDeliveryError(DeliveryError):
    """The provider is temporarily unavailable; the message will be retried."""

    retryable = True

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """The provider refused the message; it will not be retried."""


class DeliveryOutcomeUnknown(DeliveryError):
    """The provider may or may not have accepted the message; it is reconciled with the
    provider before any resend."""
