"""Authentication, authorisation and the audit log, in front of every endpoint.

One ASGI middleware, so that a caller without a valid token gets 401 and one with the
wrong role 403 before anything else is looked at (body, parameters, existence of the
item), and so that every call is audited, whatever its outcome.

Credentials: `Authorization: Bearer pds_...` on any request. The dashboard's login
form instead sets an HttpOnly, SameSite=Strict cookie holding the token; the cookie is
accepted for GET and HEAD only, so no state can be changed through it (no CSRF).
"""

from __future__ import annotations

import time
from http.cookies import SimpleCookie
from typing import Any

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from daemon.api import access
from daemon.api.context import ApiContext, Principal
from daemon.api.errors import problem
from daemon.store import StoreError

log = structlog.get_logger("pdsync.api")

COOKIE = "pdsync_token"
# Each endpoint of the access table with the regular expression its path matches.
_TEMPLATES = [(method, path, compile_path(path)[0]) for method, path in access.ACCESS]
UNMATCHED = "<unmatched>"  # what the audit log says for a path no route knows
_READ_METHODS = frozenset({"GET", "HEAD"})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def presented_token(scope: Scope) -> str | None:
    """The bearer token of the request, or the cookie's for GET and HEAD."""
    authorization = _header(scope, b"authorization")
    if authorization is not None:
        scheme, _, value = authorization.partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value.strip() else None
    if scope["method"] in _READ_METHODS:
        raw = _header(scope, b"cookie")
        if raw:
            cookie: SimpleCookie = SimpleCookie()
            try:
                cookie.load(raw)
            except Exception:  # a malformed cookie header is no credential
                return None
            morsel = cookie.get(COOKIE)
            return morsel.value if morsel is not None and morsel.value else None
    return None


class AccessControl:
    """ASGI middleware: who is calling, may they, and an audit record of the call."""

    def __init__(self, app: ASGIApp, *, ctx: ApiContext) -> None:
        self.app = app
        self.ctx = ctx

    def _match(self, scope: Scope) -> tuple[str, bool]:
        """The path template the request goes to (from the access table, which create_app
        holds equal to the routes), and whether its method matches too (False: 405)."""
        path = str(scope["path"])
        root = str(scope.get("root_path", ""))
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        method = "GET" if scope["method"] == "HEAD" else scope["method"]
        partial: str | None = None
        for allowed_method, template, pattern in _TEMPLATES:
            if pattern.match(path):
                if allowed_method == method:
                    return template, True
                partial = partial or template
        return (partial, False) if partial is not None else (UNMATCHED, False)

    async def _authenticate(self, scope: Scope) -> Principal | None:
        token = presented_token(scope)
        if token is None:
            return None
        row = await run_in_threadpool(self.ctx.store.authenticate_token, token)
        if row is None:
            return None
        return Principal(token_id=row.id, name=row.name, role=row.role)

    def _allowed(self, method: str, template: str, full: bool) -> access.Allowed:
        if not full:
            return access.READERS  # 404 and 405 only for callers with a valid token
        endpoint = ("GET" if method == "HEAD" else method, template)
        try:
            return access.allowed_roles(endpoint, metrics_public=self.ctx.config.metrics_public)
        except KeyError:
            return frozenset()  # not in the table: nobody (create_app prevents this)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        method = str(scope["method"])
        template, full = self._match(scope)
        status = 500

        async def send_recording(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        who: Principal | None = None
        try:
            try:
                who = await self._authenticate(scope)
            except StoreError:
                await problem(503, "the store is unavailable; try again later")(
                    scope, receive, send_recording
                )
                return
            refusal = self._refusal(method, template, full, who)
            if refusal is not None:
                await refusal(scope, receive, send_recording)
                return
            state: dict[str, Any] = scope.setdefault("state", {})
            state["principal"] = who
            await self.app(scope, receive, send_recording)
            # The login form authenticates inside its handler.
            who = state.get("principal") if isinstance(state.get("principal"), Principal) else who
        finally:
            if template not in access.NOT_AUDITED:
                await self._audit(who, method, template, status, started)

    def _refusal(
        self, method: str, template: str, full: bool, who: Principal | None
    ) -> Response | None:
        allowed = self._allowed(method, template, full)
        if allowed is access.PUBLIC:
            return None
        if who is None:
            if method in _READ_METHODS and template.startswith("/dashboard"):
                return RedirectResponse("/dashboard/login", status_code=303)
            return problem(401, "a valid bearer token is needed")
        if who.role not in allowed:
            return problem(403, f"the {who.role} role may not do this")
        return None

    async def _audit(
        self, who: Principal | None, method: str, template: str, status: int, started: float
    ) -> None:
        try:
            await run_in_threadpool(
                self.ctx.store.record_api_call,
                token_id=who.token_id if who else None,
                token_name=who.name if who else None,
                role=who.role.value if who else None,
                method=method,
                route=template,
                status=status,
                duration_ms=int((time.monotonic() - started) * 1000),
            )
        except StoreError as exc:
            log.warning("api_audit_failed", route=template, status=status, error=type(exc).__name__)
