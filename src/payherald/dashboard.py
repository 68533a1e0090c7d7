"""The dashboard's HTML pages: the live feed, an event's trace, the notifications that
failed, the opt-outs, and signing in and out.

Pages are rendered on the server with Jinja2 (autoescaped, strict about undefined names)
from ``web/templates``; ``web/static`` holds one stylesheet and one script, served by the
app at ``/static/``. No page has an inline script, so every page is sent with a
Content-Security-Policy of ``default-src 'self'``: markup that got into a page from an
event (a customer's email, a name) can neither run nor load anything.

Who may see a page is ``admin.AdminAuth``'s decision: an anonymous GET is sent to
``/signin?next=<path>``; with no admin token configured every page says how to set one
and nothing else, and every action is refused (403). Every action is a POST carrying the
session's CSRF token in the form field ``csrf``.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

import structlog
from fastapi import FastAPI
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from payherald.admin import AdminAuth, Session
from payherald.api import ApiRefused, retry
from payherald.dashboard_format import chart_bars, format_filters
from payherald.event_facts import KINDS
from payherald.exceptions import PayloadTooLarge, StoreUnavailable
from payherald.serving import read_body
from payherald.store import Store
from payherald.store.history import decode_cursor, text_filter
from payherald.store.statuses import NotificationStatus

__all__ = ["add_dashboard_routes", "local_path"]

WEB = Path(__file__).parent / "web"
_log = structlog.get_logger("payherald.dashboard")

NOTIFICATION_STATUSES = tuple(status.value for status in NotificationStatus)
PAGE_SIZE = 50
# A form of ours is a token, a path and a CSRF token: anything longer is not one of ours.
MAX_FORM_BYTES = 8192

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'; object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}
# Pages show customers' data: no cache, shared or not, keeps a copy.
PAGE_HEADERS = {**SECURITY_HEADERS, "Cache-Control": "no-store"}


class _StaticFiles(StaticFiles):
    """The stylesheet and the script, sent with the pages' security headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


