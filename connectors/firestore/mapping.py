"""Firestore documents <-> canonical records, and update times <-> version strings.

A contact document (`customers/{customer_id}/contacts/{contact_id}`)::

    kind          "person" | "department"
    given_name, family_name, display_name, title, department, notes    strings
    emails        [string]
    phones        [{number: string, type: "mobile"|"work"|"home"|"fax"|"other"}]

Missing or null fields read as empty. Fields outside this list are left alone: read
past, never written. So are keys of a phone entry other than `number` and `type`
(`extension`, `label`: the card app's): an update of `phones` carries each entry's own
keys over to the entry that takes its place (`keep_phone_extras`). Error texts name
fields, positions and types, never values. Text fields, e-mails, phone numbers and
document ids are checked as every system's are (connectors/hostile.py): control
characters, lone surrogates, lengths, list sizes and nesting; a document failing one is
rejected naming the field.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from connectors import hostile
from daemon import normalize
from daemon.domain import (
    SYNC_FIELDS,
    ContactKind,
    ContactRecord,
    Phone,
    PhoneType,
    Rejected,
)

SYSTEM = "firestore"
TEXT_FIELDS: tuple[str, ...] = (
    "given_name",
    "family_name",
    "display_name",
    "title",
    "department",
    "notes",
)
CARD_FIELDS: tuple[str, ...] = ("name", "instructions", "domains")

_KINDS = frozenset(kind.value for kind in ContactKind)
_PHONE_TYPES = frozenset(type_.value for type_ in PhoneType)
_VERSION = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?Z$")


class Malformed(ValueError):
    """A document field that cannot be read; the message names the field, not the value."""


def contact_document_id(link_id: str) -> str:
    """The document id a CREATE for `link_id` writes to.

    Deterministic, so a CREATE replayed after a crash hits the document it already
    made (AlreadyExists) instead of making a second one. Hashed, because link ids are
    not guaranteed to be valid document ids and sequential ids would hot-spot.
    """
    digest = hashlib.sha256(f"pdsync/firestore/contact\x1f{link_id}".encode())
    return digest.hexdigest()[:32]


# --- versions ------------------------------------------------------------------------


def format_version(update_time: datetime | Timestamp) -> str:
    """An update time as RFC 3339 in UTC with all nine fractional digits.

    Nine digits always, so no precision is lost and equal times give equal strings.
    """
    if isinstance(update_time, Timestamp):
        seconds, nanos = update_time.seconds, update_time.nanos
    else:
        if update_time.tzinfo is None:
            raise ValueError("update time without a time zone")
        # DatetimeWithNanoseconds (what the client returns) keeps nanoseconds beside
        # the microseconds of a plain datetime.
        nanos = getattr(update_time, "nanosecond", None) or update_time.microsecond * 1000
        whole = update_time.astimezone(UTC).replace(microsecond=0)
        seconds = int(whole.timestamp())
    base = datetime.fromtimestamp(seconds, UTC)
    return f"{base:%Y-%m-%dT%H:%M:%S}.{nanos:09d}Z"


def parse_version(version: str) -> Timestamp:
    """The update-time precondition for a version made by `format_version`."""
    match = _VERSION.match(version)
    if match is None:
        raise ValueError("version is not an RFC 3339 UTC timestamp")
    base = datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    fraction = (match.group(2) or "").ljust(9, "0")
    return Timestamp(seconds=int(base.timestamp()), nanos=int(fraction or "0"))


# --- records -> documents ------------------------------------------------------------


def to_document(record: ContactRecord) -> dict[str, Any]:
    """The full contact document for `record` (every sync field)."""
    return to_fields(record.values())


def to_fields(values: Mapping[str, Any]) -> dict[str, Any]:
    """Document fields for some sync fields (an UPDATE's changed values).

    Raises ValueError (naming the field) for a name that is not a sync field or a value
    of the wrong shape.
    """
    fields: dict[str, Any] = {}
    for name, value in values.items():
        if name not in SYNC_FIELDS:
            raise ValueError(f"{name}: not a sync field")
        if name == "kind":
            fields[name] = _kind_value(value)
        elif name == "emails":
            fields[name] = _email_values(value)
        elif name == "phones":
            fields[name] = _phone_values(value)
        else:
            if value is None:
                value = ""
            if not isinstance(value, str):
                raise ValueError(f"{name}: expected a string, got {type(value).__name__}")
            fields[name] = value
    return fields


def _kind_value(value: Any) -> str:
    if isinstance(value, str) and value in _KINDS:
        return str(ContactKind(value).value)
    raise ValueError("kind: not a ContactKind")


def _email_values(value: Any) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValueError("emails: expected a sequence of strings")
    emails = list(value)
    for index, item in enumerate(emails):
        if not isinstance(item, str):
            raise ValueError(f"emails[{index}]: expected a string, got {type(item).__name__}")
    return emails


def _phone_values(value: Any) -> list[dict[str, str]]:
    if isinstance(value, str | Mapping) or not isinstance(value, Iterable):
        raise ValueError("phones: expected a sequence of Phones")
    return [_phone_value(index, phone) for index, phone in enumerate(value)]


def _phone_value(index: int, phone: Any) -> dict[str, str]:
    number: Any
    type_: Any
    if isinstance(phone, Phone):
        number, type_ = phone.number, phone.type
    elif isinstance(phone, Mapping):
        number, type_ = phone.get("number"), phone.get("type") or PhoneType.OTHER
    else:
        raise ValueError(f"phones[{index}]: expected a Phone, got {type(phone).__name__}")
    if not isinstance(number, str) or not number.strip():
        raise ValueError(f"phones[{index}].number: missing")
    if not isinstance(type_, str) or type_ not in _PHONE_TYPES:
        raise ValueError(f"phones[{index}].type: not a PhoneType")
    # Only what a person entered is stored; E.164 is derived again on every read.
    return {"number": number, "type": str(PhoneType(type_).value)}


_EMPTY_DOCUMENT = to_document(ContactRecord(system=SYSTEM, external_id=""))


def holds(data: Mapping[str, Any] | None, fields: Mapping[str, Any]) -> bool:
    """Whether a stored document already holds `fields` (document form, from to_fields).

    Missing and null stored fields count as empty, as `from_document` reads them; of a
    phone entry only `number` and `type` count (other keys are the card app's).
    """
    if data is None:
        return False
    for name, wanted in fields.items():
        stored = data.get(name)
        if stored is None:
            stored = _EMPTY_DOCUMENT.get(name)
        if name == "phones":
            stored, wanted = _managed_phones(stored), _managed_phones(wanted)
        if stored != wanted:
            return False
    return True


_MANAGED_PHONE_KEYS = ("number", "type")


def _managed_phones(value: Any) -> Any:
    if not isinstance(value, list) or not all(isinstance(p, Mapping) for p in value):
        return value
    return [{k: p.get(k) for k in _MANAGED_PHONE_KEYS} for p in value]


def keep_phone_extras(stored: Any, phones: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`phones` (document form) with the keys pdsync does not manage (`extension`,
    `label`, ...) carried over from the stored entries they replace.

    An entry replaces the stored entry with the same number (E.164, or as written when
    it cannot be parsed) and type; failing that, the one with the same number and
    another type (the type changed). Each stored entry gives its keys once; a stored
    entry that nothing replaces is gone, keys and all. `number` and `type` are always
    the new entry's.
    """
    if not isinstance(stored, list):
        return phones
    old = [
        (index, entry)
        for index, entry in enumerate(stored)
        if isinstance(entry, Mapping) and isinstance(entry.get("number"), str)
    ]
    taken: set[int] = set()
    chosen: list[Mapping[str, Any] | None] = [None] * len(phones)
    for same_type in (True, False):
        for position, phone in enumerate(phones):
            if chosen[position] is not None:
                continue
            key = _number_key(phone["number"])
            for index, candidate in old:
                if index in taken or _number_key(candidate["number"]) != key:
                    continue
                if same_type and (candidate.get("type") or PhoneType.OTHER.value) != phone["type"]:
                    continue
                chosen[position] = candidate
                taken.add(index)
                break
    merged: list[dict[str, Any]] = []
    for phone, entry in zip(phones, chosen, strict=True):
        extras = {k: v for k, v in (entry or {}).items() if k not in _MANAGED_PHONE_KEYS}
        merged.append({**extras, **phone})
    return merged


def _number_key(number: str) -> str:
    return normalize.e164(number) or normalize.text(number)


# --- documents -> records ------------------------------------------------------------


def from_document(
    doc_id: str,
    data: Mapping[str, Any] | None,
    update_time: datetime | Timestamp | None,
) -> ContactRecord | Rejected:
    """The record a contact document holds, or Rejected naming the first bad field.

    Phone numbers are kept verbatim with their E.164 form; one that cannot be parsed
    has `e164=None` and is not a reason to reject.
    """
    external_id: str | None = doc_id
    try:
        problem = _id_problem(doc_id)
        if problem is not None:
            external_id = None
            raise Malformed(f"id: {problem}")
        if not isinstance(data, Mapping):
            raise Malformed(f"document: expected a map, got {type(data).__name__}")
        for name, value in data.items():
            if hostile.nested_deeper(value, hostile.MAX_DEPTH - 1):
                raise Malformed(
                    f"{hostile.field_name(name)}: nested deeper than {hostile.MAX_DEPTH} levels"
                )
        return ContactRecord(
            system=SYSTEM,
            external_id=doc_id,
            kind=_read_kind(data),
            given_name=_read_text(data, "given_name"),
            family_name=_read_text(data, "family_name"),
            display_name=_read_text(data, "display_name"),
            title=_read_text(data, "title"),
            department=_read_text(data, "department"),
            emails=_read_emails(data),
            phones=_read_phones(data),
            notes=_read_text(data, "notes"),
            version=format_version(update_time) if update_time is not None else None,
        )
    except (Malformed, hostile.Hostile) as exc:
        return Rejected(system=SYSTEM, external_id=external_id, reason=str(exc), raw=raw_json(data))


def raw_json(data: Any) -> str:
    """A document as JSON for quarantine; Firestore-only types (timestamps, references,
    geo points, bytes) as their text form so nothing is dropped."""
    return hostile.storable(json.dumps(data, ensure_ascii=False, sort_keys=True, default=str))


def _id_problem(doc_id: str) -> str | None:
    """Why a document id cannot be shown, logged and linked, or None. Firestore takes
    almost any text (https://firebase.google.com/docs/firestore/quotas#collections_documents_and_fields);
    control characters (line breaks and tabs too) are refused here."""
    if any(char in doc_id for char in "\t\n\r"):
        return "a control character"
    return hostile.text_problem(doc_id, limit=hostile.MAX_ID_CHARS)


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _read_text(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Malformed(f"{name}: expected a string, got {_type_name(value)}")
    limit = hostile.MAX_NOTES_CHARS if name == "notes" else hostile.MAX_TEXT_CHARS
    return hostile.check_text(name, value, limit=limit)


def _read_kind(data: Mapping[str, Any]) -> ContactKind:
    value = data.get("kind")
    if value is None:
        return ContactKind.PERSON
    if not isinstance(value, str):
        raise Malformed(f"kind: expected a string, got {_type_name(value)}")
    if value not in _KINDS:
        raise Malformed(f"kind: unknown kind (expected one of {', '.join(sorted(_KINDS))})")
    return ContactKind(value)


def _read_emails(data: Mapping[str, Any]) -> tuple[str, ...]:
    value = data.get("emails")
    if value is None:
        return ()
    if not isinstance(value, list):
        raise Malformed(f"emails: expected a list of strings, got {_type_name(value)}")
    for index, item in enumerate(hostile.check_items("emails", value)):
        if not isinstance(item, str):
            raise Malformed(f"emails[{index}]: expected a string, got {_type_name(item)}")
        hostile.check_text(f"emails[{index}]", item)
    return tuple(value)


def _read_phones(data: Mapping[str, Any]) -> tuple[Phone, ...]:
    value = data.get("phones")
    if value is None:
        return ()
    if not isinstance(value, list):
        raise Malformed(f"phones: expected a list of maps, got {_type_name(value)}")
    phones: list[Phone] = []
    for index, item in enumerate(hostile.check_items("phones", value)):
        if not isinstance(item, Mapping):
            raise Malformed(f"phones[{index}]: expected a map, got {_type_name(item)}")
        number = item.get("number")
        if number is None or (isinstance(number, str) and not number.strip()):
            raise Malformed(f"phones[{index}].number: missing")
        if not isinstance(number, str):
            raise Malformed(f"phones[{index}].number: expected a string, got {_type_name(number)}")
        hostile.check_text(f"phones[{index}].number", number)
        type_ = item.get("type")
        if type_ is None:
            type_ = PhoneType.OTHER.value
        if not isinstance(type_, str) or type_ not in _PHONE_TYPES:
            raise Malformed(
                f"phones[{index}].type: unknown phone type "
                f"(expected one of {', '.join(sorted(_PHONE_TYPES))})"
            )
        phones.append(normalize.phone(number, PhoneType(type_)))
    return tuple(phones)


# --- the card ------------------------------------------------------------------------


def card_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    """Checked card fields: name and instructions are strings, domains a list of strings."""
    fields: dict[str, Any] = {}
    for name, value in data.items():
        if name not in CARD_FIELDS:
            raise ValueError(f"{name}: not a card field (expected {', '.join(CARD_FIELDS)})")
        if name == "domains":
            fields[name] = _domain_values(value)
        elif isinstance(value, str):
            fields[name] = value
        else:
            raise ValueError(f"{name}: expected a string, got {_type_name(value)}")
    return fields


def _domain_values(value: Any) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValueError("domains: expected a sequence of strings")
    domains = list(value)
    for index, item in enumerate(domains):
        if not isinstance(item, str):
            raise ValueError(f"domains[{index}]: expected a string, got {_type_name(item)}")
    return domains
