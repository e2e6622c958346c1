"""Outlook contacts <-> canonical records, and what an Outlook contact can hold.

A Graph contact holds (v1.0)::

    givenName, surname, displayName, jobTitle, department, personalNotes    strings
    emailAddresses   [{address, name}]      at most 3 (Email1..3 in Exchange)
    mobilePhone      string                 one number
    businessPhones   [string]               at most 2
    homePhones       [string]               at most 2

so `project(record)` keeps, in the order a read returns them: the first mobile number
as `mobilePhone`; up to two numbers for `businessPhones`, taken from work numbers, then
`other` and `fax` numbers (Graph v1.0 has no fax or other field) and further mobiles;
up to two home numbers. Those numbers read back typed as they are held (an `other`
number comes back as `work`): the number is kept, its label is what Outlook can say.
Every contact is a person (Outlook has no department entries). A contact without a
display name gets "given family" as Exchange composes it (the connector sends it
explicitly, so the result does not depend on the server doing so). Blank e-mails and
numbers are not written; characters XML 1.0 cannot carry (Exchange stores XML) are
dropped. `project(project(r)) == project(r)` and a record read back is its own
projection.

Earlier versions kept the link id of a contact made by pdsync as the category
`pdsync-link:<link id>` (`MARKER`); it is now an invisible extended property, and
directory.py migrates contacts that still carry the category (`link_of` finds it).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from connectors import hostile
from daemon import normalize
from daemon.domain import (
    SYNC_FIELDS,
    ContactKind,
    ContactRecord,
    Phone,
    PhoneType,
    ReadResult,
    Rejected,
)

SYSTEM = "outlook"
FIELDS: frozenset[str] = frozenset(SYNC_FIELDS)
NAME_FIELDS = frozenset({"given_name", "family_name", "display_name"})
MAX_EMAILS = 3
MAX_BUSINESS = 2
MAX_HOME = 2

_TEXT = {
    "given_name": "givenName",
    "family_name": "surname",
    "display_name": "displayName",
    "title": "jobTitle",
    "department": "department",
    "notes": "personalNotes",
}
SELECT = ",".join(
    [*_TEXT.values(), "emailAddresses", "mobilePhone", "businessPhones", "homePhones", "changeKey"]
)
_XML_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class Malformed(ValueError):
    """A contact property that cannot be read; the message names it, never its value."""


def clean(value: str) -> str:
    # Also what a read rejects (C1 controls, DEL): never written, so a write reads back.
    return hostile.scrub(_XML_ILLEGAL.sub("", value))


# --- what Outlook holds --------------------------------------------------------------


def _numbers(phones: Iterable[Phone]) -> list[Phone]:
    held = (normalize.phone(clean(p.number), p.type) for p in phones)
    return [p for p in held if p.number]


def project_phones(phones: Iterable[Phone]) -> tuple[Phone, ...]:
    numbers = _numbers(phones)
    mobiles = [p for p in numbers if p.type is PhoneType.MOBILE]
    order = (PhoneType.WORK, PhoneType.OTHER, PhoneType.FAX)
    business = [p for kind in order for p in numbers if p.type is kind] + mobiles[1:]
    homes = [p for p in numbers if p.type is PhoneType.HOME]

    def typed(items: list[Phone], kind: PhoneType) -> list[Phone]:
        return [dataclasses.replace(p, type=kind) for p in items]

    return tuple(
        mobiles[:1]
        + typed(business[:MAX_BUSINESS], PhoneType.WORK)
        + typed(homes[:MAX_HOME], PhoneType.HOME)
    )


def project_emails(emails: Iterable[str]) -> tuple[str, ...]:
    held = (clean(e).strip() for e in emails)
    return tuple(e for e in held if e)[:MAX_EMAILS]


def project(record: ContactRecord) -> ContactRecord:
    """What an Outlook contact holds of `record` (see the module docstring)."""
    text = {name: clean(getattr(record, name)) for name in _TEXT}
    if not text["display_name"]:
        text["display_name"] = composed_name(text["given_name"], text["family_name"])
    return record.with_values(
        {
            **text,
            "kind": ContactKind.PERSON,
            "emails": project_emails(record.emails),
            "phones": project_phones(record.phones),
        }
    )


def composed_name(given: str, family: str) -> str:
    return f"{given} {family}".strip()


# --- records -> Graph ----------------------------------------------------------------


def contact_body(values: Mapping[str, Any]) -> dict[str, Any]:
    """Graph contact properties for some sync fields (all of them for a CREATE).

    An empty value is sent as null, which clears the property. `phones` sets all three
    phone properties; `kind` writes nothing (every contact is a person).
    Raises ValueError naming the field for a value of the wrong shape.
    """
    body: dict[str, Any] = {}
    for name, value in values.items():
        if name not in SYNC_FIELDS:
            raise ValueError(f"{name}: not a sync field")
        if name == "kind":
            if str(value) not in {kind.value for kind in ContactKind}:
                raise ValueError("kind: not a ContactKind")
        elif name == "emails":
            emails = project_emails(_strings(value, "emails"))
            body["emailAddresses"] = [{"address": e, "name": e} for e in emails]
        elif name == "phones":
            phones = project_phones(_phones(value))
            mobile = [p.number for p in phones if p.type is PhoneType.MOBILE]
            body["mobilePhone"] = mobile[0] if mobile else None
            body["businessPhones"] = [p.number for p in phones if p.type is PhoneType.WORK]
            body["homePhones"] = [p.number for p in phones if p.type is PhoneType.HOME]
        else:
            if value is None:
                value = ""
            if not isinstance(value, str):
                raise ValueError(f"{name}: expected a string, got {type(value).__name__}")
            body[_TEXT[name]] = clean(value) or None
    return body


def create_body(values: Mapping[str, Any]) -> dict[str, Any]:
    """The body of a POST that makes a contact holding project(values) exactly."""
    record = project(ContactRecord(system=SYSTEM, external_id="").with_values(values))
    return contact_body(record.values())


def update_body(values: Mapping[str, Any], before: ContactRecord | None) -> dict[str, Any]:
    """The body of a PATCH setting `values`; with the contact as it is (`before`), the
    display name is sent as project() composes it when the names change."""
    body = contact_body(values)
    if before is not None and NAME_FIELDS & set(values):
        body["displayName"] = project(before.with_values(values)).display_name or None
    return body


def _strings(value: Any, name: str) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValueError(f"{name}: expected a sequence of strings")
    items = list(value)
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise ValueError(f"{name}[{index}]: expected a string, got {type(item).__name__}")
    return items


def _phones(value: Any) -> list[Phone]:
    if isinstance(value, str | Mapping) or not isinstance(value, Iterable):
        raise ValueError("phones: expected a sequence of Phones")
    phones: list[Phone] = []
    for index, item in enumerate(value):
        if isinstance(item, Phone):
            phones.append(item)
        elif isinstance(item, Mapping) and isinstance(item.get("number"), str):
            try:
                kind = PhoneType(item.get("type") or PhoneType.OTHER)
            except ValueError:
                raise ValueError(f"phones[{index}].type: not a PhoneType") from None
            phones.append(Phone(number=item["number"], type=kind))
        else:
            raise ValueError(f"phones[{index}]: expected a Phone")
    return phones


MARKER = "pdsync-link:"


def marker(link_id: str) -> str:
    return MARKER + link_id


def link_of(contact: Mapping[str, Any]) -> str | None:
    """The link id in a contact's old category marker (see MARKER), if it has one."""
    categories = contact.get("categories")
    if not isinstance(categories, list):
        return None
    for category in categories:
        if isinstance(category, str) and category.startswith(MARKER):
            return category[len(MARKER) :]
    return None


