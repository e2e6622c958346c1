"""Reading Zisson through both APIs against the simulator, over real HTTP."""

from __future__ import annotations

import json

import pytest

from daemon.domain import ContactKind, Phone, PhoneType
from tests.fixtures.zisson import ZissonBound, ZissonConnect

FORMATS = ["22 33 44 55", "+47 22334455", "0047 22 33 44 55", "22334455"]


def person(n: int, **extra: object) -> dict[str, object]:
    return {
        "firstName": f"Åse{n}",
        "lastName": "Ødegård-Bækkelund",
        "emails": [f"ase.{n}@bækken.no"],
        "phoneNumbers": [{"number": f"4{n:07d}", "type": "mobile"}],
        **extra,
    }


async def test_xml_read_shows_contacts_as_records(zisson_xml: ZissonBound) -> None:
    user_id = zisson_xml.seed(
        {
            "firstName": "Åse",
            "lastName": "Ødegård",
            "title": "Daglig leder",
            "department": "Økonomi",
            "emails": ["åse@ødegård.no", "second@example.no"],
            "phoneNumbers": [
                {"number": "412 34 567", "type": "mobile"},
                {"number": "22 33 44 55", "type": "home"},
                {"number": "22 99 88 77", "type": "work"},
            ],
            "comments": "Ring før kl. 15\r\nIkke på fredager",
        }
    )
    department_id = zisson_xml.seed(
        {"type": "department", "displayName": "Sentralbord ÆØÅ", "department": "Drift"}
    )

    result = await zisson_xml.connector.read(zisson_xml.customer)

    assert result.rejected == ()
    by_id = {r.external_id: r for r in result.records}
    kari = by_id[user_id]
    assert (kari.kind, kari.given_name, kari.family_name) == (ContactKind.PERSON, "Åse", "Ødegård")
    assert (kari.title, kari.department) == ("Daglig leder", "Økonomi")
    assert kari.emails == ("åse@ødegård.no",)
    assert kari.phones == (
        Phone(number="22 33 44 55", type=PhoneType.WORK, e164="+4722334455"),
        Phone(number="412 34 567", type=PhoneType.MOBILE, e164="+4741234567"),
    )
    assert kari.notes == "Ring før kl. 15\r\nIkke på fredager"
    assert kari.version is None  # the XML API has no version
    desk = by_id[department_id]
    assert (desk.kind, desk.display_name, desk.department) == (
        ContactKind.DEPARTMENT,
        "Sentralbord ÆØÅ",
        "Drift",
    )
    assert zisson_xml.sim.counters["GET /api/simple/GetContacts"] == 1


async def test_json_read_follows_every_page(zisson_connect: ZissonConnect) -> None:
    bound = zisson_connect("json", page_size=7)
    ids = [bound.seed(person(n)) for n in range(30)]

    result = await bound.connector.read(bound.customer)

    assert [r.external_id for r in result.records] == ids
    assert all(r.version == "1" for r in result.records)
    # ceil(30 / 7) pages, read twice (a listing of several pages is taken only when two
    # reads agree), and one refresh-token exchange.
    assert bound.sim.counters["GET /external-api/v1/entities/users"] == 2 * 5
    assert bound.connector.requests == 2 * 5 + 1


async def test_json_read_of_one_page_is_one_request(zisson_connect: ZissonConnect) -> None:
    bound = zisson_connect("json", page_size=7)
    ids = [bound.seed(person(n)) for n in range(7)]

    result = await bound.connector.read(bound.customer)

    assert [r.external_id for r in result.records] == ids
    assert bound.sim.counters["GET /external-api/v1/entities/users"] == 1


async def test_json_read_of_an_empty_account(zisson_json: ZissonBound) -> None:
    result = await zisson_json.connector.read(zisson_json.customer)
    assert result.records == () and result.rejected == ()


@pytest.mark.parametrize("api", ["json", "xml"])
async def test_norwegian_letters_and_phone_formats_round_trip(
    zisson_connect: ZissonConnect, api: str
) -> None:
    bound = zisson_connect(api)  # type: ignore[arg-type]
    ids = {
        number: bound.seed(
            {
                "firstName": "Æsa Østby",
                "lastName": "Ågård ÆØÅ æøå",
                "comments": "Blåbærsyltetøy",
                "phoneNumbers": [{"number": number, "type": "work"}],
            }
        )
        for number in FORMATS
    }

    result = await bound.connector.read(bound.customer)

    by_id = {r.external_id: r for r in result.records}
    for number, user_id in ids.items():
        record = by_id[user_id]
        assert record.given_name == "Æsa Østby"
        assert record.family_name == "Ågård ÆØÅ æøå"
        assert record.notes == "Blåbærsyltetøy"
        assert record.phones == (Phone(number=number, type=PhoneType.WORK, e164="+4722334455"),)


