"""Reading Zisson's wire formats into records, and the helpers around writes (no network)."""

from __future__ import annotations

import base64
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from connectors.base import ContractError, RetriableError
from connectors.file_vault import write_secret_file
from connectors.zisson import instructions, json_api, xml_api
from connectors.zisson.auth import refresh_time
from connectors.zisson.values import BadValues, coerce_values
from daemon.domain import ContactKind, ContactRecord, Customer, Phone, PhoneType, Rejected

SECRET = "Hemmelig Verdi 22 33 44 55"  # must never show up in a reason


def test_xml_namespaces_and_unknown_elements_are_tolerated() -> None:
    document = (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<Contacts xmlns="http://zisson.example/contacts">'
        "<Contact><ContactId> 17 </ContactId><FirstName>Åse</FirstName>"
        "<Number>22 33 44 55</Number><Shoe>44</Shoe><Editable>false</Editable></Contact>"
        "</Contacts>"
    ).encode()
    ((record, raw),) = xml_api.parse_contacts(document)
    assert isinstance(record, ContactRecord)
    assert (record.external_id, record.given_name) == ("17", "Åse")
    assert record.phones == (Phone(number="22 33 44 55", type=PhoneType.WORK, e164="+4722334455"),)
    assert raw.startswith("<ns0:Contact") or raw.startswith("<Contact")


@pytest.mark.parametrize(
    "document",
    [
        b"not xml at all",
        b"<Error>Unauthorized</Error>",
        b"<Contacts><a></b></Contacts>",
        # A wrapper the public shape does not have: refused, not skipped as if empty.
        b"<Contacts><Page><Contact><ContactId>1</ContactId></Contact></Page></Contacts>",
    ],
)
def test_xml_that_is_not_a_contact_list_is_a_contract_error(document: bytes) -> None:
    with pytest.raises(ContractError) as caught:
        xml_api.parse_contacts(document)
    assert "Unauthorized" not in str(caught.value)


@pytest.mark.parametrize(
    "document",
    [
        b"",
        b"<Contacts><Contact>",
        b"<Contacts><Contact><ContactId>1</ContactId></Contact><Contact><First",
        "<Contacts><Contact><FirstName>Å".encode()[:-1],  # half a UTF-8 character
        b"<Contacts><Contact><Comments><![CDATA[ab",
    ],
)
def test_xml_cut_short_is_retriable_and_never_a_shorter_listing(document: bytes) -> None:
    with pytest.raises(xml_api.CutShort) as caught:
        xml_api.parse_contacts(document)
    assert isinstance(caught.value, RetriableError) and "cut short" in str(caught.value)


def test_xml_rejections_name_the_field_never_the_value() -> None:
    document = (
        "<Contacts>"
        f"<Contact><ContactId></ContactId><FirstName>{SECRET}</FirstName></Contact>"
        f"<Contact><ContactId>2</ContactId><Comments>{SECRET}</Comments><Comments>x</Comments></Contact>"
        "</Contacts>"
    ).encode()
    entries = [entry for entry, _ in xml_api.parse_contacts(document)]
    assert [(e.external_id, e.reason) for e in entries if isinstance(e, Rejected)] == [
        (None, "ContactId: empty"),
        ("2", "Comments: appears more than once"),
    ]
    assert all(
        SECRET not in e.reason and SECRET in e.raw for e in entries if isinstance(e, Rejected)
    )


@pytest.mark.parametrize(
    ("entry", "external_id", "reason"),
    [
        ([SECRET], None, "entry: not a JSON object"),
        ({"firstName": SECRET}, None, "id: missing"),
        ({"id": "", "firstName": SECRET}, None, "id: missing"),
        ({"id": {"x": SECRET}}, None, "id: not a string"),
        ({"id": "1", "firstName": ["Kari"]}, "1", "firstName: not a string"),
        ({"id": "1", "type": SECRET}, "1", "type: neither 'user' nor 'department'"),
        ({"id": "1", "emails": SECRET}, "1", "emails: not a list"),
        ({"id": "1", "emails": ["a@b.no", 7]}, "1", "emails[1]: not a string"),
        ({"id": "1", "phoneNumbers": SECRET}, "1", "phoneNumbers: not a list"),
        ({"id": "1", "phoneNumbers": [SECRET]}, "1", "phoneNumbers[0]: not an object"),
        ({"id": "1", "phoneNumbers": [{"type": "work"}]}, "1", "phoneNumbers[0].number: missing"),
        (
            {"id": "1", "phoneNumbers": [{"number": 22334455}]},
            "1",
            "phoneNumbers[0].number: not a string",
        ),
        (
            {"id": "1", "phoneNumbers": [{"number": "1", "type": 3}]},
            "1",
            "phoneNumbers[0].type: not a string",
        ),
        ({"id": "1", "version": "3"}, "1", "version: not an integer"),
        ({"id": "1", "version": True}, "1", "version: not an integer"),
    ],
)
def test_json_rejections_name_the_field_never_the_value(
    entry: Any, external_id: str | None, reason: str
) -> None:
    rejected = json_api.user_record(entry)
    assert isinstance(rejected, Rejected)
    assert (rejected.external_id, rejected.reason) == (external_id, reason)
    assert SECRET not in rejected.reason
    assert json.loads(rejected.raw) == entry