# --- Graph -> records ----------------------------------------------------------------


def version_of(contact: Mapping[str, Any]) -> str | None:
    """The contact's etag (what If-Match wants); built from changeKey if absent."""
    etag = contact.get("@odata.etag")
    if isinstance(etag, str) and etag:
        return etag
    change_key = contact.get("changeKey")
    return f'W/"{change_key}"' if isinstance(change_key, str) and change_key else None


def from_contact(contact: Mapping[str, Any]) -> ContactRecord | Rejected:
    """The record a Graph contact holds, or Rejected naming the first bad property: of
    the wrong type, or failing connectors/hostile.py (control characters, lone
    surrogates, length, nesting, an id that is no URL path segment)."""
    contact_id = contact.get("id")
    external_id = hostile.safe_id(contact_id, slash=True)
    try:
        if not isinstance(contact_id, str) or not contact_id:
            raise Malformed("id: missing")
        external_id = hostile.check_id("id", contact_id, slash=True)
        deep = hostile.deep_field(contact)
        if deep is not None:
            raise Malformed(f"{deep}: nested deeper than {hostile.MAX_DEPTH} levels")
        text = {name: _text(contact, prop) for name, prop in _TEXT.items()}
        mobile = _text(contact, "mobilePhone")
        phones = [normalize.phone(mobile, PhoneType.MOBILE)] if mobile.strip() else []
        phones += [normalize.phone(n, PhoneType.WORK) for n in _list(contact, "businessPhones")]
        phones += [normalize.phone(n, PhoneType.HOME) for n in _list(contact, "homePhones")]
        return ContactRecord(
            system=SYSTEM,
            external_id=external_id,
            kind=ContactKind.PERSON,
            given_name=text["given_name"],
            family_name=text["family_name"],
            display_name=text["display_name"],
            title=text["title"],
            department=text["department"],
            emails=_emails(contact),
            phones=tuple(p for p in phones if p.number),
            notes=text["notes"],
            version=version_of(contact),
        )
    except (Malformed, hostile.Hostile) as exc:
        raw = hostile.storable(json.dumps(contact, ensure_ascii=False, sort_keys=True, default=str))
        return Rejected(system=SYSTEM, external_id=external_id, reason=str(exc), raw=raw)


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _text(contact: Mapping[str, Any], prop: str) -> str:
    value = contact.get(prop)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Malformed(f"{prop}: expected a string, got {_type_name(value)}")
    limit = hostile.MAX_NOTES_CHARS if prop == "personalNotes" else hostile.MAX_TEXT_CHARS
    return hostile.check_text(prop, value, limit=limit)


