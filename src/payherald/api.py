"""The JSON API under ``/api/``: events, an event's trace, notifications and their retry,
today's figures, opt-outs, dunning sequences and the live feed, for whoever presents the
admin token (``admin``): as ``Authorization: Bearer <token>``, or the dashboard's session
cookie, with its CSRF token in ``X-CSRF-Token`` on an action.

Every answer that is not a success is ``{"error": "<what is wrong and what to do>"}`` with
its status: 401 (no or wrong credentials, an expired session), 403 (a missing or forged
CSRF token, or no admin token set), 404, 409 (a retry of what cannot be retried), 422 (a
filter this API does not take). The OpenAPI document (``/api/openapi.json``) describes it
all, and a test runs schemathesis against it.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

import structlog
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from payherald.admin import CSRF_HEADER, AdminAuth, Session, presents_bearer
from payherald.event_facts import KINDS
from payherald.exceptions import StoreUnavailable
from payherald.feed import LiveFeed
from payherald.store import Store
from payherald.store.history import decode_cursor, text_filter
from payherald.store.shapes import jsonable
from payherald.store.statuses import MAY_HAVE_BEEN_SENT, DunningStatus, NotificationStatus

__all__ = [
    "ApiRefused",
    "add_api_routes",
    "api_refused_handler",
    "retry",
    "store_unavailable_handler",
    "validation_handler",
]

_log = structlog.get_logger("payherald.api")

Kind = Literal["succeeded", "failed", "dispute", "refund", "other"]
Mode = Literal["live", "test"]
Status = Literal["pending", "claimed", "sending", "sent", "skipped", "failed", "unknown"]
assert set(KINDS) == set(Kind.__args__)  # type: ignore[attr-defined]
assert {s.value for s in NotificationStatus} == set(Status.__args__)  # type: ignore[attr-defined]
SequenceStatus = Literal["open", "recovered", "ended"]
assert {s.value for s in DunningStatus} == set(SequenceStatus.__args__)  # type: ignore[attr-defined]


class ApiRefused(Exception):
    """An API request refused: answered ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


async def api_refused_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiRefused)
    return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)


async def store_unavailable_handler(request: Request, exc: Exception) -> JSONResponse:
    """The store did not answer a read: 503, and the log says why."""
    assert isinstance(exc, StoreUnavailable)
    _log.error("api_store_unavailable", path=request.url.path, error=exc.message)
    return JSONResponse(
        {"error": "The store is unavailable; try again shortly (payherald's log says why)."},
        status_code=503,
        headers={"Retry-After": "5"},
    )


async def validation_handler(request: Request, exc: Exception) -> JSONResponse:
    """A parameter FastAPI refused, as one sentence (and the details, for a program)."""
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("query",))
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
    return JSONResponse(
        {
            "error": "The request's parameters are not valid: " + "; ".join(problems) + ".",
            "detail": [{"loc": e.get("loc"), "msg": e.get("msg")} for e in exc.errors()],
        },
        status_code=422,
    )


class ErrorBody(BaseModel):
    error: str


class NotificationBrief(BaseModel):
    id: int
    rule: str
    channel: str
    to: str | None
    status: str
    delivery_status: str | None
    error_code: str | None


class EventSummary(BaseModel):
    id: str
    type: str
    kind: Kind
    livemode: bool
    status: str
    received_at: str
    amount: int | None
    currency: str | None
    amount_text: str | None
    customer: str | None
    email: str | None
    customer_name: str | None
    notifications: list[NotificationBrief]


class EventPage(BaseModel):
    items: list[EventSummary]
    next: str | None


class Delivery(BaseModel):
    status: str
    error_code: str | None
    received_at: str


class Notification(BaseModel):
    id: int
    event_id: str
    rule: str
    recipient: str
    channel: str
    livemode: bool
    to: str | None
    body: str | None
    status: str
    provider_id: str | None
    error: str | None
    error_code: str | None
    attempts: int
    created_at: str
    updated_at: str
    sent_at: str | None
    run_at: str
    delivery_status: str | None
    notes: str | None
    sequence: str | None
    # What it had come to before each time it was queued again (a retry, a replay).
    earlier: list[dict[str, Any]]
    retryable: bool


class TracedNotification(Notification):
    deliveries: list[Delivery]


class NotificationPage(BaseModel):
    items: list[Notification]
    next: int | None


