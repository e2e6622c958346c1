"""Authenticated, retried requests to one Zisson account: HTTP Basic (XML) or a JWT (JSON).

JSON API auth (public code): POST /web-api/v1/authenticate/refresh-token with
`{id, customerGuid, refreshToken}` answers `{jwt, refreshToken}`. The refresh token
rotates, so it is single-use: it is spent and its successor saved inside one
`TokenVault.exchange` (connectors/vault.py), which keeps other holders of the token
(other instances of the daemon) from spending it meanwhile; the new jwt is used only
once the rotated token is saved. One exchange per account runs at a time in a process,
and the exchange runs to its end even if the caller is cancelled. The jwt is kept in
memory until shortly before its `exp`; a 401 refreshes it once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

import httpx

from connectors import hostile
from connectors.base import AuthError, ConnectorError, ContractError, FatalError, RetriableError
from connectors.vault import TokenAccount, TokenVault
from connectors.zisson.settings import ZissonBinding

SYSTEM = "zisson"
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
                system=SYSTEM,
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
                system=SYSTEM,
            ) from None


def token_account(binding: ZissonBinding) -> TokenAccount:
    """The vault's name for the refresh token of a JSON-API binding's account."""
    return TokenAccount(system=SYSTEM, key=binding.account, file=binding.refresh_token_file)


class JwtSession(_SessionBase):
    """The JSON API's account: a jwt from a rotating refresh token kept in `vault`."""

    def __init__(
        self,
        plumbing: Plumbing,
        binding: ZissonBinding,
        lock: asyncio.Lock,
        vault: TokenVault,
    ) -> None:
        super().__init__(plumbing, binding)
        assert binding.customer_guid and binding.user_id
        self.customer_guid = binding.customer_guid
        self.user_id = binding.user_id
        self._token = token_account(binding)
        self._vault = vault
        self._lock = lock  # shared by every session of the same account
        self._jwt: str | None = None
        self._refresh_at = 0.0
        # A refresh token the vault does not have yet (saving it failed); the next
        # exchange spends this one, so a failed save costs a retry rather than the account.
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
                system=SYSTEM,
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
        saved: str | None = None
        try:
            async with self._vault.exchange(self._token) as slot:
                spent = self._unsaved or slot.token
                jwt, rotated = await self._spend(spent)
                keep = rotated or spent
                if keep != slot.token:  # rotated, or a token only we held
                    self._unsaved = saved = keep  # ours alone until the block has saved it
                    slot.save(keep)
        except ConnectorError as exc:
            if saved is None:
                raise
            problem = RetriableError if isinstance(exc, RetriableError) else FatalError
            raise problem(
                f"zisson: cannot save the rotated refresh token for customer guid "
                f"{self.customer_guid} ({exc})",
                system=SYSTEM,
            ) from None
        self._unsaved = None
        self._jwt = jwt
        self._refresh_at = refresh_time(jwt, now=time.time())
        return jwt

    async def _spend(self, token: str) -> tuple[str, str | None]:
        request = self._plumbing.http.build_request(
            "POST",
            REFRESH_PATH,
            json={"id": self.user_id, "customerGuid": self.customer_guid, "refreshToken": token},
        )
        try:
            response = await self._plumbing.send(request, what="refresh-token")
        except FatalError as exc:  # AuthError, or a 4xx that refuses this token just the same
            if isinstance(exc, ContractError):
                raise
            self._unsaved = None  # refused: only the vault can hold a good one now
            raise AuthError(
                f"zisson: the refresh token for customer guid {self.customer_guid} was refused"
                f" ({exc}); it may have been used already. {self._vault.remedy(self._token)}",
                system=SYSTEM,
            ) from None
        return self._read_exchange(response)

    def _read_exchange(self, response: httpx.Response) -> tuple[str, str | None]:
        try:
            payload = hostile.loads(hostile.decode_json(response.content))
        except ValueError:
            payload = None
        jwt = payload.get("jwt") if isinstance(payload, dict) else None
        rotated = payload.get("refreshToken") if isinstance(payload, dict) else None
        if (
            not isinstance(jwt, str)
            or not jwt.isascii()  # it goes into a header
            or not jwt
            or not (rotated is None or _printable_ascii(rotated))
        ):
            raise ContractError(
                "zisson: refresh-token answered without a usable jwt", system=SYSTEM
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


def _printable_ascii(value: object) -> bool:
    """A token that can be kept and sent again: ASCII without control characters."""
    return isinstance(value, str) and value.isascii() and value.isprintable()
