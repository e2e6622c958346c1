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
is no `phoneNumbers`, null for an empty string or list.

Hostile entries (issue 10). A page is decoded as UTF-8 with each byte that is not UTF-8
kept as a lone surrogate, and parsed with nesting past hostile.MAX_DEPTH cut (never a
RecursionError); an entry holding such a byte, a lone surrogate, a control character, an
overlong field, too many e-mails or numbers, deep nesting, or an id that is no URL
segment (`.`, `..`, `/`) is rejected naming the field, and the rest is read. A page
larger than the connector's response cap is refused whole (ContractError).

A consistent listing. Paging by offset has no snapshot: an entry deleted in front of
the read position between two page requests pulls the next entry onto a page already
read, and a create elsewhere can keep the total unchanged. An entry missed that way
would read as deleted, so a listing of more than one page is read twice, page by page,
and taken only when
- every page of the first read gives the same total, `next` runs 2, 3, ... and is null
  on the last page, the pages hold exactly `total` entries and no id is on two pages;
- the second read agrees page by page (the same ids, total and next).
One page whose `next` is null is one answer and needs no second read, but its `total`
(if any) must match what it holds. A listing that does not add up is read again
(LISTING_ATTEMPTS in all); if none adds up, the read fails with a RetriableError
rather than answer an incomplete listing. A server that itself lists an id on two pages
is refused the same way, every time, and the error says so; one id twice on one page
cannot come from paging and is left to connector.py, which quarantines conflicting
copies. A page cut short (its JSON ends early) is one more reason to read again. What
these checks cannot see is a listing short from the start that says so in its total
(an outage, a wrong account): the daemon's shrink guard holds that. Pages after the
first are asked for with the size the server used for page 1 (it may cap `pageSize`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from connectors import hostile
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
    number: int
    items: list[Any]
    total: int | None = None
    next: int | None = None

    def shape(self) -> tuple[list[str], int | None, int | None]:
        """What two reads of this page must agree on: its entries' ids, total and next."""
        return [entry_key(item) for item in self.items], self.total, self.next


class _Malformed(ValueError):
    """The reason an entry is rejected: a field name and a problem, never a value."""


class _CutShort(Exception):
    """A page whose JSON ends before its document does (its answer was cut short)."""


async def read_users(
    session: Session, *, page_size: int
) -> list[tuple[ContactRecord | Rejected, str]]:
    """Each entry read, with its text as received."""
    entries = await list_entries(session, page_size=page_size)
    # Mapping thousands of entries is CPU work (0.17 s for 5,000): in a worker thread, not
    # on the event loop every customer's sync and the API share.
    return await asyncio.to_thread(_records, entries)


def _records(entries: list[Any]) -> list[tuple[ContactRecord | Rejected, str]]:
    return [(user_record(entry), raw_text(entry)) for entry in entries]


async def list_entries(session: Session, *, page_size: int) -> list[Any]:
    """Every entry of the listing, as received, from reads that agree (see above).

    Raises RetriableError when no attempt gives a consistent listing.
    """
    problem = ""
    for _ in range(LISTING_ATTEMPTS):
        try:
            pages, size = await _read_pages(session, page_size)
            problem = _inconsistency(pages) or ""
            if not problem and len(pages) > 1:
                again = await _fetch_pages(session, len(pages), size)
                problem = _disagreement(pages, again) or ""
                pages = again  # the later read: the same entries, their newer content
        except _CutShort as cut:
            problem = str(cut)
        if not problem:
            return [item for page in pages for item in page.items]
    raise RetriableError(
        f"zisson: the user listing did not read consistently in {LISTING_ATTEMPTS} attempts"
        f" ({problem}); nothing was taken from it",
        system=SYSTEM,
    )


async def _read_pages(session: Session, page_size: int) -> tuple[list[Page], int]:
    """One read of every page, and the page size it used."""
    first = await fetch_page(session, 1, page_size)
    if first.next is None:
        return [first], page_size
    if first.total is None:
        return [first, *await _follow(session, first, page_size)], page_size
    # A page that is not the last is full: its length is the size the server pages by
    # (it may cap pageSize), and the later pages are asked for with it.
    size = len(first.items) or page_size
    count = max(1, math.ceil(first.total / size))
    if count > MAX_PAGES:
        raise ContractError("zisson: list users answered more pages than it can", system=SYSTEM)
    return [first, *await _fetch_pages(session, count, size, start=2)], size


async def _fetch_pages(
    session: Session, count: int, page_size: int, *, start: int = 1
) -> list[Page]:
    return await run_all(
        [functools.partial(fetch_page, session, n, page_size) for n in range(start, count + 1)]
    )


def _inconsistency(pages: list[Page]) -> str | None:
    """Why one read's pages cannot be the whole listing, or None. No personal data."""
    first = pages[0]
    for page in pages:
        if page.total != first.total:
            return f"page {page.number} says the total is {page.total}, page 1 {first.total}"
        expected_next = None if page is pages[-1] else page.number + 1
        if page.next != expected_next:
            return f"page {page.number} names page {page.next} as the next, not {expected_next}"
    held = sum(len(page.items) for page in pages)
    if first.total is not None and held != first.total:
        return f"{len(pages)} page(s) hold {held} entries, the total says {first.total}"
    seen_on: dict[str, int] = {}
    for page in pages:
        for key in {entry_key(item) for item in page.items if _has_id(item)}:
            if key in seen_on:
                return f"an id is on page {seen_on[key]} and on page {page.number}"
            seen_on[key] = page.number
    return None


def _disagreement(pages: list[Page], again: list[Page]) -> str | None:
    for before, after in zip(pages, again, strict=True):
        if before.shape() != after.shape():
            return f"page {before.number} changed between two reads"
    return None


async def _follow(session: Session, page: Page, page_size: int) -> list[Page]:
    pages: list[Page] = []
    while page.next is not None:
        if page.next <= page.number or page.next > MAX_PAGES:
            raise ContractError(
                "zisson: list users answered a next page that goes back", system=SYSTEM
            )
        page = await fetch_page(session, page.next, page_size)
        pages.append(page)
    return pages


def entry_key(entry: Any) -> str:
    """An entry's identity in a listing: its id, or its whole text if it has none."""
    if _has_id(entry):
        return f"id:{entry.get('id', entry.get('guid'))}"
    return "raw:" + json.dumps(entry, ensure_ascii=False, sort_keys=True)


def _has_id(entry: Any) -> bool:
    if not isinstance(entry, dict):
        return False
    value = entry.get("id", entry.get("guid"))
    return isinstance(value, str | int) and not isinstance(value, bool) and value != ""


async def fetch_page(session: Session, number: int, page_size: int) -> Page:
    response = await session.request(
        "GET",
        USERS_PATH,
        what="list users",
        params={"page": number, "pageSize": page_size},
        headers={"Accept": "application/json"},
    )
    # A page of hundreds of entries takes tens of ms to check: off the event loop too.
    return await asyncio.to_thread(parse_page, number, response.content)


def parse_page(number: int, document: bytes) -> Page:
    """Page `number` of the listing from its bytes. Raises ContractError for an answer
    that is no page, and _CutShort for one whose JSON ends early; entries are left as
    received (with nesting past hostile.MAX_DEPTH cut) for `user_record`."""
    text = hostile.decode_json(document)
    try:
        payload = hostile.loads(text)
    except ValueError as exc:
        if _cut_short(exc, text):
            raise _CutShort(f"page {number} was cut short") from None
        raise ContractError(
            "zisson: list users answered something that is not JSON", system=SYSTEM
        ) from None
    if isinstance(payload, list):
        return Page(number, payload)
    if not isinstance(payload, dict) or not isinstance(payload.get("items"), list):
        raise ContractError("zisson: list users answered no list of items", system=SYSTEM)
    total, following = payload.get("total"), payload.get("next")
    if not _optional_int(total) or not _optional_int(following):
        raise ContractError(
            "zisson: list users answered a total or next that is not a number", system=SYSTEM
        )
    return Page(number, payload["items"], total, following)


def _cut_short(error: ValueError, text: str) -> bool:
    """Whether the JSON ran out before it ended (rather than being something else)."""
    if not text.strip():
        return True
    if not isinstance(error, json.JSONDecodeError):
        return False
    # An unterminated string always runs to the end; its error points at its start.
    if error.msg.startswith("Unterminated string") or error.pos >= len(text.rstrip()):
        return True
    rest = text[error.pos :].rstrip()  # a literal or a number cut in its middle
    return rest == "-" or any(word.startswith(rest) for word in ("null", "true", "false"))


def _optional_int(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


def user_record(entry: Any) -> ContactRecord | Rejected:
    """One entry of the listing (or a write's answer) as a record, or why it cannot be."""
    external_id: str | None = None
    try:
        if not isinstance(entry, dict):
            raise _Malformed("entry: not a JSON object")
        deep = hostile.deep_field(entry)
        if deep is not None:
            external_id = hostile.safe_id(entry.get("id", entry.get("guid")))
            raise _Malformed(f"{deep}: nested deeper than {hostile.MAX_DEPTH} levels")
        external_id = _id(entry)
        return _record(entry, external_id)
    except (_Malformed, hostile.Hostile) as problem:
        return Rejected(
            system=SYSTEM, external_id=external_id, reason=str(problem), raw=raw_text(entry)
        )


def raw_text(entry: Any) -> str:
    return hostile.storable(json.dumps(entry, ensure_ascii=False))


def _id(entry: Mapping[str, Any]) -> str:
    key = "id" if "id" in entry else "guid"
    value = entry.get(key)
    if value is None or value == "":
        raise _Malformed("id: missing")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _Malformed(f"{key}: not a string")
    return hostile.check_id(key, str(value))


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
    limit = hostile.MAX_NOTES_CHARS if key == "comments" else hostile.MAX_TEXT_CHARS
    return hostile.check_text(key, value, limit=limit)


def _emails(entry: Mapping[str, Any]) -> list[str]:
    value = entry.get("emails")
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Malformed("emails: not a list")
    for index, item in enumerate(hostile.check_items("emails", value)):
        if not isinstance(item, str):
            raise _Malformed(f"emails[{index}]: not a string")
        hostile.check_text(f"emails[{index}]", item)
    return value


def _phones(entry: Mapping[str, Any]) -> list[Phone]:
    value = entry.get("phoneNumbers")
    if value is None:
        mobile = entry.get("mobileNumber")  # the shape public code shows
        if mobile is None:
            return []
        if not isinstance(mobile, str):
            raise _Malformed("mobileNumber: not a string")
        hostile.check_text("mobileNumber", mobile)
        return [Phone(number=mobile, type=PhoneType.MOBILE)]
    if not isinstance(value, list):
        raise _Malformed("phoneNumbers: not a list")
    phones = []
    for index, item in enumerate(hostile.check_items("phoneNumbers", value)):
        if not isinstance(item, dict):
            raise _Malformed(f"phoneNumbers[{index}]: not an object")
        number, label = item.get("number"), item.get("type")
        if not isinstance(number, str):
            problem = "missing" if number is None else "not a string"
            raise _Malformed(f"phoneNumbers[{index}].number: {problem}")
        if label is not None and not isinstance(label, str):
            raise _Malformed(f"phoneNumbers[{index}].type: not a string")
        hostile.check_text(f"phoneNumbers[{index}].number", number)
        hostile.check_text(f"phoneNumbers[{index}].type", label or "")
        phones.append(Phone(number=number, type=normalize.phone_type(label)))
    return phones
