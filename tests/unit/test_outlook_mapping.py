"""Outlook contacts <-> records, and the projection law without the network.

The law, "write any record, read it back, get exactly project(record) on `fields`", is
checked on generated records through the same wire the connector uses: the connector's
POST/PATCH body, JSON, the simulator's own validation and rendering of a Graph contact
(product code in sandbox/graph), JSON again, and the connector's reader.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.outlook.mapping import (
    FIELDS,
    create_body,
    from_contact,
    project,
    update_body,
    version_of,
)
from daemon.domain import SYNC_FIELDS, ContactKind, ContactRecord, Phone, PhoneType, Rejected
from sandbox.graph.contacts import validate_contact
from sandbox.graph.render import contact_json
from sandbox.graph.store import GraphState

M, W, H, OTHER, F = PhoneType.MOBILE, PhoneType.WORK, PhoneType.HOME, PhoneType.OTHER, PhoneType.FAX

texts = st.text(max_size=12) | st.sampled_from(
    ["", " ", "Åse", "ÆØÅ æøå", "A\u030ase", "a\r\nb", "\x00", "Bjørnstad-Lie", "😀"]
)
numbers = st.sampled_from(
    ["22 33 44 55", "+47 22334455", "0047 22 33 44 55", " 412 34 567 ", "", "ring", "\x01"]
) | st.text(max_size=10)
phones = st.builds(Phone, number=numbers, type=st.sampled_from(PhoneType))
emails = st.sampled_from(["ola@x.no", " kari@y.no ", "", "ÅSE@Bjørn.no", "\x00"]) | texts
records = st.builds(
    ContactRecord,
    system=st.just("firestore"),
    external_id=st.just("x"),
    kind=st.sampled_from(ContactKind),
    given_name=texts,
    family_name=texts,
    display_name=texts,
    title=texts,
    department=texts,
    emails=st.lists(emails, max_size=5).map(tuple),
    phones=st.lists(phones, max_size=7).map(tuple),
    notes=texts,
)


def on_fields(record: ContactRecord) -> dict[str, object]:
    return {name: value for name, value in record.values().items() if name in FIELDS}


def wire(value: Any) -> Any:
    return json.loads(json.dumps(value, ensure_ascii=False).encode("utf-8"))


class Stored:
    """One contact as the simulated Exchange keeps it."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.state = GraphState(0)
        self.mailbox = self.state.add_mailbox("svc@we4you.no")
        fields = validate_contact(wire(body), partial=False)
        self.contact = self.mailbox.add_contact(self.mailbox.default_contacts, fields)

    def patch(self, body: dict[str, Any]) -> None:
        self.mailbox.update_contact(self.contact, validate_contact(wire(body), partial=True))

    def read(self) -> ContactRecord:
        item = from_contact(wire(contact_json(self.mailbox, self.contact)))
        assert isinstance(item, ContactRecord), item
        return item


@settings(max_examples=300, deadline=None)
@given(records)
def test_create_then_read_gives_the_projection(record: ContactRecord) -> None:
    stored = Stored(create_body(record.values()))
    assert on_fields(stored.read()) == on_fields(project(record))


@settings(max_examples=200, deadline=None)
@given(records, records, st.sets(st.sampled_from(SYNC_FIELDS)))
def test_update_then_read_gives_the_projection(
    before: ContactRecord, after: ContactRecord, changed: set[str]
) -> None:
    stored = Stored(create_body(before.values()))
    current = stored.read()
    values = {name: getattr(after, name) for name in changed}
    stored.patch(update_body(values, current))
    assert on_fields(stored.read()) == on_fields(project(current.with_values(values)))


@settings(max_examples=200, deadline=None)
@given(records)
def test_projection_is_idempotent_and_reads_are_their_own_projection(
    record: ContactRecord,
) -> None:
    once = project(record)
    assert project(once) == once
    read = Stored(create_body(record.values())).read()
    assert on_fields(project(read)) == on_fields(read)


def test_what_an_outlook_contact_holds() -> None:
    record = ContactRecord(
        system="firestore",
        external_id="1",
        kind=ContactKind.DEPARTMENT,
        given_name="Åse",
        family_name="Bjørnstad",
        emails=("a@x.no", " ", "b@x.no", "c@x.no", "d@x.no"),
        phones=(
            Phone(number="900 11 222", type=M),
            Phone(number="22 33 44 55", type=OTHER),
            Phone(number="412 34 567", type=M),
            Phone(number="22 00 00 01", type=W),
            Phone(number="22 00 00 02", type=F),
            Phone(number="67 00 00 01", type=H),
            Phone(number="67 00 00 02", type=H),
            Phone(number="67 00 00 03", type=H),
        ),
    )
    held = project(record)
    assert held.kind is ContactKind.PERSON
    assert held.display_name == "Åse Bjørnstad"  # composed, as Exchange does
    assert held.emails == ("a@x.no", "b@x.no", "c@x.no")
    assert [(p.number, p.type) for p in held.phones] == [
        ("900 11 222", M),  # mobilePhone: one number
        ("22 00 00 01", W),  # businessPhones: work first, then other, fax, more mobiles
        ("22 33 44 55", W),
        ("67 00 00 01", H),  # homePhones: two
        ("67 00 00 02", H),
    ]
    assert held.phones[0].e164 == "+4790011222"


def test_the_body_sets_every_phone_property_so_old_numbers_are_cleared() -> None:
    body = update_body({"phones": (Phone(number="22334455", type=W),)}, None)
    assert body == {"mobilePhone": None, "businessPhones": ["22334455"], "homePhones": []}
    assert update_body({"title": ""}, None) == {"jobTitle": None}
    with pytest.raises(ValueError, match=r"^kind: not a ContactKind$"):
        update_body({"kind": "robot"}, None)
    with pytest.raises(ValueError, match=r"^emails\[1\]: expected a string, got int$"):
        update_body({"emails": ["a@x.no", 5]}, None)


@pytest.mark.parametrize(
    ("contact", "reason"),
    [
        ({"id": "1", "givenName": 5}, "givenName: expected a string, got int"),
        ({"id": "1", "businessPhones": "22334455"}, "businessPhones: expected a list of strings"),
        ({"id": "1", "homePhones": ["1", None]}, "homePhones[1]: expected a string, got null"),
        ({"id": "1", "emailAddresses": [{"address": 7}]}, "emailAddresses[0].address"),
        ({"givenName": "Ola"}, "id: missing"),
    ],
)
def test_malformed_contacts_are_rejected_naming_the_field_not_the_value(
    contact: dict[str, Any], reason: str
) -> None:
    item = from_contact(contact)
    assert isinstance(item, Rejected)
    assert item.reason.startswith(reason)
    assert "22334455" not in item.reason and "Ola" not in item.reason
    assert json.loads(item.raw) == contact  # kept whole for quarantine


def test_version_is_the_etag() -> None:
    assert version_of({"@odata.etag": 'W/"CQA1"', "changeKey": "CQA1"}) == 'W/"CQA1"'
    assert version_of({"changeKey": "CQA2"}) == 'W/"CQA2"'
    assert version_of({}) is None