class Step(BaseModel):
    at: str
    what: str
    detail: str


class EventTrace(EventSummary):
    model_config = ConfigDict(extra="allow")

    api_version: str | None
    stripe_created_at: str | None
    error: str | None
    linked: list[str]
    notifications: list[TracedNotification]  # type: ignore[assignment]
    questions: list[dict[str, Any]]
    replies: list[dict[str, Any]]
    opted_out: list[dict[str, Any]]
    dunning: dict[str, Any] | None
    credited: dict[str, Any] | None
    steps: list[Step]
    payload: dict[str, Any]


class Amount(BaseModel):
    currency: str
    count: int
    amount: int
    amount_text: str | None


class ChartDay(BaseModel):
    day: str
    succeeded: int
    failed: int


class Stats(BaseModel):
    mode: Mode
    timezone: str
    day: str
    succeeded: list[Amount]
    failed: int
    disputes: int
    refunds: list[Amount]
    messages_sent: int
    messages_failed: int
    misses: int
    chart: list[ChartDay]


class OptOut(BaseModel):
    address: str
    reason: str
    source: str
    created_at: str


class OptOutList(BaseModel):
    items: list[OptOut]


class SequenceList(BaseModel):
    items: list[dict[str, Any]]


_REFUSALS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No admin token or session, or an expired one"},
    403: {
        "model": ErrorBody,
        "description": "No PAYHERALD_ADMIN_TOKEN set, or a forged CSRF token",
    },
    422: {"model": ErrorBody, "description": "A parameter this API does not take"},
    429: {"model": ErrorBody, "description": "Too many wrong tokens from this address"},
    503: {"model": ErrorBody, "description": "The store is unavailable"},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": "No such"}}


