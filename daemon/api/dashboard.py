"""The ops dashboard: read-only HTML pages, server-rendered, no JavaScript, no outside assets.

Signing in: the login form (with a CSRF token, double-submitted in a cookie of its own)
takes an API token and starts a session in the store; the cookie holds the session's
id, never the token (HttpOnly, SameSite=Strict, Secure with `[api] cookie_secure`), is
accepted for GET only, and stops working at sign-out, after `[api] session_hours` or
when the token is revoked. `Authorization: Bearer` works as well. Every role may read
every page; the pages show ids, states, counts and masked identifiers, never a task's
instruction. Also here: /docs, the API reference rendered from the OpenAPI document
(Swagger UI would load from a CDN).
"""

from __future__ import annotations

import functools
import hmac
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from daemon.api import access
from daemon.api.auth import COOKIE
from daemon.api.context import ApiContext, Principal, context, principal
from daemon.api.routes_erasure import erasure_out
from daemon.api.routes_ops import connector_residuals, list_customers
from daemon.incidents import PREFIX as INCIDENT
from daemon.logs import scrub
from daemon.report import build_report, describe_deleted
from daemon.store import EventLevel, RunRow

if TYPE_CHECKING:
    from jinja2 import Environment

router = APIRouter(include_in_schema=False)
Ctx = Annotated[ApiContext, Depends(context)]
Who = Annotated[Principal, Depends(principal)]

# The login form's CSRF token: in a hidden field and in this cookie (which a form posted
# from another site does not carry: SameSite=Strict), compared on submission.
CSRF_COOKIE = "pdsync_login_csrf"
CSRF_MAX_AGE = 3600
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
NAV = (
    ("/dashboard", "Overview"),
    ("/dashboard/runs", "Runs"),
    ("/dashboard/casework", "Disputes & tasks"),
    ("/dashboard/erasures", "Erasures"),
    ("/dashboard/incidents", "Incidents"),
)


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "–"