@pytest.mark.parametrize("api", ["json", "xml"])
async def test_unparseable_number_is_kept_verbatim(zisson_connect: ZissonConnect, api: str) -> None:
    bound = zisson_connect(api)  # type: ignore[arg-type]
    bound.seed(
        {"firstName": "Per", "phoneNumbers": [{"number": "ring resepsjonen", "type": "work"}]}
    )

    (record,) = (await bound.connector.read(bound.customer)).records

    assert record.phones == (Phone(number="ring resepsjonen", type=PhoneType.WORK, e164=None),)


async def test_json_malformed_entries_are_rejected_and_the_rest_read(
    zisson_json: ZissonBound,
) -> None:
    good = [zisson_json.seed(person(n)) for n in range(3)]
    sim, guid = zisson_json.sim, zisson_json.guid
    sim.put_raw(guid, {"firstName": "Uten Id", "emails": ["uten.id@example.no"]})
    sim.put_raw(guid, {"id": "raw-2", "firstName": "Kari", "phoneNumbers": "22 33 44 55"})
    sim.put_raw(guid, {"id": "raw-3", "emails": ["ok@example.no", 47]})
    sim.put_raw(guid, "<Contact><FirstName>Bare XML</FirstName></Contact>")
    good.append(zisson_json.seed(person(9)))

    result = await zisson_json.connector.read(zisson_json.customer)

    assert [r.external_id for r in result.records] == good
    reasons = {(r.external_id, r.reason) for r in result.rejected}
    assert reasons == {
        (None, "id: missing"),
        ("raw-2", "phoneNumbers: not a list"),
        ("raw-3", "emails[1]: not a string"),
        (None, "entry: not a JSON object"),
    }
    for rejected in result.rejected:
        assert rejected.system == "zisson"
        for value in ("Uten Id", "Kari", "22 33 44 55", "47", "Bare XML", "example.no"):
            assert value not in rejected.reason
    raws = {json.dumps(json.loads(r.raw), ensure_ascii=False) for r in result.rejected}
    assert '{"id": "raw-2", "firstName": "Kari", "phoneNumbers": "22 33 44 55"}' in raws


async def test_xml_malformed_entries_are_rejected_and_the_rest_read(
    zisson_xml: ZissonBound,
) -> None:
    good = [zisson_xml.seed(person(n)) for n in range(2)]
    sim, guid = zisson_xml.sim, zisson_xml.guid
    sim.put_raw(guid, {"firstName": "Uten Id", "emails": ["uten.id@example.no"]})
    sim.put_raw(
        guid,
        "<Contact><ContactId>x-1</ContactId><Email>a@b.no</Email><Email>c@d.no</Email></Contact>",
    )
    sim.put_raw(
        guid, "<Contact><ContactId>x-2</ContactId><FirstName><b>Per</b></FirstName></Contact>"
    )
    good.append(zisson_xml.seed(person(5)))

    result = await zisson_xml.connector.read(zisson_xml.customer)

    assert [r.external_id for r in result.records] == good
    assert {(r.external_id, r.reason) for r in result.rejected} == {
        (None, "ContactId: missing"),
        ("x-1", "Email: appears more than once"),
        ("x-2", "FirstName: holds elements instead of text"),
    }
    (no_id,) = [r for r in result.rejected if r.external_id is None]
    assert "<FirstName>Uten Id</FirstName>" in no_id.raw
    assert all("Uten Id" not in r.reason and "Per" not in r.reason for r in result.rejected)


async def test_a_conflicting_duplicate_id_is_quarantined_not_dropped(
    zisson_json: ZissonBound,
) -> None:
    keep = zisson_json.seed(person(1))
    twin = zisson_json.seed(person(2))
    zisson_json.sim.put_raw(
        zisson_json.guid, {**zisson_json.sim.user(zisson_json.guid, twin), "title": "Annen"}
    )

    result = await zisson_json.connector.read(zisson_json.customer)

    assert [r.external_id for r in result.records] == [keep]
    assert [(r.external_id, r.reason) for r in result.rejected] == [
        (twin, "id: appears more than once with different content")
    ] * 2
