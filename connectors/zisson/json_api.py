"""Zisson's JSON API, read side.

GET /external-api/v1/entities/users with a Bearer jwt (see auth.py). Public code shows
the path and a bare JSON array of users with `guid, firstName, lastName, username,
mobileNumber`; the paging and the user shape are ASSUMED and match the simulator:

    GET ...?page=1&pageSize=200 -> {"items": [user, ...], "page": 1, "pageSize": 200,
                                     "total": 503, "next": 2}     (next: null on the last)
    user = {"id", "type": "user"|"department", "firstName", "lastName", "displayName",
            "title", "department", "emails": [str], "phoneNumbers": [{"number", "type"}],
            "comments", "version": int}

Tolerated as well: a bare array (one page), `guid` for `id`, `mobileNumber` when there
is no `phoneNumbers`, null for an empty string or list. A page whose total differs from
the first page's means the listing moved under us: the whole read starts over, since a
missed entry would look like a deletion.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from connectors.base import ContractError, RetriableError
from connectors.zisson.auth import Session
from connectors.zisson.projection import held_emails, held_phones
from connectors.zisson.tasks import run_all
from daemon import normalize
from daemon.domain import ContactKind, ContactRecord, Phone, PhoneType, Rejected

USERS_PATH = "/external-api/v1/entities/users"
SYSTEM = "zisson"
LISTING_ATTEMPTS = 3
MAX_PAGES = 100_000
_KINDS = {"user": ContactKind.PERSON, "department": ContactKind.DEPARTMENT}


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Any]
    total: int | None = None
    next: int | None = None


class _Malformed(ValueError):
    """The reason an entry is rejected: a field name and a problem, never a value."""


async def read_users(
    session: Session, *, page_size: int
) -> list[tuple[ContactRecord | Rejected, str]]:
    """Each entry read, with its text as received."""
    entries = await list_entries(session, page_size=page_size)
    return [(user_record(entry), raw_text(entry)) for entry in entries]


async def list_entries(session: Session, *, page_size: int) -> list[Any]:
    """Every entry of the listing, as received."""
    for _ in range(LISTING_ATTEMPTS):
        first = await fetch_page(session, 1, page_size)
        if first.next is None:
            return first.items
        if first.total is None:
            return first.items + await _follow(session, first, page_size)
        count = math.ceil(first.total / page_size)
        rest = await run_all(
            [functools.partial(fetch_page, session, n, page_size) for n in range(2, count + 1)]
        )
        pages = [first, *rest]
        items = [item for page in pages for item in page.items]
        if (
            all(page.total == first.total for page in rest)
            and len(items) == first.total
            and pages[-1].next is None
        ):
            return items
    raise RetriableError("zisson: the user listing kept changing while it was read", system=SYSTEM)


async def _follow(session: Session, page: Page, page_size: int) -> list[Any]:
    items: list[Any] = []
    number = 1
    while page.next is not None:
        if page.next <= number or page.next > MAX_PAGES:
            raise ContractError(
                "zisson: list users answered a next page that goes back", system=SYSTEM
            )
        number = page.next
        page = await fetch_page(session, number, page_size)
        items.extend(page.items)
    return items


async def fetch_page(session: Session, number: int, page_size: int) -> Page:
    response = await session.request(
        "GET",
        USERS_PATH,
        what="list users",
        params={"page": number, "pageSize": page_size},
        headers={"Accept": "application/json"},
    )
    try:
        payload = response.json()
    except ValueError:
        raise ContractError(
            "zisson: list users answered something that is not JSON", system=SYSTEM
        ) from None
    if isinstance(payload, list):
        return Page(payload)
    if not isinstance(payload, dict) or not isinstance(payload.get("items"), list):
        raise ContractError("zisson: list users answered no list of items", system=SYSTEM)
    total, following = payload.get("total"), payload.get("next")
    if not _optional_int(total) or not _optional_int(following):
        raise ContractError(
            "zisson: list users answered a total or next that is not a number", system=SYSTEM
        )
    return Page(payload["items"], total, following)


def _optional_int(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


def user_record(entry: Any) -> ContactRecord | Rejected:
    """One entry of the listing (or a write's answer) as a record, or why it cannot be."""
    external_id: str | None = None
    try:
        if not isinstance(entry, dict):
            raise _Malformed("entry: not a JSON object")
        external_id = _id(entry)
        return _record(entry, external_id)
    except _Malformed as problem:
        return Rejected(
            system=SYSTEM, external_id=external_id, reason=str(problem), raw=raw_text(entry)
        )


def raw_text(entry: Any) -> str:
    return json.dumps(entry, ensure_ascii=False)


def _id(entry: Mapping[str, Any]) -> str:
    key = "id" if "id" in entry else "guid"
    value = entry.get(key)
    if value is None or value == "":
        raise _Malformed("id: missing")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _Malformed(f"{key}: not a string")
    return str(value)


def _record(entry: Mapping[str, Any], external_id: str) -> ContactRecord:
    kind_label = entry.get("type") or "user"
    if not isinstance(kind_label, str) or kind_label.lower() not in _KINDS:
        raise _Malformed("type: neither 'user' nor 'department'")
    version = entry.get("version")
    if not _optional_int(version):
        raise _Malformed("version: not an integer")
    return ContactRecord(
        system=SYSTEM,
        external_id=external_id,
        kind=_KINDS[kind_label.lower()],
        given_name=_text(entry, "firstName"),
        family_name=_text(entry, "lastName"),
        display_name=_text(entry, "displayName"),
        title=_text(entry, "title"),
        department=_text(entry, "department"),
        emails=held_emails(_emails(entry)),
        phones=held_phones(_phones(entry)),
        notes=_text(entry, "comments"),
        version=None if version is None else str(version),
    )


def _text(entry: Mapping[str, Any], key: str) -> str:
    value = entry.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Malformed(f"{key}: not a string")
    return value


def _emails(entry: Mapping[str, Any]) -> list[str]:
    value = entry.get("emails")
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Malformed("emails: not a list")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise _Malformed(f"emails[{index}]: not a string")
    return value


def _phones(entry: Mapping[str, Any]) -> list[Phone]:
    value = entry.get("phoneNumbers")
    if value is None:
        mobile = entry.get("mobileNumber")  # the shape public code shows
        if mobile is None:
            return []
        if not isinstance(mobile, str):
            raise _Malformed("mobileNumber: not a string")
        return [Phone(number=mobile, type=PhoneType.MOBILE)]
    if not isinstance(value, list):
        raise _Malformed("phoneNumbers: not a list")
    phones = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise _Malformed(f"phoneNumbers[{index}]: not an object")
        number, label = item.get("number"), item.get("type")
        if not isinstance(number, str):
            problem = "missing" if number is None else "not a string"
            raise _Malformed(f"phoneNumbers[{index}].number: {problem}")
        if label is not None and not isinstance(label, str):
            raise _Malformed(f"phoneNumbers[{index}].type: not a string")
        phones.append(Phone(number=number, type=normalize.phone_type(label)))
    return phones
