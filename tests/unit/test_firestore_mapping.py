"""Firestore documents <-> ContactRecord, and update times <-> versions (no emulator)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from proto.datetime_helpers import DatetimeWithNanoseconds

from connectors.firestore.mapping import (
    card_fields,
    contact_document_id,
    format_version,
    from_document,
    holds,
    parse_version,
    to_document,
    to_fields,
)
from connectors.firestore.settings import check_document_id
from daemon.domain import ContactKind, ContactRecord, Phone, PhoneType, Rejected

UPDATED = DatetimeWithNanoseconds(2025, 3, 4, 5, 6, 7, nanosecond=123456789, tzinfo=UTC)


def record(**values: Any) -> ContactRecord:
    return ContactRecord(system="firestore", external_id="doc-1", **values)


def read(data: Any) -> ContactRecord:
    item = from_document("doc-1", data, UPDATED)
    assert isinstance(item, ContactRecord), item
    return item


def rejected(data: Any) -> Rejected:
    item = from_document("doc-1", data, UPDATED)
    assert isinstance(item, Rejected), item
    return item


def test_a_record_survives_the_round_trip_with_norwegian_letters_and_phone_formats() -> None:
    original = record(
        kind=ContactKind.PERSON,
        given_name="Åse Bjørg",
        family_name="Ærøy-Østgård",
        display_name="ÆØÅ æøå",
        title="Daglig leder",
        department="Økonomi",
        emails=("åse@bær.no", "ase.ostgard@example.no"),
        phones=(
            Phone(number="22 33 44 55", type=PhoneType.WORK),
            Phone(number="+47 22334455", type=PhoneType.MOBILE),
            Phone(number="0047 22 33 44 55", type=PhoneType.HOME),
        ),
        notes="Ring før kl. 16 – spør etter Øyvind.",
    )

    document = to_document(original)
    back = read(document)

    assert document["phones"] == [
        {"number": "22 33 44 55", "type": "work"},
        {"number": "+47 22334455", "type": "mobile"},
        {"number": "0047 22 33 44 55", "type": "home"},
    ]
    assert back.values() == {
        **original.values(),
        "phones": tuple(
            Phone(number=p.number, type=p.type, e164="+4722334455") for p in original.phones
        ),
    }
    assert back.version == "2025-03-04T05:06:07.123456789Z"
    assert back.external_id == "doc-1"


def test_an_unparseable_number_is_kept_verbatim_and_not_rejected() -> None:
    back = read({"phones": [{"number": "ring sentralbordet", "type": "work"}]})

    assert back.phones == (Phone(number="ring sentralbordet", type=PhoneType.WORK, e164=None),)


def test_missing_and_null_fields_read_as_empty_and_unknown_fields_are_ignored() -> None:
    back = read({"given_name": "Kari", "notes": None, "created_by": "web-ui", "phones": None})

    assert back.kind is ContactKind.PERSON
    assert back.given_name == "Kari"
    assert back.notes == ""
    assert back.emails == () and back.phones == ()


def test_a_phone_without_type_is_other() -> None:
    assert read({"phones": [{"number": "22334455"}]}).phones[0].type is PhoneType.OTHER


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"emails": "kari@nordmann.no"}, "emails: expected a list of strings, got str"),
        ({"emails": ["kari@nordmann.no", 47]}, "emails[1]: expected a string, got int"),
        ({"kind": "robot"}, "kind: unknown kind"),
        ({"kind": 1}, "kind: expected a string, got int"),
        ({"phones": "22334455"}, "phones: expected a list of maps, got str"),
        ({"phones": [{"type": "work"}]}, "phones[0].number: missing"),
        ({"phones": [{"number": "  ", "type": "work"}]}, "phones[0].number: missing"),
        ({"phones": [{"number": 22334455}]}, "phones[0].number: expected a string, got int"),
        ({"phones": ["22334455"]}, "phones[0]: expected a map, got str"),
        ({"phones": [{"number": "22334455", "type": "jobb"}]}, "phones[0].type: unknown"),
        ({"given_name": ["Kari"]}, "given_name: expected a string, got list"),
        (None, "document: expected a map"),
    ],
)
def test_a_malformed_document_is_rejected_naming_the_field_not_the_value(
    data: Any, reason: str
) -> None:
    item = rejected(data)

    assert item.reason.startswith(reason)
    assert item.system == "firestore" and item.external_id == "doc-1"
    assert json.loads(item.raw) == data
    for secret in ("kari", "nordmann", "22334455", "robot", "jobb"):
        assert secret not in item.reason.lower()


def test_raw_keeps_firestore_only_types_as_text() -> None:
    item = rejected({"kind": "robot", "seen": UPDATED, "blob": b"\x00"})

    raw = json.loads(item.raw)
    assert raw["kind"] == "robot"
    assert raw["seen"].startswith("2025-03-04")


def test_to_fields_writes_only_the_given_fields_in_document_form() -> None:
    fields = to_fields(
        {"kind": ContactKind.DEPARTMENT, "emails": ("a@b.no",), "phones": [Phone(number="1")]}
    )

    assert fields == {
        "kind": "department",
        "emails": ["a@b.no"],
        "phones": [{"number": "1", "type": "other"}],
    }


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"colour": "blue"}, "colour: not a sync field"),
        ({"kind": "robot"}, "kind: not a ContactKind"),
        ({"emails": "a@b.no"}, "emails: expected a sequence of strings"),
        ({"emails": [1]}, "emails[0]: expected a string"),
        ({"phones": [Phone(number=" ")]}, "phones[0].number: missing"),
        ({"phones": [{"number": "1", "type": "jobb"}]}, "phones[0].type: not a PhoneType"),
        ({"phones": ["22334455"]}, "phones[0]: expected a Phone"),
        ({"phones": 5}, "phones: expected a sequence of Phones"),
        ({"notes": 5}, "notes: expected a string, got int"),
    ],
)
def test_to_fields_refuses_bad_values(values: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        to_fields(values)


def test_holds_compares_in_document_form_with_missing_fields_as_empty() -> None:
    stored = {"given_name": "Kari", "phones": [{"number": "1", "type": "work"}]}

    assert holds(stored, {"given_name": "Kari", "notes": "", "emails": []})
    assert holds(stored, to_fields({"phones": [Phone(number="1", type=PhoneType.WORK)]}))
    assert not holds(stored, {"given_name": "Ola"})
    assert not holds(None, {"given_name": "Kari"})


@pytest.mark.parametrize(
    ("update_time", "version"),
    [
        (UPDATED, "2025-03-04T05:06:07.123456789Z"),
        (
            DatetimeWithNanoseconds(2025, 3, 4, 5, 6, 7, nanosecond=100, tzinfo=UTC),
            "2025-03-04T05:06:07.000000100Z",
        ),
        (datetime(2025, 3, 4, 5, 6, 7, 250000, tzinfo=UTC), "2025-03-04T05:06:07.250000000Z"),
        (
            datetime(2025, 3, 4, 7, 6, 7, tzinfo=timezone(timedelta(hours=2))),
            "2025-03-04T05:06:07.000000000Z",
        ),
        (Timestamp(seconds=1741064767, nanos=5), "2025-03-04T05:06:07.000000005Z"),
    ],
)
def test_versions_are_utc_rfc3339_with_nanoseconds_and_round_trip(
    update_time: datetime | Timestamp, version: str
) -> None:
    assert format_version(update_time) == version
    parsed = parse_version(version)
    assert format_version(parsed) == version
    if isinstance(update_time, Timestamp):
        assert parsed == update_time


def test_a_version_from_the_client_round_trips_into_the_same_precondition() -> None:
    parsed = parse_version(format_version(UPDATED))

    assert DatetimeWithNanoseconds.from_timestamp_pb(parsed) == UPDATED
    assert parsed.nanos == 123456789


@pytest.mark.parametrize(
    "bad", ["", "yesterday", "2025-03-04 05:06:07Z", "2025-03-04T05:06:07+02:00", "2025-03-04"]
)
def test_parse_version_refuses_what_format_version_never_makes(bad: str) -> None:
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_version(bad)


def test_format_version_refuses_a_naive_datetime() -> None:
    with pytest.raises(ValueError, match="time zone"):
        format_version(datetime(2025, 1, 1))


def test_contact_document_ids_are_deterministic_valid_and_distinct() -> None:
    first = contact_document_id("link/1")

    assert first == contact_document_id("link/1")
    assert first != contact_document_id("link/2")
    assert check_document_id(first) == first
    assert len(first) == 32


def test_card_fields_are_checked() -> None:
    assert card_fields({"name": "Bær AS", "domains": ("baer.no",)}) == {
        "name": "Bær AS",
        "domains": ["baer.no"],
    }
    with pytest.raises(ValueError, match="colour: not a card field"):
        card_fields({"colour": "blue"})
    with pytest.raises(ValueError, match="domains: expected a sequence"):
        card_fields({"domains": "baer.no"})
    with pytest.raises(ValueError, match="instructions: expected a string"):
        card_fields({"instructions": 3})
