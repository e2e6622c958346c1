"""Authentication, authorisation and the audit log, in front of every endpoint.

One ASGI middleware, so that a caller without a valid token gets 401 and one with the
wrong role 403 before anything else is looked at (body, parameters, existence of the
item), and so that every authenticated call is audited, whatever its outcome.

Credentials: `Authorization: Bearer pds_...` on any request. The dashboard's login
form instead starts a session kept in the store (daemon.store.tokens) and sets its id
in an HttpOnly, SameSite=Strict cookie, never the token itself; the cookie is accepted
for GET and HEAD only, so no state can be changed through it (no CSRF).

Hostile callers: failed authentication is counted per client address
(daemon.api.ratelimit); past the limit, requests that need a credential get 429 with
Retry-After before the credential is looked at. Calls without a valid credential are
never written to the audit log (anyone could fill it): /metrics counts them instead.

Speed (issue 15): a verified credential is remembered for CREDENTIAL_TTL_SECONDS
(CredentialCache), so a busy client is not looked up in the store on every request;
revoking a token or ending a session through this process's Store drops the cache at
once, and one revoked elsewhere (the CLI, another instance) stops working within the
TTL. Audit records are queued and written in batches by the store (queue_api_call).
Neither waits for the store's write lock on a read request.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from http.cookies import SimpleCookie
from typing import Any, Final, Literal

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from daemon.api import access
from daemon.api.context import ApiContext, Principal
from daemon.api.errors import problem
from daemon.api.ratelimit import client_key
from daemon.store import StoreError

log = structlog.get_logger("pdsync.api")

COOKIE = "pdsync_session"  # the dashboard's session id (daemon.store.tokens)
# Each endpoint of the access table with the regular expression its path matches.
_TEMPLATES = [(method, path, compile_path(path)[0]) for method, path in access.ACCESS]
UNMATCHED = "<unmatched>"  # what the audit log says for a path no route knows
_READ_METHODS = frozenset({"GET", "HEAD"})
LOGIN: Final = ("POST", "/dashboard/login")
Kind = Literal["bearer", "session"]
# How long a verified credential is believed without asking the store again: the most
# a token revoked by another process (`pdsync tokens revoke`) or a session that expired
# keeps working.
CREDENTIAL_TTL_SECONDS = 5.0
CREDENTIAL_CACHE_SIZE = 1024


class _Failed:
    """A shared lookup that raised: each request that waited for it looks up itself."""


_FAILED = _Failed()


class CredentialCache:
    """Credentials verified lately, by a digest of their value (never the value).

    An entry is believed for `ttl` seconds and only while the Store's
    `credentials_version` is what it was when the entry was made (see Store.revoke_token).
    Only successful verifications are kept: a wrong credential always asks the store
    (and counts against the client's limit); requests that come while the store is
    asked about the same credential share that answer (AccessControl).
    """

    def __init__(self, *, ttl: float = CREDENTIAL_TTL_SECONDS, size: int = CREDENTIAL_CACHE_SIZE):
        self.ttl = ttl
        self.size = size
        self._entries: OrderedDict[bytes, tuple[float, int, Principal]] = OrderedDict()

    @staticmethod
    def _key(kind: Kind, value: str) -> bytes:
        return hashlib.sha256(f"{kind}\x00{value}".encode()).digest()

    def get(self, kind: Kind, value: str, version: int) -> Principal | None:
        return self.get_by_key(self._key(kind, value), version)

    def get_by_key(self, key: bytes, version: int) -> Principal | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        until, made_at_version, principal = entry
        if until < time.monotonic() or made_at_version != version:
            del self._entries[key]
            return None
        return principal

    def put(self, kind: Kind, value: str, version: int, principal: Principal) -> None:
        self.put_by_key(self._key(kind, value), version, principal)

    def put_by_key(self, key: bytes, version: int, principal: Principal) -> None:
        self._entries[key] = (time.monotonic() + self.ttl, version, principal)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def presented_credential(scope: Scope) -> tuple[Kind, str] | None:
    """The bearer token of the request, or for GET and HEAD the session cookie's id."""
    authorization = _header(scope, b"authorization")
    if authorization is not None:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return "bearer", value.strip()
        return None
    if scope["method"] in _READ_METHODS:
        session = session_cookie(_header(scope, b"cookie"))
        return ("session", session) if session else None
    return None


def session_cookie(raw: str | None, name: str = COOKIE) -> str | None:
    """The value of cookie `name` in a Cookie header, if any."""
    if not raw:
        return None
    cookie: SimpleCookie = SimpleCookie()
    try:
        cookie.load(raw)
    except Exception:  # a malformed cookie header is no credential
        return None
    morsel = cookie.get(name)
    return morsel.value if morsel is not None and morsel.value else None


def client_address(scope: Scope) -> str:
    """The client, for the failure limit: its address (the TCP peer's, or behind a
    trusted proxy the one it forwarded for: uvicorn rewrites the scope for those alone,
    see ApiServer), an IPv6 one as its /64 (ratelimit.client_key)."""
    client = scope.get("client")
    return client_key(str(client[0])) if client else "unknown"


class AccessControl:
    """ASGI middleware: who is calling, may they, and an audit record of the call."""

    def __init__(self, app: ASGIApp, *, ctx: ApiContext) -> None:
        self.app = app
        self.ctx = ctx
        self.credentials = CredentialCache()
        # Lookups under way, by credential digest and credentials_version.
        self._verifying: dict[tuple[bytes, int], asyncio.Future[Principal | _Failed | None]] = {}

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

    async def _authenticate(self, credential: tuple[Kind, str] | None) -> Principal | None:
        if credential is None:
            return None
        kind, value = credential
        version = self.ctx.store.credentials_version
        key = CredentialCache._key(kind, value)
        known = self.credentials.get_by_key(key, version)
        if known is not None:
            return known
        # Requests with one credential share one lookup: a busy client's requests all
        # miss together when its entry expires, and would each take a thread and a
        # store connection. The version is in the key: a lookup that started before a
        # revocation through this Store answers nobody who came after it.
        flight = (key, version)
        pending = self._verifying.get(flight)
        if pending is not None:
            shared = await asyncio.shield(pending)
            if not isinstance(shared, _Failed):
                return shared
            return await self._look_up(kind, value, key, version)  # it failed: try ourselves
        pending = asyncio.get_running_loop().create_future()
        self._verifying[flight] = pending
        try:
            principal = await self._look_up(kind, value, key, version)
            pending.set_result(principal)
        finally:
            del self._verifying[flight]
            if not pending.done():
                pending.set_result(_FAILED)
        return principal

    async def _look_up(self, kind: Kind, value: str, key: bytes, version: int) -> Principal | None:
        store = self.ctx.store
        check = store.authenticate_session if kind == "session" else store.authenticate_token
        row = await run_in_threadpool(check, value)
        if row is None:
            return None
        principal = Principal(token_id=row.id, name=row.name, role=row.role)
        self.credentials.put_by_key(key, version, principal)
        return principal

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
        client = client_address(scope)
        credential = presented_credential(scope)
        public = self._allowed(method, template, full) is access.PUBLIC
        if public and credential is not None and credential[0] == "session":
            # The browser sends its cookie with the login page and the stylesheet too:
            # an expired session must not count as a failure on every one of them.
            credential = None
        limiter = self.ctx.limiter
        guarded = credential is not None or not public or (method, template) == LOGIN
        if guarded:
            wait = limiter.refuse(client)
            if wait is not None:
                refused = problem(429, "too many failed authentications; try again later")
                refused.headers["Retry-After"] = str(wait)
                await refused(scope, receive, send)
                return
        try:
            try:
                who = await self._authenticate(credential)
            except StoreError:
                await problem(503, "the store is unavailable; try again later")(
                    scope, receive, send_recording
                )
                return
            refusal = self._refusal(method, template, full, who)
            if refusal is not None:
                if who is None and credential is not None and credential[0] == "session":
                    # Ended or expired: drop it, so that it is not tried again.
                    refusal.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
                await refusal(scope, receive, send_recording)
                return
            state: dict[str, Any] = scope.setdefault("state", {})
            state["principal"] = who
            await self.app(scope, receive, send_recording)
            # The login form authenticates inside its handler.
            who = state.get("principal") if isinstance(state.get("principal"), Principal) else who
        finally:
            if who is None and (credential is not None or status == 401):
                kind = "missing" if credential is None else "invalid"
                limiter.failed(client, "login" if (method, template) == LOGIN else kind)
            elif who is not None and template not in access.NOT_AUDITED:
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
        self, who: Principal, method: str, template: str, status: int, started: float
    ) -> None:
        duration_ms = int((time.monotonic() - started) * 1000)

        def record(sink: Callable[..., object]) -> object:
            return sink(
                token_id=who.token_id,
                token_name=who.name,
                role=who.role.value,
                method=method,
                route=template,
                status=status,
                duration_ms=duration_ms,
            )

        store = self.ctx.store
        try:
            if not record(store.queue_api_call):  # the queue is full: write it ourselves
                await run_in_threadpool(record, store.record_api_call)
        except StoreError as exc:
            log.warning("api_audit_failed", route=template, status=status, error=type(exc).__name__)
