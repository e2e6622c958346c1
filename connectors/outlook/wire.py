"""Graph's wire vocabulary: the request and response of one item, errors, URL pieces."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from connectors import hostile
from connectors.base import ContractError, FatalError, RetriableError

SYSTEM = "outlook"
PREFER = 'IdType="ImmutableId", outlook.body-content-type="text"'
# Graph hands a $batch's items to Exchange up to four at a time, each one counting
# against the mailbox's concurrency like a request of its own.
BATCH_PARALLELISM = 4
UNKNOWN = 0  # an item's status when its outcome is not known (the answer was lost)
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class Throttled(RetriableError):
    """429: the request was refused, not carried out; always safe to send again."""


class NotSent(RetriableError):
    """The connection failed before the request was sent; safe to send again."""


class ResyncRequired(FatalError):
    """410 Gone, or a 4xx with a sync-state error code, on a delta or next link: the
    sync state expired on the server.

    The same link will fail again; start over with a full round (`cursor=None`).
    """


def mailbox_label(mailbox: str) -> str:
    """A mailbox as a log label: a digest, since a UPN is an e-mail address."""
    return "mbx:" + hashlib.sha256(mailbox.casefold().encode()).hexdigest()[:12]


def user_path(mailbox: str) -> str:
    return "/users/" + quote(mailbox, safe="@")


def segment(value: str) -> str:
    """An id (immutable ids may hold '/', '+' and '=') or a folder name as one URL path
    segment, percent-encoded.

    Raises hostile.UnsafeId (a ContractError and a ValueError) for what would change the
    URL even so: empty, `.` or `..` (or cannot be encoded: a lone surrogate). Contacts
    read with any other id that is no URL segment are rejected before (mapping.py).
    """
    return hostile.url_segment(SYSTEM, value, name=True)


def odata_string(value: str) -> str:
    """A string literal for $filter: single quotes doubled."""
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True, kw_only=True, slots=True)
class BatchItem:
    """One request for `execute`: `url` is relative to the version root ("/users/...")."""

    method: str
    url: str
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    idempotent: bool = True


@dataclass(frozen=True, kw_only=True, slots=True)
class ItemResponse:
    status: int  # UNKNOWN (0) when the answer was lost
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def error_code(self) -> str:
        """Graph's error code ("ErrorItemNotFound"), never its message (it may quote data)."""
        if isinstance(self.body, Mapping):
            error = self.body.get("error")
            if isinstance(error, Mapping) and isinstance(error.get("code"), str):
                return str(error["code"])
        return ""


def graph_error_code(response: httpx.Response) -> str:
    try:
        body = hostile.loads(hostile.decode_json(response.content))
    except ValueError:
        return ""
    return ItemResponse(status=response.status_code, body=body).error_code


def header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return str(value)
    return None


def response_json(response: httpx.Response, what: str) -> Any:
    """The answer's JSON: UTF-8 (a byte that is not becomes a lone surrogate, which the
    contact holding it is rejected for), nesting cut at hostile.MAX_DEPTH, never a
    RecursionError. ContractError if it is not JSON."""
    try:
        return hostile.loads(hostile.decode_json(response.content))
    except ValueError:
        raise ContractError(
            f"outlook: {what} answered something that is not JSON", system=SYSTEM
        ) from None
