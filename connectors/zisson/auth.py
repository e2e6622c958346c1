"""Authenticated, retried requests to one Zisson account: HTTP Basic (XML) or a JWT (JSON).

JSON API auth (public code): POST /web-api/v1/authenticate/refresh-token with
`{id, customerGuid, refreshToken}` answers `{jwt, refreshToken}`. The refresh token
rotates, so it is single-use: the new one is written to the binding's
`refresh_token_file` (atomically, mode 0600) before the new jwt is used, one exchange
per account runs at a time, and the exchange runs to its end even if the caller is
cancelled. The jwt is kept in memory until shortly before its `exp`; a 401 refreshes it
once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx

from connectors.base import AuthError, ContractError, FatalError
from connectors.zisson.settings import ZissonBinding

REFRESH_PATH = "/web-api/v1/authenticate/refresh-token"
# Refresh this long before exp at most; a tenth of the token's lifetime for short ones.
MAX_EXPIRY_MARGIN = 30.0
# A jwt whose exp cannot be read is trusted for this long (a 401 still refreshes it).
FALLBACK_LIFETIME = 60.0

T = TypeVar("T")


class Plumbing(Protocol):
    """What a session needs of the connector: its client, its send and its retries."""

    http: httpx.AsyncClient

    async def send(self, request: httpx.Request, *, what: str) -> httpx.Response: ...

    async def with_retry(self, scope: str, call: Callable[[], Awaitable[T]]) -> T: ...


class Session(Protocol):
    """Requests on behalf of one Zisson account, authenticated and retried."""

    @property
    def account(self) -> str: ...

    async def request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: Mapping[str, str | int] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response: ...


class _SessionBase:
    def __init__(self, plumbing: Plumbing, binding: ZissonBinding) -> None:
        self._plumbing = plumbing
        self.binding = binding

    @property
    def account(self) -> str:
        return self.binding.account

    async def request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: Mapping[str, str | int] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        def build(authorization: str) -> httpx.Request:
            return self._plumbing.http.build_request(
                method,
                path,
                params=dict(params) if params else None,
                json=body,
                headers={**(headers or {}), "Authorization": authorization},
            )

        async def attempt() -> httpx.Response:
            return await self._send_authorised(build, what)

        return await self._plumbing.with_retry(self.account, attempt)

    async def _send_authorised(
        self, build: Callable[[str], httpx.Request], what: str
    ) -> httpx.Response:
        raise NotImplementedError


class BasicSession(_SessionBase):
    """The XML API's account: HTTP Basic with UTF-8 credentials (RFC 7617)."""

    def _authorization(self) -> str:
        assert self.binding.username is not None and self.binding.password is not None
        try:
            password = self.binding.password.reveal()
        except LookupError as exc:
            raise AuthError(
                f"zisson: the password of account {self.account} is not available ({exc})",
                system="zisson",
            ) from None
        pair = f"{self.binding.username}:{password}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")

    async def _send_authorised(
        self, build: Callable[[str], httpx.Request], what: str
    ) -> httpx.Response:
        try:
            return await self._plumbing.send(build(self._authorization()), what=what)
        except AuthError as exc:
            raise AuthError(
                f"zisson: {what} refused the credentials of account {self.account} ({exc})",
                system="zisson",
            ) from None