@functools.cache
def _templates() -> Environment:
    # Made (and Jinja2 imported) for the first page: a daemon whose dashboard nobody
    # opens does not carry it.
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=PackageLoader("daemon.api", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["deleted"] = describe_deleted
    return env


def render(template: str, status: int = 200, **values: Any) -> HTMLResponse:
    """A page with the dashboard's security headers (strict CSP: no scripts at all)."""
    html = _templates().get_template(template).render(nav=NAV, **values)
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def _timeline(runs: list[RunRow]) -> list[dict[str, Any]]:
    """Runs with their duration as a share of the longest, for the bars."""
    seconds = [
        (r.finished_at - r.started_at).total_seconds() if r.finished_at else None for r in runs
    ]
    longest = max((s for s in seconds if s), default=1.0) or 1.0
    return [
        {"run": r, "seconds": s, "width": max(2, round(100 * (s or 0) / longest))}
        for r, s in zip(runs, seconds, strict=True)
    ]


def _incidents(ctx: ApiContext, since: datetime) -> list[Any]:
    events = ctx.store.run_events(since=since, min_level=EventLevel.WARNING, limit=500)
    picked = [e for e in events if e.level is EventLevel.ERROR or e.event.startswith(INCIDENT)]
    return [{"event": e, "detail": scrub(dict(e.detail))} for e in reversed(picked)]


def _overview(ctx: ApiContext) -> dict[str, Any]:
    now = datetime.now(UTC)
    erasures = [erasure_out(ctx.store, r, now=now) for r in ctx.store.list_erasures(limit=50)]
    return {
        "customers": list_customers(ctx),
        "timeline": _timeline(ctx.store.list_runs(limit=20)),
        "erasures": [e for e in erasures if e.state not in ("completed", "cancelled")][:20],
        "incidents": len(_incidents(ctx, now - timedelta(hours=24))),
        "now": now,
    }


@router.get("/dashboard")
async def overview(ctx: Ctx, who: Who) -> Response:
    values = await run_in_threadpool(_overview, ctx)
    return render("overview.html", who=who, page="/dashboard", **values)


@router.get("/dashboard/runs")
async def runs(ctx: Ctx, who: Who) -> Response:
    rows = await run_in_threadpool(ctx.store.list_runs, limit=200)
    return render("runs.html", who=who, page="/dashboard/runs", timeline=_timeline(rows))


@router.get("/dashboard/casework")
async def casework(ctx: Ctx, who: Who) -> Response:
    disputes = await run_in_threadpool(ctx.store.list_disputes, open_only=True)
    tasks = await run_in_threadpool(ctx.store.list_tasks, open_only=True)
    quarantined = await run_in_threadpool(ctx.store.list_quarantine, open_only=True)
    return render(
        "casework.html",
        who=who,
        page="/dashboard/casework",
        disputes=disputes,
        tasks=tasks,
        quarantined=quarantined,
    )


@router.get("/dashboard/erasures")
async def erasures(ctx: Ctx, who: Who) -> Response:
    def load() -> list[Any]:
        now = datetime.now(UTC)
        return [erasure_out(ctx.store, r, now=now) for r in ctx.store.list_erasures(limit=200)]

    return render(
        "erasures.html", who=who, page="/dashboard/erasures", erasures=await run_in_threadpool(load)
    )


@router.get("/dashboard/customers/{customer_id}")
async def customer_report(ctx: Ctx, who: Who, customer_id: str) -> Response:
    """The customer's processing report (daemon/report.py), as a page."""
    if customer_id not in {c.id for c in ctx.settings.customers}:
        return render("missing.html", status=404, who=who, page="/dashboard", what="customer")
    report = await run_in_threadpool(
        build_report, ctx.settings, ctx.store, customer_id, residuals=connector_residuals(ctx)
    )
    return render("report.html", who=who, page="/dashboard", report=report)


@router.get("/dashboard/incidents")
async def incidents(ctx: Ctx, who: Who) -> Response:
    since = datetime.now(UTC) - timedelta(days=7)
    found = await run_in_threadpool(_incidents, ctx, since)
    return render("incidents.html", who=who, page="/dashboard/incidents", incidents=found)


def _login_page(ctx: ApiContext, *, status: int = 200, error: str | None = None) -> Response:
    """The login form with a fresh CSRF token, in the page and in its cookie."""
    csrf = secrets.token_urlsafe(32)
    response = render(
        "login.html",
        status=status,
        who=None,
        page="",
        error=error,
        csrf=csrf,
        hours=f"{ctx.config.session_hours:g}",
    )
    response.set_cookie(
        CSRF_COOKIE,
        csrf,
        max_age=CSRF_MAX_AGE,
        httponly=True,
        samesite="strict",
        secure=ctx.config.cookie_secure,
        path="/dashboard/login",
    )
    return response


@router.get("/dashboard/login")
def login_form(ctx: Ctx) -> Response:
    return _login_page(ctx)


@router.post("/dashboard/login")
async def login(request: Request, ctx: Ctx) -> Response:
    form = parse_qs((await request.body())[:4096].decode("utf-8", "replace"))
    sent = (form.get("csrf") or [""])[0].encode()
    expected = request.cookies.get(CSRF_COOKIE, "").encode()
    if not expected or not hmac.compare_digest(sent, expected):
        return _login_page(
            ctx,
            status=403,
            error="This sign-in form expired or came from another site: reload it and try again.",
        )
    token = (form.get("token") or [""])[0].strip()
    row = await run_in_threadpool(ctx.store.authenticate_token, token) if token else None
    if row is None:
        return _login_page(ctx, status=401, error="Unknown or revoked token.")
    lifetime = timedelta(hours=ctx.config.session_hours)
    session = await run_in_threadpool(ctx.store.create_session, row.id, lifetime=lifetime)
    # For the audit record of this call (the middleware reads it back).
    request.state.principal = Principal(token_id=row.id, name=row.name, role=row.role)
    response = RedirectResponse("/dashboard", status_code=303, headers=HEADERS)
    response.set_cookie(
        COOKIE,
        session,
        max_age=int(lifetime.total_seconds()),
        httponly=True,
        samesite="strict",
        secure=ctx.config.cookie_secure,
        path="/",
    )
    response.delete_cookie(CSRF_COOKIE, path="/dashboard/login", httponly=True, samesite="strict")
    return response


@router.post("/dashboard/logout")
async def logout(request: Request, ctx: Ctx) -> Response:
    """End the session in the store (a copied cookie is worthless after), then the cookie."""
    session = request.cookies.get(COOKIE)
    if session:
        row = await run_in_threadpool(ctx.store.authenticate_session, session)
        if row is not None:  # the audit record names who signed out
            request.state.principal = Principal(token_id=row.id, name=row.name, role=row.role)
        await run_in_threadpool(ctx.store.end_session, session)
    response = RedirectResponse("/dashboard/login", status_code=303, headers=HEADERS)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/dashboard/style.css")
def stylesheet() -> Response:
    css = resources.files("daemon.api").joinpath("static/style.css").read_text("utf-8")
    return Response(css, media_type="text/css", headers={"Cache-Control": "max-age=3600"})


def _operations(openapi: Mapping[str, Any], metrics_public: bool) -> list[dict[str, Any]]:
    operations = []
    for path, methods in openapi.get("paths", {}).items():
        for method, spec in methods.items():
            endpoint = (method.upper(), path)
            allowed = access.allowed_roles(endpoint, metrics_public=metrics_public)
            operations.append(
                {
                    "method": method.upper(),
                    "path": path,
                    "summary": spec.get("summary", ""),
                    "roles": access.describe(allowed),
                    "parameters": [p["name"] for p in spec.get("parameters", [])],
                    "body": "requestBody" in spec,
                }
            )
    return operations


@router.get("/docs")
def docs(request: Request, ctx: Ctx) -> Response:
    operations = _operations(request.app.openapi(), ctx.config.metrics_public)
    return render("docs.html", who=None, page="", operations=operations)