def add_dashboard_routes(
    app: FastAPI,
    *,
    store: Store,
    auth: AdminAuth,
    default_livemode: bool,
    timezone: str,
    business_name: str | None,
    locale: str,
    on_queued: Callable[[], None],
) -> None:
    """Add the dashboard's pages to ``app``, and its static files at ``/static``. Events
    are listed in ``default_livemode``'s mode unless a page asks for the other; times are
    shown, and days counted, in ``timezone`` (an IANA name); amounts are written for
    ``locale``; ``business_name`` titles the pages. ``on_queued`` wakes the worker after a
    retry queued a notification again."""
    templates = Environment(
        loader=FileSystemLoader(WEB / "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    templates.filters.update(format_filters(timezone))
    templates.globals.update(business_name=business_name, timezone=timezone, kinds=KINDS)
    default_mode = "live" if default_livemode else "test"

    def render(
        name: str,
        *,
        session: Session | None,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        csrf = auth.csrf_token(session) if session is not None else None
        html = templates.get_template(name).render(
            signed_in=session is not None, csrf=csrf, **context
        )
        return HTMLResponse(
            html, status_code=status_code, headers={**PAGE_HEADERS, **(headers or {})}
        )

    def problem(status: int, message: str, session: Session | None) -> HTMLResponse:
        return render("problem.html", session=session, status_code=status, message=message)

    def token_unset(status: int = 200) -> HTMLResponse:
        return render("token_unset.html", session=None, status_code=status)

    def redirect(to: str) -> RedirectResponse:
        return RedirectResponse(to, status_code=303, headers=PAGE_HEADERS)

    def page_session(request: Request) -> Session | Response:
        """The session a page is shown to, or the answer for anyone else."""
        if not auth.enabled:
            return token_unset()
        session = auth.session(request)
        if session is None:
            wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return redirect(f"/signin?next={quote(wanted, safe='')}")
        return session

    async def action_session(request: Request) -> tuple[Session, dict[str, str]] | Response:
        """The session an action (a POST) is taken for and its form, once its CSRF token
        checks; or the answer refusing it."""
        if not auth.enabled:
            return token_unset(status=403)
        session = auth.session(request)
        if session is None:
            return problem(401, "Your session has ended: sign in again.", None)
        form = await _read_form(request)
        if form is None:
            return problem(413, "That form is too large to be one of the dashboard's.", session)
        if not auth.csrf_ok(session, form.get("csrf")):
            return problem(
                403,
                "This form's CSRF token is missing or wrong: reload the page and try again.",
                session,
            )
        return session, form

    async def feed_page(request: Request) -> Response:
        session = page_session(request)
        if isinstance(session, Response):
            return session
        query = request.query_params
        filters = {name: query.get(name, "") for name in ("kind", "status", "q", "mode")}
        filters["mode"] = filters["mode"] or default_mode
        before = query.get("before") or None
        error = _filter_error(filters)
        try:
            text = text_filter(filters["q"]) if filters["q"] else None
            cursor = decode_cursor(before) if before else None
        except ValueError as exc:
            error = error or str(exc)
        if error is not None:
            return problem(422, error, session)
        livemode = filters["mode"] == "live"
        items, next_cursor = await run_in_threadpool(
            store.history.events,
            livemode=livemode,
            kind=filters["kind"] or None,
            status=filters["status"] or None,
            text=text,
            before=cursor,
            limit=PAGE_SIZE,
            locale=locale,
        )
        stats = await run_in_threadpool(
            store.history.stats, livemode=livemode, timezone=timezone, locale=locale
        )
        return render(
            "feed.html",
            session=session,
            events=items,
            next_cursor=next_cursor,
            filters=filters,
            statuses=NOTIFICATION_STATUSES,
            paged=before is not None,
            stats=stats,
            chart=chart_bars(stats["chart"]),
        )

    async def event_page(request: Request) -> Response:
        session = page_session(request)
        if isinstance(session, Response):
            return session
        event_id = request.path_params["event_id"]
        trace = await run_in_threadpool(store.history.trace, event_id, locale=locale)
        if trace is None:
            return problem(404, f"No event {event_id} is stored.", session)
        return render("event.html", session=session, event=trace, here=request.url.path)

    async def notifications_page(request: Request) -> Response:
        session = page_session(request)
        if isinstance(session, Response):
            return session
        status = request.query_params.get("status", "")
        if status and status not in NOTIFICATION_STATUSES:
            return problem(
                422, f"status must be one of {', '.join(NOTIFICATION_STATUSES)}.", session
            )
        before = request.query_params.get("before", "")
        if before and not (before.isdigit() and 0 < int(before) < 2**63):
            return problem(422, "before must be the id a page of messages links to.", session)
        items, next_cursor = await run_in_threadpool(
            store.history.notifications,
            status=status or None,
            before=int(before) if before else None,
            limit=PAGE_SIZE,
        )
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return render(
            "notifications.html",
            session=session,
            notifications=items,
            next_cursor=next_cursor,
            status=status,
            statuses=NOTIFICATION_STATUSES,
            here=here,
        )

    async def retry_notification(request: Request) -> Response:
        taken = await action_session(request)
        if isinstance(taken, Response):
            return taken
        session, form = taken
        raw_id = request.path_params["notification_id"]
        if not (raw_id.isdigit() and 0 < int(raw_id) < 2**63):
            return problem(404, f"No notification {raw_id} is stored here.", session)
        try:
            again = await retry(store, int(raw_id), on_queued)
        except ApiRefused as exc:
            return problem(exc.status, exc.message, session)
        trace_page = f"/events/{quote(str(again['event_id']), safe='')}"
        return redirect(local_path(form.get("next")) or trace_page)

    async def optouts_page(request: Request) -> Response:
        session = page_session(request)
        if isinstance(session, Response):
            return session
        rows = await run_in_threadpool(store.consents.suppressed)
        return render("optouts.html", session=session, optouts=list(reversed(rows)))

    async def signin_page(request: Request) -> Response:
        if not auth.enabled:
            return token_unset()
        wanted = local_path(request.query_params.get("next")) or "/"
        if auth.session(request) is not None:
            return redirect(wanted)
        return render("signin.html", session=None, next=wanted, message=None)

    async def sign_in(request: Request) -> Response:
        if not auth.enabled:
            return token_unset(status=403)
        if request.headers.get("sec-fetch-site") == "cross-site":
            # Another site's page posting wrong tokens in the operator's browser would lock
            # the operator out; nobody signs in from another site's form.
            return problem(403, "Sign in from payherald's own sign-in page.", None)
        form = await _read_form(request)
        if form is None:
            return problem(413, "That form is too large to be one of the dashboard's.", None)
        wanted = local_path(form.get("next")) or "/"
        outcome = auth.sign_in(request, form.get("token", ""))
        if isinstance(outcome, Session):
            response = redirect(wanted)
            auth.set_cookie(response, request, outcome)
            return response
        if outcome is None:
            return render(
                "signin.html",
                session=None,
                status_code=401,
                next=wanted,
                message="That is not the admin token.",
            )
        wait = math.ceil(outcome)
        return render(
            "signin.html",
            session=None,
            status_code=429,
            headers={"Retry-After": str(wait)},
            next=wanted,
            message=f"Too many wrong tokens: try again in {wait} s.",
        )

    async def sign_out(request: Request) -> Response:
        taken = await action_session(request)
        if isinstance(taken, Response):
            return taken
        response = redirect("/signin")
        auth.clear_cookie(response, request)
        return response

    def answering_503(
        endpoint: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        """``endpoint``, answering a page that says so when the store is unavailable."""

        async def answer(request: Request) -> Response:
            try:
                return await endpoint(request)
            except StoreUnavailable as exc:
                _log.error("dashboard_store_unavailable", path=request.url.path, error=exc.message)
                return problem(
                    503,
                    "The store is unavailable: payherald cannot read its database (its log "
                    "says why). Reload in a moment.",
                    auth.session(request),
                )

        return answer

    app.mount("/static", _StaticFiles(directory=WEB / "static"), name="static")
    routes: list[tuple[str, Callable[[Request], Awaitable[Response]], str]] = [
        ("/", feed_page, "GET"),
        ("/events/{event_id}", event_page, "GET"),
        ("/notifications", notifications_page, "GET"),
        ("/notifications/{notification_id}/retry", retry_notification, "POST"),
        ("/optouts", optouts_page, "GET"),
        ("/signin", signin_page, "GET"),
        ("/signin", sign_in, "POST"),
        ("/signout", sign_out, "POST"),
    ]
    for path, endpoint, method in routes:
        app.router.add_route(
            path, answering_503(endpoint), methods=[method], include_in_schema=False
        )


def local_path(wanted: str | None) -> str | None:
    """``wanted`` if it is a path on this site (``/...``), else None: never ``//host`` or
    ``/\\host``, which browsers take for another site, nor anything with a control
    character."""
    if not wanted or not wanted.startswith("/") or wanted[1:2] in ("/", "\\"):
        return None
    if any(ord(character) < 0x20 or ord(character) == 0x7F for character in wanted):
        return None
    return wanted


def _filter_error(filters: Mapping[str, str]) -> str | None:
    """What is wrong with the feed's filters, in a sentence; None if nothing is."""
    if filters["kind"] and filters["kind"] not in KINDS:
        return f"kind must be one of {', '.join(KINDS)}."
    if filters["status"] and filters["status"] not in NOTIFICATION_STATUSES:
        return f"status must be one of {', '.join(NOTIFICATION_STATUSES)}."
    if filters["mode"] not in ("live", "test"):
        return "mode must be live or test."
    return None


async def _read_form(request: Request) -> dict[str, str] | None:
    """The request's URL-encoded form (its first value of each field); None when it is
    longer than MAX_FORM_BYTES."""
    try:
        body = await read_body(request, limit=MAX_FORM_BYTES)
    except PayloadTooLarge:
        return None
    form: dict[str, str] = {}
    for name, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        form.setdefault(name, value)
    return form
