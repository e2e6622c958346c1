"""`ZissonSimulator`: the simulated Zisson on loopback, with an in-process API for tests."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any, Literal

from sandbox.httpserver import ServedSimulator, TrackingHTTPServer
from sandbox.zisson.faults import FaultPlan, Faults
from sandbox.zisson.server import ZissonHttpServer
from sandbox.zisson.store import ZissonState


class ZissonSimulator(ServedSimulator):
    """Both Zisson read APIs, the assumed write API and /_sim/, over real HTTP on loopback.

    Use as a context manager or with start()/stop(). The in-process methods and the
    /_sim/ endpoints manipulate the same state the HTTP APIs serve.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        seed: int = 0,
        jwt_ttl_seconds: float = 300,
    ) -> None:
        super().__init__((host, port))
        self.thread_name = "zisson-sim"
        self._state = ZissonState(seed=seed, jwt_ttl_seconds=jwt_ttl_seconds)
        self._faults = FaultPlan(seed)

    # -- lifecycle (ServedSimulator: start, stop, with, url) ------------------------------

    def _make_server(self) -> TrackingHTTPServer:
        return ZissonHttpServer(self._address, self._state, self._faults)

    # -- seeding and inspection -----------------------------------------------------------

    def add_account(
        self,
        customer_guid: str,
        *,
        username: str,
        password: str,
        user_id: str,
        refresh_token: str,
    ) -> None:
        self._state.add_account(
            customer_guid,
            username=username,
            password=password,
            user_id=user_id,
            refresh_token=refresh_token,
        )

    def put_user(self, customer_guid: str, user: Mapping[str, Any]) -> str:
        """Create (no or unknown "id") or replace a user; returns its id. Bumps the version."""
        return str(self._state.put_user(customer_guid, user)["id"])

    def patch_user(
        self, customer_guid: str, user_id: str, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        return self._state.patch_user(customer_guid, user_id, changes)

    def delete_user(self, customer_guid: str, user_id: str) -> None:
        self._state.delete_user(customer_guid, user_id)

    def user(self, customer_guid: str, user_id: str) -> dict[str, Any]:
        return self._state.user(customer_guid, user_id)

    def users(self, customer_guid: str) -> list[dict[str, Any]]:
        """Copies of the account's well-formed users, in listing order (raw entries left out)."""
        return self._state.users(customer_guid)

    def put_raw(self, customer_guid: str, raw: Any) -> str:
        """Add a malformed entry both APIs return as-is; returns its internal key.

        A dict (or any JSON value) is an entry of the JSON listing and is rendered into
        the XML listing as tolerantly as possible; a str is an XML `<Contact>` fragment
        copied into the XML listing and shown by the JSON listing as a bare string.
        """
        return self._state.put_raw(customer_guid, raw)

    def refresh_token(self, customer_guid: str) -> str:
        """The refresh token the account accepts now."""
        return self._state.account(customer_guid).refresh_token

    def new_refresh_token(self, customer_guid: str) -> str:
        """Issue a new refresh token, as the account's admin would (to provision it in
        pdsync); the one accepted until now is refused from now on."""
        return self._state.new_refresh_token(customer_guid)

    def spent_refresh_tokens(self, customer_guid: str) -> list[str]:
        """Every refresh token an exchange accepted, oldest first (each once, at most)."""
        return self._state.spent_refresh_tokens(customer_guid)

    def expire_tokens(self, customer_guid: str | None = None) -> None:
        """Refuse every JWT issued so far (server-side expiry, the client cannot tell)."""
        self._state.expire_tokens(customer_guid)

    def state(self) -> dict[str, Any]:
        """Everything /_sim/state shows."""
        return {**self._state.snapshot(), "faults": self._faults.describe()}

    # -- faults and counters --------------------------------------------------------------

    def set_faults(
        self,
        error_rate: float = 0.0,
        latency_ms: float = 0,
        rate_429: float = 0.0,
        retry_after: float = 1,
        drop_rate: float = 0.0,
        seed: int | None = None,
    ) -> Faults:
        return self._faults.set(
            seed,
            error_rate=error_rate,
            latency_ms=latency_ms,
            rate_429=rate_429,
            retry_after=retry_after,
            drop_rate=drop_rate,
        )

    def fail_next(
        self, count: int = 1, *, status: int | Literal["drop"] = 429, retry_after: float = 1
    ) -> None:
        """Script the next `count` API requests to fail, ahead of any random fault."""
        self._faults.fail_next(count, status=status, retry_after=retry_after)

    @property
    def counters(self) -> Counter[str]:
        """A consistent snapshot; missing keys read as 0.

        Keys: "requests", one per endpoint ("GET /api/simple/GetContacts", ...),
        "creates", "updates", "deletes", "replays", "429", "5xx", "drops",
        "auth_failures" (refused jwts, credentials and refresh tokens), "refreshes",
        "refresh_refused" (refresh tokens refused: spent already, or never issued).
        """
        return self._state.counters()

    def reset_counters(self) -> None:
        self._state.reset_counters()