class JwtSession(_SessionBase):
    """The JSON API's account: a jwt from a rotating refresh token."""

    def __init__(self, plumbing: Plumbing, binding: ZissonBinding, lock: asyncio.Lock) -> None:
        super().__init__(plumbing, binding)
        assert binding.customer_guid and binding.user_id and binding.refresh_token_file
        self.customer_guid = binding.customer_guid
        self.user_id = binding.user_id
        self.token_file = binding.refresh_token_file
        self._lock = lock  # shared by every session of the same account
        self._jwt: str | None = None
        self._refresh_at = 0.0
        # A rotated token that could not be saved; used for the next exchange, so a full
        # disk costs a retry rather than the account.
        self._unsaved: str | None = None

    async def _send_authorised(
        self, build: Callable[[str], httpx.Request], what: str
    ) -> httpx.Response:
        jwt = await self.jwt()
        try:
            return await self._plumbing.send(build(f"Bearer {jwt}"), what=what)
        except AuthError:
            pass  # expired or revoked before we expected: refresh once
        jwt = await self.jwt(refused=jwt)
        try:
            return await self._plumbing.send(build(f"Bearer {jwt}"), what=what)
        except AuthError as exc:
            raise AuthError(
                f"zisson: {what} refused a fresh token for customer guid "
                f"{self.customer_guid} ({exc})",
                system="zisson",
            ) from None

    async def jwt(self, *, refused: str | None = None) -> str:
        """A jwt to use now; `refused` is one the server just turned down."""
        current = self._current(refused)
        if current is not None:
            return current
        async with self._lock:
            current = self._current(refused)  # another caller may have refreshed meanwhile
            if current is not None:
                return current
            exchange = asyncio.ensure_future(self._exchange())
            try:
                return await asyncio.shield(exchange)
            except asyncio.CancelledError:
                # Once the server may have rotated the token, the new one must be saved and
                # no one else may spend the old one: keep the lock until the exchange ends.
                await asyncio.wait([exchange])
                if not exchange.cancelled():
                    exchange.exception()  # retrieved, so asyncio does not report it
                raise

    def _current(self, refused: str | None) -> str | None:
        if self._jwt is None or self._jwt == refused or time.time() >= self._refresh_at:
            return None
        return self._jwt

    async def _exchange(self) -> str:
        spent = self._unsaved or await asyncio.to_thread(self._read_token)
        request = self._plumbing.http.build_request(
            "POST",
            REFRESH_PATH,
            json={"id": self.user_id, "customerGuid": self.customer_guid, "refreshToken": spent},
        )
        try:
            response = await self._plumbing.send(request, what="refresh-token")
        except FatalError as exc:  # AuthError, or a 4xx that refuses this token just the same
            if isinstance(exc, ContractError):
                raise
            self._unsaved = None  # refused: the file is where a person puts a new one
            raise AuthError(
                f"zisson: the refresh token for customer guid {self.customer_guid} was refused"
                f" ({exc}); it may have been used already. Put a new one in {self.token_file}",
                system="zisson",
            ) from None
        jwt, rotated = self._read_exchange(response)
        if rotated and rotated != spent:
            try:
                await asyncio.to_thread(write_secret_file, self.token_file, rotated)
            except OSError as exc:
                self._unsaved = rotated
                raise FatalError(
                    f"zisson: cannot save the rotated refresh token for customer guid "
                    f"{self.customer_guid} in {self.token_file} ({exc.strerror})",
                    system="zisson",
                ) from None
        self._unsaved = None
        self._jwt = jwt
        self._refresh_at = refresh_time(jwt, now=time.time())
        return jwt

    def _read_token(self) -> str:
        try:
            token = self.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise AuthError(
                f"zisson: the refresh token file {self.token_file} for customer guid "
                f"{self.customer_guid} cannot be read ({exc.strerror})",
                system="zisson",
            ) from None
        if not token:
            raise AuthError(
                f"zisson: the refresh token file {self.token_file} for customer guid "
                f"{self.customer_guid} is empty",
                system="zisson",
            )
        return token

    def _read_exchange(self, response: httpx.Response) -> tuple[str, str | None]:
        try:
            payload = response.json()
        except ValueError:
            payload = None
        jwt = payload.get("jwt") if isinstance(payload, dict) else None
        rotated = payload.get("refreshToken") if isinstance(payload, dict) else None
        if (
            not isinstance(jwt, str)
            or not jwt.isascii()  # it goes into a header
            or not jwt
            or not (rotated is None or isinstance(rotated, str))
        ):
            raise ContractError(
                "zisson: refresh-token answered without a usable jwt", system="zisson"
            )
        return jwt, rotated or None


def refresh_time(jwt: str, *, now: float) -> float:
    """When to stop using `jwt`: a margin before its exp (or soon, if exp is unreadable)."""
    try:
        payload = jwt.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        exp = float(claims["exp"])
        issued = float(claims.get("iat", now))
    except (IndexError, KeyError, TypeError, ValueError, binascii.Error):
        return now + FALLBACK_LIFETIME
    return exp - min(MAX_EXPIRY_MARGIN, max(0.0, exp - issued) / 10)


def write_secret_file(path: Path, value: str) -> None:
    """Replace `path` with `value` atomically and durably, readable by the owner only.

    A temporary file in the same directory is written and fsynced, renamed over `path`
    and the directory fsynced, so a crash leaves either the old or the new token.
    """
    directory = path.parent
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(value + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    directory_fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)