def test_json_tolerates_the_public_shape_and_nulls() -> None:
    record = json_api.user_record(
        {
            "guid": "g-1",
            "firstName": "Åse",
            "lastName": None,
            "mobileNumber": "41234567",
            "username": "ase",
        }
    )
    assert isinstance(record, ContactRecord)
    assert (record.external_id, record.given_name, record.family_name) == ("g-1", "Åse", "")
    assert record.phones == (Phone(number="41234567", type=PhoneType.MOBILE, e164="+4741234567"),)
    assert record.version is None and record.kind is ContactKind.PERSON


def test_json_phone_labels_map_onto_phone_types() -> None:
    record = json_api.user_record(
        {
            "id": 5,
            "type": "Department",
            "phoneNumbers": [
                {"number": "1", "type": "gsm"},
                {"number": "2", "type": "work"},
                {"number": "3", "type": "fax"},
                {"number": "4"},
            ],
            "version": 12,
        }
    )
    assert isinstance(record, ContactRecord)
    assert record.external_id == "5" and record.version == "12"
    assert record.kind is ContactKind.DEPARTMENT
    assert [p.type for p in record.phones] == [
        PhoneType.MOBILE,
        PhoneType.WORK,
        PhoneType.FAX,
        PhoneType.OTHER,
    ]


def test_coerce_values_accepts_domain_and_plain_values() -> None:
    values = coerce_values(
        {
            "kind": "department",
            "emails": ["a@b.no"],
            "phones": [{"number": "22 33 44 55", "type": "work"}, Phone(number="1")],
            "notes": "",
        }
    )
    assert values["kind"] is ContactKind.DEPARTMENT
    assert values["emails"] == ("a@b.no",)
    assert values["phones"][0] == Phone(number="22 33 44 55", type=PhoneType.WORK)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"kind": SECRET}, "kind: not a contact kind"),
        ({"emails": SECRET}, "emails: not a list of strings"),
        ({"emails": [1]}, "emails: not a list of strings"),
        ({"phones": [{"number": SECRET, "type": "pager"}]}, "phones[0].type: not a phone type"),
        ({"phones": [SECRET]}, "phones[0]: not a phone"),
        ({"phones": {"number": SECRET}}, "phones: not a list of phones"),
        ({"title": 3}, "title: not a string"),
        ({"emails": 3}, "emails: not a list of strings"),
        ({"phones": 3}, "phones: not a list of phones"),
        ({"notes": "ok \ud800"}, "notes: not valid Unicode text"),
        ({"phones": [Phone(number="\udfff")]}, "phones[0].number: not valid Unicode text"),
        ({"ssn": SECRET}, "ssn: not a sync field"),
    ],
)
def test_coerce_values_errors_name_fields_only(values: dict[str, Any], message: str) -> None:
    with pytest.raises(BadValues) as caught:
        coerce_values(values)
    assert str(caught.value) == message


def test_instructions_are_specific_to_the_api() -> None:
    customer = Customer(id="k-1", name="Bakeri Ås AS")
    record = ContactRecord(
        system="zisson",
        external_id="",
        given_name="Kari",
        emails=("a@b.no", "c@d.no"),
        phones=(Phone(number="22 33 44 55", type=PhoneType.WORK),),
    )
    xml = instructions.create(customer, "xml", record)
    assert "for the customer «Bakeri Ås AS» (id k-1), add a new person:" in xml
    assert "  - First name: «Kari»" in xml and "  - E-mail: «a@b.no»" in xml
    assert "  - Number: «22 33 44 55»" in xml and "GSM" not in xml
    json_text = instructions.create(customer, "json", record)
    assert "  - E-mail addresses: «a@b.no», «c@d.no», in this order" in json_text
    assert "  - Phone numbers: «22 33 44 55» (work)" in json_text
    assert instructions.delete(customer, "z-9", None).startswith(
        "In Zisson, for the customer «Bakeri Ås AS» (id k-1), delete the entry with Zisson id z-9."
    )


def test_write_secret_file_replaces_atomically_with_owner_only_mode(tmp_path: Path) -> None:
    target = tmp_path / "refresh_token"
    target.write_text("old\n")
    target.chmod(0o644)

    write_secret_file(target, "new-token")

    assert target.read_text() == "new-token\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["refresh_token"]


def test_write_secret_file_leaves_no_temp_on_failure(tmp_path: Path) -> None:
    missing_dir = tmp_path / "gone" / "refresh_token"
    with pytest.raises(OSError):
        write_secret_file(missing_dir, "x")
    assert os.listdir(tmp_path) == []


def test_refresh_time_keeps_a_margin_before_exp() -> None:
    def jwt(claims: dict[str, float]) -> str:
        payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        return f"e30.{payload}.sig"

    now = time.time()
    assert refresh_time(jwt({"iat": now, "exp": now + 300}), now=now) == pytest.approx(now + 270)
    assert refresh_time(jwt({"iat": now, "exp": now + 1}), now=now) == pytest.approx(now + 0.9)
    assert refresh_time("not-a-jwt", now=now) == pytest.approx(now + 60)
