"""The simulated Zisson's state: accounts, their directory, tokens and idempotency records.

Everything here is guarded by one lock, so the HTTP threads and the in-process API of
`ZissonSimulator` can use it at the same time. Users are plain JSON-able dicts in the
JSON API's shape (see `sandbox.zisson`); a "raw" entry is any JSON value (or an XML
fragment) kept in the listing as it was given, so tests can check quarantine.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import hmac
import json
import random
import re
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

USER_TYPES = ("user", "department")
STRING_FIELDS = ("firstName", "lastName", "displayName", "title", "department", "comments")
# What a new user holds where the caller gave nothing.
EMPTY_USER: dict[str, Any] = {
    "type": "user",
    "firstName": "",
    "lastName": "",
    "displayName": "",
    "title": "",
    "department": "",
    "emails": [],
    "phoneNumbers": [],
    "comments": "",
}


class SimError(Exception):
    """An error the simulator answers with an HTTP status and a JSON body."""

    def __init__(
        self, status: int, message: str, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


# A lone surrogate in a stored value: U+DC80..U+DCFF is written as the byte 0x80..0xFF it
# escapes (Python's surrogateescape; bytes that are not UTF-8, as the XML side does), any
# other as a `\udXXX` escape, which JSON's grammar allows although it names no character
# (RFC 8259, section 8.2: https://www.rfc-editor.org/rfc/rfc8259#section-8.2).
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return match.group() if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


@dataclass(frozen=True, slots=True)
class JsonText:
    """A raw entry given as JSON text, served verbatim in the JSON listing: nesting no
    encoder would write (thousands of levels deep), or text that is not JSON at all."""

    text: str


def json_body(payload: Any) -> bytes:
    verbatim: dict[str, str] = {}

    def stand_in(value: Any) -> str:
        if not isinstance(value, JsonText):
            raise TypeError(f"{type(value).__name__} is not JSON")
        key = f"\x00json-text-{len(verbatim)}"
        verbatim[json.dumps(key, ensure_ascii=False)] = value.text
        return key

    text = json.dumps(payload, ensure_ascii=False, default=stand_in)
    for key, raw in verbatim.items():
        text = text.replace(key, raw, 1)
    text = _LONE_SURROGATE.sub(_escaped, text)
    return text.encode("utf-8", errors="surrogateescape")


def json_response(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
    body = json_body(payload)
    return Response(
        status, body, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
    )


@dataclass
class Account:
    guid: str
    username: str
    password: str
    user_id: str
    refresh_token: str
    # The listing in order: key -> a user dict, or a raw value (keys in `raw_keys`).
    entries: dict[str, Any] = field(default_factory=dict)
    raw_keys: set[str] = field(default_factory=set)
    # Idempotency-Key -> (request fingerprint, the response first given).
    replies: dict[str, tuple[str, Response]] = field(default_factory=dict)
    # JWTs issued before this instant are refused (`expire_tokens`).
    jwt_not_before: float = 0.0
    # Every refresh token an exchange accepted, in order: each can be accepted once only.
    spent_refresh_tokens: list[str] = field(default_factory=list)


def validate_user_fields(body: Any, *, partial: bool) -> dict[str, Any]:
    """The user fields of a write request, checked against the assumed write contract."""
    if not isinstance(body, dict):
        raise SimError(400, "body: not a JSON object")
    fields: dict[str, Any] = {}
    for key, value in body.items():
        if key in ("id", "version"):
            continue  # server-owned; ignored rather than refused, as most APIs do
        if key == "type":
            if value not in USER_TYPES:
                raise SimError(400, "type: must be 'user' or 'department'")
        elif key in STRING_FIELDS:
            if not isinstance(value, str):
                raise SimError(400, f"{key}: not a string")
        elif key == "emails":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise SimError(400, "emails: not a list of strings")
        elif key == "phoneNumbers":
            if not isinstance(value, list):
                raise SimError(400, "phoneNumbers: not a list")
            for index, item in enumerate(value):
                if (
                    not isinstance(item, dict)
                    or set(item) - {"number", "type"}
                    or not isinstance(item.get("number"), str)
                    or not isinstance(item.get("type", "other"), str)
                ):
                    raise SimError(400, f"phoneNumbers[{index}]: not {{number, type}}")
        else:
            raise SimError(400, f"{key}: unknown field")
        fields[key] = copy.deepcopy(value)
    if not partial:
        fields = {**copy.deepcopy(EMPTY_USER), **fields}
    return fields


class ZissonState:
    """Accounts and directories of the simulated Zisson, safe to use from many threads."""

    def __init__(self, *, seed: int, jwt_ttl_seconds: float) -> None:
        self.lock = threading.RLock()
        self.accounts: dict[str, Account] = {}
        self.jwt_ttl_seconds = jwt_ttl_seconds
        self._ids = random.Random(seed)  # ids are reproducible for the same seed and calls
        self._signing_key = secrets.token_bytes(32)
        self._raw_serial = 0
        self._shift_serial = 0
        self._counters: Counter[str] = Counter()

    # -- counters -------------------------------------------------------------------------

    def count(self, name: str, by: int = 1) -> None:
        with self.lock:
            self._counters[name] += by

    def counters(self) -> Counter[str]:
        with self.lock:
            return Counter(self._counters)

    def reset_counters(self) -> None:
        with self.lock:
            self._counters.clear()

    # -- accounts and users ---------------------------------------------------------------

    def add_account(
        self, guid: str, *, username: str, password: str, user_id: str, refresh_token: str
    ) -> None:
        with self.lock:
            if guid in self.accounts:
                raise SimError(409, "account exists")
            if any(a.username == username for a in self.accounts.values()):
                raise SimError(409, "username taken")
            self.accounts[guid] = Account(guid, username, password, user_id, refresh_token)

    def account(self, guid: str) -> Account:
        with self.lock:
            try:
                return self.accounts[guid]
            except KeyError:
                raise SimError(404, "no such account") from None

    def new_id(self) -> str:
        with self.lock:
            return str(uuid.UUID(int=self._ids.getrandbits(128), version=4))

    def put_user(self, guid: str, user: Mapping[str, Any]) -> dict[str, Any]:
        """Create or replace a user; the stored copy has an id and a bumped version."""
        with self.lock:
            account = self.account(guid)
            fields = validate_user_fields(dict(user), partial=False)
            user_id = user.get("id")
            if user_id is not None and not isinstance(user_id, str):
                raise SimError(400, "id: not a string")
            if user_id in account.raw_keys:
                raise SimError(409, "id: used by a raw entry")
            previous = account.entries.get(user_id) if user_id else None
            stored = {
                "id": user_id or self.new_id(),
                **fields,
                "version": (previous["version"] + 1) if previous else 1,
            }
            account.entries[stored["id"]] = stored
            return copy.deepcopy(stored)

    def patch_user(self, guid: str, user_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        with self.lock:
            account = self.account(guid)
            current = self._user(account, user_id)
            current.update(validate_user_fields(dict(changes), partial=True))
            current["version"] += 1
            return copy.deepcopy(current)

    def delete_user(self, guid: str, user_id: str) -> None:
        with self.lock:
            account = self.account(guid)
            self._user(account, user_id)
            del account.entries[user_id]

    def user(self, guid: str, user_id: str) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self._user(self.account(guid), user_id))

    def users(self, guid: str) -> list[dict[str, Any]]:
        with self.lock:
            account = self.account(guid)
            return [
                copy.deepcopy(entry)
                for key, entry in account.entries.items()
                if key not in account.raw_keys
            ]

    def listing(self, guid: str) -> list[tuple[bool, Any]]:
        """Every entry in order, as (is_raw, value)."""
        with self.lock:
            account = self.account(guid)
            return [
                (key in account.raw_keys, copy.deepcopy(entry))
                for key, entry in account.entries.items()
            ]

    def put_raw(self, guid: str, raw: Any) -> str:
        with self.lock:
            account = self.account(guid)
            self._raw_serial += 1
            key = f"raw-{self._raw_serial}"
            account.entries[key] = copy.deepcopy(raw)
            account.raw_keys.add(key)
            return key

    @staticmethod
    def _user(account: Account, user_id: str) -> dict[str, Any]:
        entry = account.entries.get(user_id)
        if entry is None or user_id in account.raw_keys:
            raise SimError(404, "no such user")
        assert isinstance(entry, dict)
        return entry

    # -- idempotency ----------------------------------------------------------------------

    def once(
        self,
        account: Account,
        key: str | None,
        fingerprint: str,
        apply: Callable[[], Response],
        *,
        match: str = "request",
    ) -> Response:
        """Run `apply` once per Idempotency-Key; a replay gets the first response again,
        marked `Idempotent-Replayed: true`, whatever it was (a refusal too).

        `match` "request": the same key with a different request is refused (422), as
        the Idempotency-Key draft recommends; "key": the key alone identifies the request
        (the draft's fingerprint is optional), so a different request under a known key
        gets the first request's response.
        """
        with self.lock:
            if key is None:
                return apply()
            known = account.replies.get(key)
            if known is not None:
                if known[0] != fingerprint and match == "request":
                    raise SimError(422, "Idempotency-Key reused for a different request")
                self._counters["replays"] += 1
                first = known[1]
                return Response(
                    first.status, first.body, {**first.headers, "Idempotent-Replayed": "true"}
                )
            response = apply()
            account.replies[key] = (fingerprint, response)
            return response

    def forget_idempotency_keys(self, guid: str) -> int:
        """Drop the account's stored first responses, as a server whose keys expired
        would; a request sent again afterwards is a new request. Returns how many."""
        with self.lock:
            account = self.account(guid)
            count = len(account.replies)
            account.replies.clear()
            return count

    # -- the directory moving under a read ----------------------------------------------

    def shift_listing(self, guid: str, how: str, at: int) -> None:
        """Change the directory as `sandbox.zisson.faults.Shift` describes."""
        with self.lock:
            account = self.account(guid)
            keys = list(account.entries)
            if not keys:
                return
            key = keys[min(at, len(keys) - 1)]
            if how == "reorder":
                account.entries[key] = account.entries.pop(key)  # to the end
            else:
                del account.entries[key]
                account.raw_keys.discard(key)
                self._shift_serial += 1
                self.put_user(
                    guid, {"firstName": "Ny", "lastName": f"Oppføring {self._shift_serial}"}
                )
            self._counters["shifts"] += 1

    # -- authentication -------------------------------------------------------------------

    def exchange_refresh_token(self, body: Any) -> tuple[str, str]:
        """(jwt, new refresh token) for a valid {id, customerGuid, refreshToken}; rotates."""
        if not isinstance(body, dict) or not all(
            isinstance(body.get(k), str) for k in ("id", "customerGuid", "refreshToken")
        ):
            raise SimError(400, "body: needs id, customerGuid and refreshToken")
        with self.lock:
            account = self.accounts.get(body["customerGuid"])
            if (
                account is None
                or not hmac.compare_digest(account.user_id, body["id"])
                or not hmac.compare_digest(account.refresh_token, body["refreshToken"])
            ):
                self._counters["auth_failures"] += 1
                self._counters["refresh_refused"] += 1
                raise SimError(401, "refresh token refused")
            account.spent_refresh_tokens.append(account.refresh_token)
            account.refresh_token = "rt-" + secrets.token_urlsafe(24)
            self._counters["refreshes"] += 1
            return self._issue_jwt(account), account.refresh_token

    def new_refresh_token(self, guid: str) -> str:
        """Issue a new refresh token for the account, as its admin would; the previous
        one stops working."""
        with self.lock:
            account = self.account(guid)
            account.refresh_token = "rt-" + secrets.token_urlsafe(24)
            return account.refresh_token

    def spent_refresh_tokens(self, guid: str) -> list[str]:
        with self.lock:
            return list(self.account(guid).spent_refresh_tokens)

    def expire_tokens(self, guid: str | None = None) -> None:
        """Make every JWT issued so far invalid (for one account, or all)."""
        with self.lock:
            accounts = [self.account(guid)] if guid else list(self.accounts.values())
            for account in accounts:
                account.jwt_not_before = time.time()

    def _issue_jwt(self, account: Account) -> str:
        now = time.time()
        header = {"alg": "HS256", "typ": "JWT"}
        claims = {
            "sub": account.user_id,
            "customerGuid": account.guid,
            # Unrounded: compared with `jwt_not_before`, so one issued just after
            # expire_tokens must not look older than it.
            "iat": now,
            # A fractional exp is valid NumericDate (RFC 7519 §2) and lets tests use 1 s TTLs.
            "exp": round(now + self.jwt_ttl_seconds, 3),
            "jti": secrets.token_hex(8),
        }
        signing_input = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
        signature = hmac.new(self._signing_key, signing_input.encode(), hashlib.sha256).digest()
        return signing_input + "." + _b64(signature)

    def authenticate(self, authorization: str | None) -> Account:
        """The account a Bearer JWT or Basic credentials belong to; SimError(401) if none."""
        scheme, _, credentials = (authorization or "").partition(" ")
        with self.lock:
            account: Account | None = None
            if scheme.lower() == "bearer":
                account = self._account_for_jwt(credentials.strip())
            elif scheme.lower() == "basic":
                account = self._account_for_basic(credentials.strip())
            if account is None:
                self._counters["auth_failures"] += 1
                raise SimError(
                    401,
                    "not authenticated",
                    headers={"WWW-Authenticate": 'Bearer, Basic realm="zisson"'},
                )
            return account

    def _account_for_jwt(self, token: str) -> Account | None:
        parts = token.split(".")
        if len(parts) != 3:
            return None
        expected = hmac.new(
            self._signing_key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256
        ).digest()
        try:
            if not hmac.compare_digest(expected, _unb64(parts[2])):
                return None
            claims = json.loads(_unb64(parts[1]))
        except (ValueError, binascii.Error):
            return None
        account = self.accounts.get(claims.get("customerGuid", ""))
        if (
            account is None
            or time.time() >= claims["exp"]
            or claims["iat"] < account.jwt_not_before
        ):
            return None
        return account

    def _account_for_basic(self, credentials: str) -> Account | None:
        try:
            username, _, password = (
                base64.b64decode(credentials, validate=True).decode().partition(":")
            )
        except (ValueError, binascii.Error):
            return None
        for account in self.accounts.values():
            if hmac.compare_digest(
                account.username.encode(), username.encode()
            ) and hmac.compare_digest(account.password.encode(), password.encode()):
                return account
        return None

    # -- inspection -----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "accounts": {
                    guid: {
                        "username": account.username,
                        "user_id": account.user_id,
                        "refresh_token": account.refresh_token,
                        "users": self.users(guid),
                        "raw": [
                            account.entries[key]
                            for key in account.entries
                            if key in account.raw_keys
                        ],
                    }
                    for guid, account in self.accounts.items()
                },
                "counters": dict(self._counters),
            }


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
