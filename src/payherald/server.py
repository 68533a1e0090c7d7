"""The HTTP face: Stripe's and Twilio's webhook endpoints, health checks, Prometheus
metrics, ``POST /api/paylinks``; the rest of the JSON API is ``api``'s, the dashboard's
pages ``dashboard``'s, both behind the admin token (``admin``).

The webhook handler verifies and parses, then hands the event to the group committer
(``group_commit``), which writes many requests' events in one transaction, and answers once
that transaction committed. It never calls Stripe, Twilio or any other provider, so its
answer does not wait on them. A store that cannot be written answers 503 so that Stripe
retries; nothing is acknowledged that is not stored. An event the database refuses a value
of (``ValueNotStorable``) answers 422: a retry would fail the same way.

A request body must arrive within ``body_timeout`` seconds (408); one cut off by its client
is logged in one line. How connections are bounded otherwise is ``serving``'s part.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from payherald.admin import AdminAuth, presents_token
from payherald.api import (
    ApiRefused,
    add_api_routes,
    api_refused_handler,
    store_unavailable_handler,
    validation_handler,
)
from payherald.consent import answer_of, classify_reply, record_reply, reply_sender
from payherald.dashboard import add_dashboard_routes
from payherald.delivery import DeliveryReport
from payherald.exceptions import (
    PaylinkFailed,
    PaylinkRefused,
    RequestBodyIncomplete,
    StoreUnavailable,
    ValueNotStorable,
    WebhookRejected,
)
from payherald.feed import LiveFeed
from payherald.fraud import question_reply
from payherald.group_commit import GroupCommitter
from payherald.metrics import Metrics
from payherald.paylink_requests import request_from_json
from payherald.paylinks import PaylinkSender, new_request_id
from payherald.recipients import mask_address
from payherald.rules import RuleBook
from payherald.serving import read_body
from payherald.store import RecordResult, Store
from payherald.webhook import StripeEvent, WebhookVerifier

__all__ = ["BODY_TIMEOUT_SECONDS", "create_http_app"]

_log = structlog.get_logger("payherald.server")

BODY_TIMEOUT_SECONDS = 30.0
_IDEMPOTENCY_KEY = re.compile(r"[!-~]{1,255}")
_ERROR = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}},
            }
        }
    }
}
# The refusals the OpenAPI document lists for the Twilio callbacks and POST /api/paylinks.
_BODY_REFUSALS: dict[int | str, dict[str, Any]] = {
    408: {"description": "The body did not arrive in time", **_ERROR},
    413: {"description": "The body is over 1 MiB", **_ERROR},
}
_TWILIO_REFUSALS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Not a Twilio callback: a field it always sends is missing", **_ERROR},
    403: {"description": "Not signed by Twilio, or callbacks not set up here", **_ERROR},
    **_BODY_REFUSALS,
    503: {"description": "Not recorded: the store is unavailable; Twilio retries", **_ERROR},
}
_PAYLINK_REFUSALS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Not JSON, or a malformed Idempotency-Key", **_ERROR},
    401: {"description": "No admin token presented, or a wrong one", **_ERROR},
    403: {"description": "No PAYHERALD_ADMIN_TOKEN set: the API is off", **_ERROR},
    409: {"description": "The Idempotency-Key was used for another request", **_ERROR},
    **_BODY_REFUSALS,
    422: {"description": "A request payherald will not make a link for", **_ERROR},
    502: {"description": "Stripe could not be reached; send the same request again", **_ERROR},
    503: {
        "description": "No STRIPE_SECRET_KEY, payherald not set up for links, or the store "
        "unavailable",
        **_ERROR,
    },
}
# How the OpenAPI document describes POST /webhooks/stripe, a plain Starlette route that
# FastAPI does not describe itself.
_STRIPE_WEBHOOK_DOC: dict[str, Any] = {
    "post": {
        "summary": "Receive a Stripe event",
        "description": "The event as Stripe sends it, verified against the Stripe-Signature "
        "header over the raw bytes, then stored with its notifications before the answer.",
        "operationId": "stripe_webhook",
        "parameters": [
            {
                "name": "Stripe-Signature",
                "in": "header",
                "required": True,
                "schema": {"type": "string"},
            }
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        "responses": {
            "200": {
                "description": "Stored, or a repeat of an event stored before",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["received", "event_id", "duplicate", "queued"],
                            "properties": {
                                "received": {"type": "boolean"},
                                "event_id": {"type": "string"},
                                "duplicate": {"type": "boolean"},
                                "queued": {"type": "integer"},
                            },
                        }
                    }
                },
            },
            "400": {"description": "No signature, a wrong one, or not an event", **_ERROR},
            "408": {"description": "The body did not arrive in time", **_ERROR},
            "413": {"description": "The body is over 1 MiB", **_ERROR},
            "422": {"description": "A value the database refuses", **_ERROR},
            "503": {
                "description": "Not stored (the store is unavailable); Stripe retries",
                **_ERROR,
            },
        },
    }
}


def create_http_app(
    *,
    store: Store,
    verifier: WebhookVerifier,
    rules: RuleBook,
    metrics: Metrics,
    on_queued: Callable[[], None] = lambda: None,
    twilio_auth_token: str | None = None,
    public_url: str | None = None,
    business_name: str | None = None,
    help_text: str | None = None,
    locale: str = "en_US",
    on_no: str | None = "refund",
    write_back: bool = False,
    default_region: str = "US",
    admin_token: str | None = None,
    body_timeout: float = BODY_TIMEOUT_SECONDS,
    development_secret: str | None = None,
    paylinks: PaylinkSender | None = None,
    auth: AdminAuth | None = None,
    feed: LiveFeed | None = None,
    default_livemode: bool = False,
    timezone: str = "UTC",
) -> FastAPI:
    """The ASGI application. ``on_queued`` is called after a commit that queued work (the
    in-process worker's wake-up). Webhook events are written by a ``GroupCommitter``,
    kept in ``app.state.group_committer``. Twilio's callbacks are checked against
    ``public_url`` (PAYHERALD_PUBLIC_URL), the address Twilio was given, never against
    headers a client can set such as ``X-Forwarded-Host``. With ``write_back``, opt-outs
    and opt-ins by reply are queued for the Stripe customer's metadata (``stripe_sync``).
    A reply's sender written without a country code is read in ``default_region``
    (PAYHERALD_DEFAULT_REGION). A reply about a question texted to the customer (the fraud
    check) is answered in ``locale``, saying what ``on_no`` does (None: nothing at
    Stripe). Webhook requests are counted in ``metrics``, served on ``GET /metrics``.
    ``/readyz`` tells why the store is unavailable only to a caller presenting
    ``admin_token`` (PAYHERALD_ADMIN_TOKEN) as a bearer token; request bodies must arrive
    within ``body_timeout`` seconds. ``POST /api/paylinks`` makes a payment link with
    ``paylinks`` (None without STRIPE_SECRET_KEY) and queues its text, for a caller
    presenting ``admin_token``. The dashboard and the rest of the JSON API (``api``)
    sign in with ``auth`` (built from ``admin_token`` when not given) and push events
    through ``feed``; they show ``default_livemode``'s events first, and days in
    ``timezone``.

    With no ``twilio_auth_token`` but a ``development_secret`` (a trial run, with no
    STRIPE_WEBHOOK_SECRET either), a Twilio callback signed with the development secret
    for the address it was sent to is taken: `payherald simulate reply` sends them, and
    nobody without the store's development secret can sign one."""
    token = twilio_auth_token or development_secret
    twilio_validator = RequestValidator(token) if token else None
    name = f"{business_name}: " if business_name else ""
    replies = {
        "opt_out": f"{name}You will get no more messages from us. Reply START to resubscribe.",
        "opt_in": f"{name}You are subscribed again. Reply STOP to unsubscribe.",
        "help": help_text
        or f"{name}Payment notifications. Reply STOP to unsubscribe, START to resubscribe.",
    }
    app = FastAPI(
        title="payherald",
        summary="Stripe events to SMS, exactly once.",
        # No Swagger page: it loads its script from a CDN, on the dashboard's origin, and the
        # service runs offline. The OpenAPI document is served.
        docs_url=None,
        openapi_url="/api/openapi.json",
        redoc_url=None,
    )

    auth = auth or AdminAuth(token=admin_token, clock=store.clock)
    feed = feed or LiveFeed(store=store)
    app.add_exception_handler(ApiRefused, api_refused_handler)
    app.add_exception_handler(RequestValidationError, validation_handler)
    app.add_exception_handler(StoreUnavailable, store_unavailable_handler)
    app.state.feed = feed
    app.state.auth = auth

    committer = GroupCommitter(store=store, rules=rules, on_queued=on_queued)
    app.state.group_committer = committer
    app.state.body_timeout = body_timeout

    async def body_incomplete(request: Request, exc: Exception) -> JSONResponse:
        """One log line for a body cut off or too slow (never a traceback, never a 500)."""
        assert isinstance(exc, RequestBodyIncomplete)
        _log.warning(
            "request_body_incomplete",
            client=request.client.host if request.client else None,
            path=request.url.path,
            reason=exc.message,
        )
        # Closed after the answer: the rest of the body may still be on its way.
        return JSONResponse(
            {"error": exc.message}, status_code=exc.status_code, headers={"Connection": "close"}
        )

    app.add_exception_handler(RequestBodyIncomplete, body_incomplete)

    def acknowledge(event: StripeEvent, result: RecordResult) -> dict[str, Any]:
        """Count the stored event's outcome; the body of its 200 answer."""
        if result.duplicate:
            outcome = "duplicate"
        elif result.failed:
            outcome = "failed"
        elif result.unsupported:
            outcome = "unsupported"
        else:
            outcome = "queued" if result.queued else "nothing_to_do"
        metrics.event(event.type, outcome)
        return {
            "received": True,
            "event_id": event.id,
            "duplicate": result.duplicate,
            "queued": result.queued,
        }

    async def stripe_webhook(request: Request) -> JSONResponse:
        """Receive a Stripe event."""
        started = time.perf_counter()
        client = request.client.host if request.client else None
        try:
            body = await read_body(request)
            event = verifier.receive(body, request.headers.get("stripe-signature"))
        except WebhookRejected as exc:
            metrics.rejected()
            _log.warning(
                "webhook_rejected", client=client, status=exc.status_code, reason=exc.message
            )
            return JSONResponse({"error": exc.message}, status_code=exc.status_code)
        try:
            result = await committer.record(event)
        except ValueNotStorable as exc:
            metrics.event(event.type, "not_stored")
            _log.warning("event_not_storable", event_id=event.id, error=exc.message)
            return JSONResponse(
                {
                    "error": "payherald cannot store this event: the database refused one of "
                    "its values, and would refuse it again on a retry."
                },
                status_code=422,
            )
        except StoreUnavailable as exc:
            metrics.event(event.type, "not_stored")
            _log.error("event_not_stored", event_id=event.id, error=exc.message)
            return JSONResponse(
                {
                    "error": "The event store is unavailable, so the event was not stored; "
                    "Stripe will retry it."
                },
                status_code=503,
            )
        except Exception:
            # A bug of ours. Answer 5xx so that Stripe retries (a retry that finds the event
            # already stored is harmless), and keep the traceback in the log.
            metrics.event(event.type, "not_stored")
            _log.exception("event_not_stored", event_id=event.id)
            return JSONResponse(
                {
                    "error": "payherald could not record the event (see its log); Stripe will "
                    "retry it."
                },
                status_code=503,
            )
        if not result.duplicate:
            feed.wake()
        acknowledgement = acknowledge(event, result)
        metrics.observe_ingest(time.perf_counter() - started)
        _log.info(
            "event_received",
            event_id=event.id,
            event_type=event.type,
            livemode=event.livemode,
            duplicate=result.duplicate,
            queued=result.queued,
        )
        return JSONResponse(acknowledgement)

    # A plain Starlette route: the hot path skips FastAPI's parameter and dependency
    # machinery, which it does not use (measured with bench/: about 15% more events a second).
    app.router.add_route("/webhooks/stripe", stripe_webhook, methods=["POST"])

    def openapi() -> dict[str, Any]:
        """FastAPI's document, and the Stripe webhook that it does not describe."""
        if app.openapi_schema is None:
            document = FastAPI.openapi(app)
            document["paths"] = {"/webhooks/stripe": _STRIPE_WEBHOOK_DOC, **document["paths"]}
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]

    async def twilio_form(request: Request) -> dict[str, str] | JSONResponse:
        """The request's form, if it verifies as Twilio's; else the 403/413 to answer."""
        client = request.client.host if request.client else None
        # Checked against the address Twilio was given; in a trial run, against the one
        # the request was sent to.
        base = public_url if twilio_auth_token else public_url or str(request.base_url)
        if twilio_validator is None or not base:
            _log.warning("twilio_callback_rejected", client=client, reason="not configured")
            return JSONResponse(
                {
                    "error": "Twilio callbacks are not accepted here: set PAYHERALD_PUBLIC_URL "
                    "and TWILIO_AUTH_TOKEN."
                },
                status_code=403,
            )
        try:
            body = await read_body(request)
        except WebhookRejected as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status_code)
        params = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        query = f"?{request.url.query}" if request.url.query else ""
        url = base.rstrip("/") + request.url.path + query
        signature = request.headers.get("x-twilio-signature", "")
        if not signature or not twilio_validator.validate(url, params, signature):
            _log.warning("twilio_callback_rejected", client=client, reason="bad signature")
            return JSONResponse(
                {
                    "error": "The X-Twilio-Signature header does not match this request. Check "
                    "that PAYHERALD_PUBLIC_URL is the address Twilio calls and "
                    "TWILIO_AUTH_TOKEN is the account's token."
                },
                status_code=403,
            )
        return params

    @app.post(
        "/webhooks/twilio/inbound",
        summary="Receive an SMS reply (STOP, START, HELP, or YES/NO to a question)",
        responses=_TWILIO_REFUSALS,
    )
    async def twilio_inbound(request: Request) -> Response:
        params = await twilio_form(request)
        if isinstance(params, JSONResponse):
            return params
        sid, sender, text = params.get("MessageSid"), params.get("From"), params.get("Body")
        if not sid or not sender or text is None:
            return JSONResponse(
                {"error": "Not a Twilio inbound message: MessageSid, From and Body are needed."},
                status_code=400,
            )
        channel, address = reply_sender(sender, default_region=default_region)
        if address is None:
            # Not a number payherald could ever have texted, so there is no consent to
            # record. Twilio does not retry an inbound message, so a 4xx would only show
            # as an error in its console for each text from a short code or a name; a
            # 200 with no reply ends it, and the log line tells the operator.
            _log.warning(
                "inbound_sender_unreadable",
                provider_id=sid,
                sender=mask_address(sender),
                keyword=classify_reply(text),
            )
            return Response(str(MessagingResponse()), media_type="application/xml")
        try:
            reply = await run_in_threadpool(
                record_reply,
                store,
                provider_id=sid,
                sender=address,
                raw_sender=sender,
                body=text,
                channel=channel,
                write_back=write_back,
            )
        except StoreUnavailable as exc:
            _log.error("inbound_not_stored", provider_id=sid, error=exc.message)
            return JSONResponse({"error": "The store is unavailable."}, status_code=503)
        _log.info(
            "inbound_message",
            provider_id=sid,
            sender=address,
            keyword=reply.action,
            first_time=reply.new,
            consent_changed=reply.changed,
            question=reply.question.kind,
        )
        answer = MessagingResponse()
        if reply.new:
            said = question_reply(
                reply.question, business=business_name, locale=locale, on_no=on_no
            )
            if said is None and (reply.changed or reply.action == "help"):
                said = replies[reply.action or "help"]
            elif said is None and answer_of(text) is not None:
                said = replies["help"]  # a YES or NO with no question to answer
            if said is not None:
                answer.message(said)
        return Response(str(answer), media_type="application/xml")

    @app.post(
        "/webhooks/twilio/status",
        summary="Receive a Twilio delivery status",
        responses=_TWILIO_REFUSALS,
    )
    async def twilio_status(request: Request) -> JSONResponse:
        params = await twilio_form(request)
        if isinstance(params, JSONResponse):
            return params
        sid = params.get("MessageSid") or params.get("CallSid")
        status = params.get("MessageStatus") or params.get("CallStatus")
        if not sid or not status:
            return JSONResponse(
                {
                    "error": "Not a Twilio status callback: MessageSid and "
                    "MessageStatus are missing."
                },
                status_code=400,
            )
        notification = request.query_params.get("notification", "")
        report = DeliveryReport(
            provider_id=sid,
            status=status.lower(),
            notification_id=int(notification) if notification.isdigit() else None,
            error_code=params.get("ErrorCode") or None,
        )
        try:
            outcome = await run_in_threadpool(store.deliveries.record, report)
        except StoreUnavailable as exc:
            _log.error("delivery_report_not_stored", provider_id=sid, error=exc.message)
            return JSONResponse({"error": "The store is unavailable."}, status_code=503)
        _log.info(
            "delivery_report",
            provider_id=sid,
            status=report.status,
            notification_id=report.notification_id,
            outcome=outcome,
            error_code=report.error_code,
        )
        return JSONResponse({"outcome": outcome})

    @app.get("/healthz", summary="Alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    def presents_admin_token(request: Request) -> bool:
        return presents_token(request, admin_token)

    @app.get("/readyz", summary="Ready: the store answers")
    async def readyz(request: Request) -> JSONResponse:
        try:
            await run_in_threadpool(store.db.ping)
        except StoreUnavailable as exc:
            # The driver's reason names the database's host, port and user: for the log,
            # and for the operator presenting the admin token, not for anyone who asks.
            _log.warning("not_ready", error=exc.message)
            error = (
                exc.message
                if presents_admin_token(request)
                else "store unavailable: payherald cannot use its database; its log says why."
            )
            return JSONResponse({"status": "unavailable", "error": error}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.post(
        "/api/paylinks",
        summary="Make a payment link and text it",
        status_code=201,
        responses=_PAYLINK_REFUSALS,
    )
    async def create_paylink(request: Request) -> JSONResponse:
        if admin_token is None:
            return _api_error(
                403,
                "The API is off: set PAYHERALD_ADMIN_TOKEN, and present it as "
                "Authorization: Bearer <token>.",
            )
        if not presents_admin_token(request):
            return _api_error(
                401, "Present PAYHERALD_ADMIN_TOKEN as Authorization: Bearer <token>."
            )
        if paylinks is None:
            return _api_error(
                503, "Payment links need STRIPE_SECRET_KEY; set it and restart payherald."
            )
        request_id = request.headers.get("idempotency-key")
        if request_id is not None and not _IDEMPOTENCY_KEY.fullmatch(request_id):
            return _api_error(
                400, "The Idempotency-Key header must be 1 to 255 printable characters."
            )
        try:
            body = json.loads(await read_body(request))
        except WebhookRejected as exc:
            return _api_error(exc.status_code, exc.message)
        except (ValueError, RecursionError):
            return _api_error(400, "The body is not valid JSON.")
        try:
            wanted = request_from_json(body, default_region=default_region)
            sent = await run_in_threadpool(
                paylinks.send, wanted, request_id=request_id or new_request_id()
            )
        except PaylinkRefused as exc:
            return _api_error(exc.status_code, exc.message)
        except PaylinkFailed as exc:
            return _api_error(502, exc.message)
        except StoreUnavailable as exc:
            _log.error("paylink_not_recorded", error=exc.message)
            return _api_error(
                503,
                "The store is unavailable, so the link's text was not queued; send the same "
                "request (with its Idempotency-Key) again.",
            )
        if not sent.repeated:
            on_queued()
        return JSONResponse(sent.as_json(), status_code=201)

    add_api_routes(
        app,
        store=store,
        auth=auth,
        feed=feed,
        default_livemode=default_livemode,
        timezone=timezone,
        locale=locale,
        on_queued=on_queued,
    )

    add_dashboard_routes(
        app,
        store=store,
        auth=auth,
        default_livemode=default_livemode,
        timezone=timezone,
        business_name=business_name,
        locale=locale,
        on_queued=on_queued,
    )

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics_endpoint() -> Response:
        # The queue gauges are read from the database: off the event loop.
        body = await run_in_threadpool(metrics.exposition)
        return Response(body, media_type=metrics.content_type)

    return app


def _api_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)