def add_api_routes(
    app: FastAPI,
    *,
    store: Store,
    auth: AdminAuth,
    feed: LiveFeed,
    default_livemode: bool,
    timezone: str,
    locale: str,
    on_queued: Any,
) -> None:
    """Add the JSON API's routes to ``app``."""
    history = store.history

    def signed_in(request: Request) -> Session:
        """The caller's session; refuses a caller without one, and an action without its
        CSRF token."""
        if not auth.enabled:
            raise ApiRefused(
                403,
                "The API is off: set PAYHERALD_ADMIN_TOKEN, and present it as "
                "Authorization: Bearer <token>.",
            )
        wait = auth.waiting(request) if presents_bearer(request) else None
        if wait is not None:
            raise ApiRefused(
                429,
                f"Too many wrong tokens from this address; try again in {math.ceil(wait)} s.",
                headers={"Retry-After": str(math.ceil(wait))},
            )
        session = auth.session(request)
        if session is None:
            raise ApiRefused(
                401,
                "Present PAYHERALD_ADMIN_TOKEN as Authorization: Bearer <token>, or sign in "
                "again at /signin (a session lasts 12 hours).",
            )
        if request.method not in ("GET", "HEAD") and not auth.csrf_ok(
            session, request.headers.get(CSRF_HEADER)
        ):
            raise ApiRefused(
                403,
                "This action needs the page's CSRF token in the X-CSRF-Token header; reload "
                "the dashboard and try again.",
            )
        return session

    signed = [Depends(signed_in)]

    def livemode_of(mode: Mode | None) -> bool:
        return default_livemode if mode is None else mode == "live"

    @app.get(
        "/api/events",
        summary="Events, newest first, with their notifications' statuses",
        response_model=EventPage,
        dependencies=signed,
        responses=_REFUSALS,
    )
    async def list_events(
        kind: Kind | None = None,
        type: Annotated[str | None, Query(max_length=128)] = None,
        status: Status | None = None,
        q: Annotated[str | None, Query(max_length=100)] = None,
        mode: Mode | None = None,
        before: Annotated[str | None, Query(max_length=600)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> dict[str, Any]:
        try:
            cursor = decode_cursor(before) if before else None
            text = text_filter(q) if q else None
        except ValueError as exc:
            raise ApiRefused(422, str(exc)) from None
        items, following = await run_in_threadpool(
            history.events,
            livemode=livemode_of(mode),
            kind=kind,
            type=type or None,
            status=status,
            text=text,
            before=cursor,
            limit=limit,
            locale=locale,
        )
        return {"items": items, "next": following}

    @app.get(
        "/api/events/{event_id}",
        summary="One event's full trace",
        response_model=EventTrace,
        dependencies=signed,
        responses={**_REFUSALS, **_NOT_FOUND},
    )
    async def event_trace(event_id: Annotated[str, Path(max_length=255)]) -> dict[str, Any]:
        found = await run_in_threadpool(history.trace, event_id, locale=locale)
        if found is None:
            raise ApiRefused(404, f"No event {event_id} is stored here.")
        return found

    @app.get(
        "/api/notifications",
        summary="Notifications, newest first",
        response_model=NotificationPage,
        dependencies=signed,
        responses=_REFUSALS,
    )
    async def list_notifications(
        status: Status | None = None,
        before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> dict[str, Any]:
        items, following = await run_in_threadpool(
            history.notifications, status=status, before=before, limit=limit
        )
        return {"items": items, "next": following}

    @app.post(
        "/api/notifications/{notification_id}/retry",
        summary="Send a failed notification again, from its rule's first channel",
        status_code=202,
        response_model=Notification,
        dependencies=signed,
        responses={
            **_REFUSALS,
            **_NOT_FOUND,
            409: {"model": ErrorBody, "description": "Not failed, or may have been sent"},
        },
    )
    async def retry_notification(
        notification_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    ) -> dict[str, Any]:
        return await retry(store, notification_id, on_queued)

    @app.get(
        "/api/stats",
        summary="Today's figures and the last 30 days' chart",
        response_model=Stats,
        dependencies=signed,
        responses=_REFUSALS,
    )
    async def stats(mode: Mode | None = None) -> dict[str, Any]:
        figures: dict[str, Any] = await run_in_threadpool(
            history.stats, livemode=livemode_of(mode), timezone=timezone, locale=locale
        )
        return figures

    @app.get(
        "/api/optouts",
        summary="The numbers and addresses that opted out",
        response_model=OptOutList,
        dependencies=signed,
        responses=_REFUSALS,
    )
    async def optouts() -> dict[str, Any]:
        rows = await run_in_threadpool(store.consents.suppressed)
        return {"items": [jsonable(row) for row in rows]}

    @app.get(
        "/api/sequences",
        summary="Dunning sequences, newest first",
        response_model=SequenceList,
        dependencies=signed,
        responses=_REFUSALS,
    )
    async def sequences(
        status: SequenceStatus | None = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 100,
    ) -> dict[str, Any]:
        rows = await run_in_threadpool(store.dunning.sequences, status=status, limit=limit)
        return {"items": [jsonable(row) for row in rows]}

    @app.get(
        "/api/feed",
        summary="The live feed (server-sent events): each new or changed event",
        response_class=StreamingResponse,
        dependencies=signed,
        responses={**_REFUSALS, 200: {"content": {"text/event-stream": {}}}},
    )
    async def live_feed(request: Request, mode: Mode | None = None) -> StreamingResponse:
        def still_allowed() -> bool:
            return auth.session(request) is not None

        return StreamingResponse(
            feed.stream(
                livemode=livemode_of(mode),
                still_allowed=still_allowed,
                disconnected=request.is_disconnected,
                locale=locale,
                resume_from=_last_event_id(request),
            ),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )


async def retry(store: Store, notification_id: int, on_queued: Any) -> dict[str, Any]:
    """Queue ``notification_id`` again (the API's and the dashboard's retry): the
    notification as it is now, or ApiRefused (404, 409) saying why not."""
    found = await run_in_threadpool(store.history.notification, notification_id)
    if found is None:
        raise ApiRefused(404, f"No notification {notification_id} is stored here.")
    if not await run_in_threadpool(store.retry_notification, notification_id):
        if found["error_code"] == MAY_HAVE_BEEN_SENT:
            reason = (
                "it may have been sent (its outcome could not be found out), so it is "
                "not sent again"
            )
        else:
            reason = f"it is {found['status']}, not failed"
        raise ApiRefused(409, f"Notification {notification_id} was not queued again: {reason}.")
    on_queued()
    again = await run_in_threadpool(store.history.notification, notification_id)
    assert again is not None
    return again


def _last_event_id(request: Request) -> datetime | None:
    """When a reconnecting browser's last message was found (the feed's ids are times)."""
    value = request.headers.get("last-event-id", "")
    try:
        found = datetime.fromisoformat(value) if 0 < len(value) <= 64 else None
    except ValueError:
        return None
    return found if found is not None and found.tzinfo is not None else None
