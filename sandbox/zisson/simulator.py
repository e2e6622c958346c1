"""`ZissonSimulator`: the simulated Zisson on loopback, with an in-process API for tests."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from sandbox.httpserver import ServedSimulator, TrackingHTTPServer
from sandbox.zisson.faults import (
    PRECONDITION_METHODS,
    FaultPlan,
    Faults,
    ListingFault,
    ReplayMatch,
    Shift,
    ShiftKind,
    XmlEncoding,
)
from sandbox.zisson.server import ZissonHttpServer
from sandbox.zisson.store import EMPTY_USER, ZissonState


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
        copied into the XML listing and shown by the JSON listing as a bare string. A
        `JsonText` is copied into the JSON listing as it is written (and left out of the
        XML one). In the JSON listing a lone surrogate U+DC80..U+DCFF is written as the
        byte it escapes, other lone surrogates as JSON `\\udXXX` escapes.
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

    # -- listings served wrongly -----------------------------------------------------------
    # No public Zisson documentation describes paging or how an outage shows in a listing;
    # these play what a client must survive whatever the real behaviour is.

    def set_listing_fault(
        self,
        customer_guid: str,
        *,
        empty: bool = False,
        keep_count: int | None = None,
        keep_share: float | None = None,
    ) -> None:
        """Serve the account's listing (GET .../users and GetContacts) empty, or only its
        first `keep_count` entries / `keep_share` of them, until called again without
        arguments. The listing stays self-consistent: its total is what is served, so
        nothing in it tells that it is short (an outage, or a wrong account)."""
        self._state.account(customer_guid)
        self._faults.set_listing(
            customer_guid, ListingFault(empty=empty, keep_count=keep_count, keep_share=keep_share)
        )

    def shift_listing(
        self,
        customer_guid: str,
        how: ShiftKind = "churn",
        *,
        at: int = 0,
        skip: int = 0,
        times: int = 1,
    ) -> None:
        """Make the directory move while a client pages through the JSON listing: after
        each of the next `times` page requests (after `skip` served as they are), "churn"
        deletes the entry at index `at` and creates a new user at the end (the total stays
        the same, every later entry moves one place forward), "reorder" moves the entry at
        index `at` to the end. The changes are real: `users()` shows them. `times=0` stops
        a shift still pending."""
        self._state.account(customer_guid)
        self._faults.shift_listing(customer_guid, Shift(how=how, at=at, skip=skip, times=times))

    def truncate_listing(self, customer_guid: str, times: int = 1) -> None:
        """Cut the next `times` listing answers (JSON pages or GetContacts) in half, with
        HTTP framing intact: the response is complete, its document is not."""
        self._state.account(customer_guid)
        self._faults.truncate_listing(customer_guid, times)

    def set_xml_encoding(
        self,
        customer_guid: str,
        encoding: str = "utf-8",
        *,
        charset: str | None = "utf-8",
        declaration: str | None = "utf-8",
    ) -> None:
        """Write the account's GetContacts document in `encoding` (a Python codec name),
        with `charset` as the Content-Type's charset (None: no charset parameter) and
        `declaration` as the XML declaration's encoding (None: no declaration), until
        called again; the defaults are the normal UTF-8 answer. The three need not agree,
        as with legacy servers: Latin-1 bytes declared nowhere, windows-1252 bytes
        declared ISO-8859-1, a declaration the HTTP header contradicts. A lone surrogate
        U+DC80..U+DCFF in a raw XML fragment (`put_raw`) is written as the byte
        0x80..0xFF, for bytes no encoding decodes."""
        self._state.account(customer_guid)
        self._faults.set_xml_encoding(
            customer_guid, XmlEncoding(encoding=encoding, charset=charset, declaration=declaration)
        )

    # -- writes that do not go as asked --------------------------------------------------
    # ASSUMED contract, see connectors/zisson/write_api.py; replays after the IETF draft
    # "The Idempotency-Key HTTP Header Field" (draft-ietf-httpapi-idempotency-key-header).

    def fail_preconditions(
        self, count: int = 1, *, methods: Iterable[str] = PRECONDITION_METHODS
    ) -> None:
        """Answer the next `count` PATCH or DELETE requests (of `methods`) to a user that
        exists 412 Precondition Failed, as if its version had just changed (a concurrent
        edit), whatever If-Match says. The refusal is the key's first answer, so a replay
        of the same key gets the 412 again."""
        self._faults.fail_preconditions(count, tuple(methods))

    def set_idempotency(self, match: ReplayMatch = "request") -> None:
        """How a write's Idempotency-Key is recognised. "request" (the default): the key
        and the request must match, the same key with another request is refused 422
        (the draft's SHOULD). "key": the key alone, so another request under a known key
        is answered with the first request's response, marked `Idempotent-Replayed: true`
        (the draft makes the request fingerprint optional)."""
        self._faults.set_replay_match(match)

    def forget_idempotency_keys(self, customer_guid: str) -> int:
        """Forget every stored first answer of the account, as a server whose keys
        expired would (the draft lets keys expire): a write sent again is new. Returns
        how many were forgotten."""
        return self._state.forget_idempotency_keys(customer_guid)

    def ignore_on_write(self, fields: Iterable[str] = ()) -> None:
        """Writes accept these JSON user keys ("comments", "emails", ...) and silently do
        not keep them: a create leaves them empty, an update leaves them as they were,
        and the answer shows the user as stored. `()` ends it."""
        keys = tuple(fields)
        unknown = set(keys) - set(EMPTY_USER)
        if unknown:
            raise ValueError(f"not JSON user keys: {', '.join(sorted(unknown))}")
        self._faults.ignore_on_write(keys)

    @property
    def counters(self) -> Counter[str]:
        """A consistent snapshot; missing keys read as 0.

        Keys: "requests", one per endpoint ("GET /api/simple/GetContacts", ...),
        "creates", "updates", "deletes", "replays", "412" (version checks failed,
        injected or real), "shifts" (directory changes by `shift_listing`), "429", "5xx",
        "drops", "auth_failures" (refused jwts, credentials and refresh tokens),
        "refreshes", "refresh_refused" (refresh tokens refused: spent already, or never
        issued).
        """
        return self._state.counters()

    def reset_counters(self) -> None:
        self._state.reset_counters()
