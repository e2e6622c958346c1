"""What Zisson holds of a record, per API; and the projection law without the network.

The law is checked here on generated records through the same wire mapping the
connector and the simulator use (JSON body -> stored user -> read back; stored user ->
the simulator's XML Contact -> read back), so odd text is covered without HTTP.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.zisson import json_api, xml_api
from connectors.zisson.projection import FIELDS, project_json, project_xml
from connectors.zisson.write_api import user_body
from daemon.domain import SYNC_FIELDS, ContactKind, ContactRecord, Phone, PhoneType
from sandbox.zisson.render import contact_element
from sandbox.zisson.store import validate_user_fields

W, M = PhoneType.WORK, PhoneType.MOBILE

texts = st.text(max_size=12) | st.sampled_from(["", " ", "Åse", "ÆØÅ æøå", "a\r\nb", "\x00"])
numbers = st.sampled_from(
    ["22 33 44 55", "+47 22334455", "0047 22 33 44 55", "22334455", " 412 34 567 ", "", "ring"]
) | st.text(max_size=10)
phones = st.builds(Phone, number=numbers, type=st.sampled_from(PhoneType))
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
    emails=st.lists(texts, max_size=3).map(tuple),
    phones=st.lists(phones, max_size=4).map(tuple),
    notes=texts,
)


def on_fields(record: ContactRecord) -> dict[str, object]:
    return {name: value for name, value in record.values().items() if name in FIELDS}


def stored(record: ContactRecord) -> dict[str, object]:
    """What the simulator keeps when the connector creates `record`."""
    body = json.loads(json.dumps(user_body(record), ensure_ascii=False))
    return {"id": "id-1", **validate_user_fields(body, partial=False), "version": 1}


def read_json(user: dict[str, object]) -> ContactRecord:
    wire = json.loads(json.dumps(user, ensure_ascii=False).encode("utf-8"))
    record = json_api.user_record(wire)
    assert isinstance(record, ContactRecord), record
    return record


def read_xml(user: dict[str, object]) -> ContactRecord:
    element = ET.fromstring(contact_element(user).encode("utf-8"))
    record = xml_api.contact_record(element, "")
    assert isinstance(record, ContactRecord), record
    return record


@settings(max_examples=300, deadline=None)
@given(records)
def test_json_law(record: ContactRecord) -> None:
    projected = project_json(record)
    assert on_fields(read_json(stored(projected))) == on_fields(projected)
    assert project_json(projected) == projected


@settings(max_examples=300, deadline=None)
@given(records)
def test_xml_law(record: ContactRecord) -> None:
    projected = project_xml(record)
    assert on_fields(read_xml(stored(projected))) == on_fields(projected)
    assert project_xml(projected) == projected


def test_fields_are_all_sync_fields() -> None:
    assert frozenset(SYNC_FIELDS) == FIELDS


def test_json_keeps_everything_but_blanks() -> None:
    record = ContactRecord(
        system="s",
        external_id="x",
        display_name="Kari N.",
        emails=("a@x.no", " ", "b@x.no"),
        phones=(
            Phone(number=" 22 33 44 55 ", type=PhoneType.HOME, e164="wrong"),
            Phone(number="  ", type=W),
        ),
    )
    projected = project_json(record)
    assert projected.emails == ("a@x.no", "b@x.no")
    assert projected.phones == (
        Phone(number="22 33 44 55", type=PhoneType.HOME, e164="+4722334455"),
    )
    assert projected.display_name == "Kari N."


def test_xml_holds_one_email_one_work_number_one_mobile() -> None:
    record = ContactRecord(
        system="s",
        external_id="x",
        display_name="Kari N.",
        emails=(" ", "a@x.no", "b@x.no"),
        phones=(
            Phone(number="412 34 567", type=M),
            Phone(number="22 33 44 55", type=PhoneType.FAX),
            Phone(number="22 00 00 00", type=W),
            Phone(number="900 00 000", type=M),
        ),
    )
    projected = project_xml(record)
    assert projected.emails == ("a@x.no",)
    assert projected.phones == (
        Phone(number="22 33 44 55", type=W, e164="+4722334455"),
        Phone(number="412 34 567", type=M, e164="+4741234567"),
    )
    assert projected.display_name == ""  # a person has none in XML


def test_xml_departments() -> None:
    named = ContactRecord(
        system="s",
        external_id="x",
        kind=ContactKind.DEPARTMENT,
        given_name="G",
        display_name="Lager",
    )
    assert (project_xml(named).kind, project_xml(named).given_name) == (ContactKind.DEPARTMENT, "")
    nameless = ContactRecord(
        system="s", external_id="x", kind=ContactKind.DEPARTMENT, given_name="G"
    )
    assert project_xml(nameless).kind is ContactKind.PERSON
    assert project_xml(nameless).given_name == ""


def test_xml_drops_what_xml_cannot_carry() -> None:
    record = ContactRecord(system="s", external_id="x", notes="a\x00b\x0bc\r\nd\ufffe😀")
    assert project_xml(record).notes == "abc\r\nd😀"