def _list(contact: Mapping[str, Any], prop: str) -> list[str]:
    value = contact.get(prop)
    if value is None:
        return []
    if not isinstance(value, list):
        raise Malformed(f"{prop}: expected a list of strings, got {_type_name(value)}")
    for index, item in enumerate(hostile.check_items(prop, value)):
        if not isinstance(item, str):
            raise Malformed(f"{prop}[{index}]: expected a string, got {_type_name(item)}")
        hostile.check_text(f"{prop}[{index}]", item)
    return [item for item in value if item.strip()]


def _emails(contact: Mapping[str, Any]) -> tuple[str, ...]:
    value = contact.get("emailAddresses")
    if value is None:
        return ()
    if not isinstance(value, list):
        raise Malformed(f"emailAddresses: expected a list, got {_type_name(value)}")
    emails: list[str] = []
    for index, item in enumerate(hostile.check_items("emailAddresses", value)):
        if not isinstance(item, Mapping):
            raise Malformed(f"emailAddresses[{index}]: expected an object, got {_type_name(item)}")
        address = item.get("address")
        if address is None:
            continue
        if not isinstance(address, str):
            raise Malformed(
                f"emailAddresses[{index}].address: expected a string, got {_type_name(address)}"
            )
        hostile.check_text(f"emailAddresses[{index}].address", address)
        if address.strip():
            emails.append(address.strip())
    return tuple(emails)


def read_result(contacts: Iterable[Mapping[str, Any]], *, cursor: str | None) -> ReadResult:
    """Records and rejects of Graph contacts."""
    records: list[ContactRecord] = []
    rejected: list[Rejected] = []
    for contact in contacts:
        item = from_contact(contact)
        if isinstance(item, Rejected):
            rejected.append(item)
        else:
            records.append(item)
    return ReadResult(records=tuple(records), rejected=tuple(rejected), cursor=cursor)
