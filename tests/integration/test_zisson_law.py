"""The projection law, end to end: write a record, read it back, get `project(record)`.

For each API the connector's view for that customer is used; the law is checked on the
view's `fields`, for records chosen to sit on the edges of what each API can hold.
"""

from __future__ import annotations

import pytest

from connectors.base import Capability, Connector, FatalError
from connectors.zisson import ZissonApiView
from daemon.domain import ContactKind, ContactRecord, Operation, OpKind, OpStatus, Phone
from daemon.domain import PhoneType as T
from tests.fixtures.zisson import ZissonBound, ZissonConnect


def rec(**values: object) -> ContactRecord:
    return ContactRecord(system="firestore", external_id="card-1", **values)  # type: ignore[arg-type]


TRICKY = {
    "everything": rec(
        given_name="Åse Marie",
        family_name="Ødegård-Bækkelund",
        display_name="Åse M. Ødegård",
        title="Daglig leder",
        department="Økonomi & innkjøp",
        emails=("åse@ødegård.no", "ase.privat@example.no"),
        phones=(
            Phone(number="0047 22 33 44 55", type=T.HOME),
            Phone(number="+47 22334455", type=T.WORK),
            Phone(number="412 34 567", type=T.MOBILE),
            Phone(number="22334455", type=T.OTHER),
            Phone(number="+46 70 123 45 67", type=T.MOBILE),
        ),
        notes="Linje 1\r\nLinje 2\rLinje 3\n\tinnrykk <b>&amp;</b> ]]> «sitat» 😀",
    ),
    "department": rec(
        kind=ContactKind.DEPARTMENT,
        given_name="ignored by XML",
        display_name="Resepsjonen ÆØÅ",
        department="Drift",
        phones=(Phone(number="22 99 00 00", type=T.WORK),),
    ),
    "nameless department": rec(kind=ContactKind.DEPARTMENT, department="Lager"),
    "person with only a display name": rec(display_name="Bare visningsnavn"),
    "blank and odd values": rec(
        given_name="  Kari  ",
        family_name="Nordmann\u030a",  # a combining ring: kept as entered, never normalised
        emails=("   ", "", "kari@example.no"),
        phones=(
            Phone(number="   ", type=T.WORK),
            Phone(number=" 22 33 44 55 ", type=T.WORK, e164="+4799999999"),
            Phone(number="ring sentralbordet", type=T.MOBILE),
        ),
    ),
    "only mobiles": rec(
        given_name="Per",
        phones=(
            Phone(number="900 00 001", type=T.MOBILE),
            Phone(number="900 00 002", type=T.MOBILE),
        ),
    ),
    "fax only": rec(given_name="Faks", phones=(Phone(number="22 00 00 01", type=T.FAX),)),
    "control characters": rec(
        given_name="Nul\x00l",
        notes="bell\x07 vt\x0b ff\x0c esc\x1b end\ufffe",
        emails=("\x01",),
    ),
    "empty": rec(),
    "long notes": rec(given_name="Lang", notes="æøå <&> " * 800),
}


def on_fields(view: ZissonApiView, record: ContactRecord) -> dict[str, object]:
    return {name: value for name, value in record.values().items() if name in view.fields}


@pytest.mark.parametrize("api", ["json", "xml"])
async def test_create_then_read_gives_the_projection(
    zisson_connect: ZissonConnect, api: str
) -> None:
    bound = zisson_connect(api)  # type: ignore[arg-type]
    view = bound.view
    ops = [
        Operation(
            op_id=f"create-{n}",
            kind=OpKind.CREATE,
            system="zisson",
            link_id=name,
            values=record.values(),
        )
        for n, (name, record) in enumerate(TRICKY.items())
    ]

    results = await view.apply(bound.customer, ops)
    read = {r.external_id: r for r in (await view.read(bound.customer)).records}

    for (name, record), result in zip(TRICKY.items(), results, strict=True):
        assert result.status is OpStatus.APPLIED, name
        assert result.external_id is not None and result.record is not None
        expected = on_fields(view, view.project(record))
        assert on_fields(view, read[result.external_id]) == expected, name
        assert on_fields(view, result.record) == expected, name
        assert view.project(view.project(record)) == view.project(record), name


@pytest.mark.parametrize("api", ["json", "xml"])
async def test_update_then_read_gives_the_projection(
    zisson_connect: ZissonConnect, api: str
) -> None:
    bound = zisson_connect(api)  # type: ignore[arg-type]
    view = bound.view
    ids = {
        name: bound.seed(
            {
                "firstName": "Gammel",
                "lastName": "Verdi",
                "displayName": "Gammel",
                "emails": ["gammel@example.no", "to@example.no"],
                "phoneNumbers": [{"number": "99999999", "type": "mobile"}],
                "comments": "før",
            }
        )
        for name in TRICKY
    }
    ops = [
        Operation(
            op_id=f"update-{name}",
            kind=OpKind.UPDATE,
            system="zisson",
            link_id=name,
            external_id=ids[name],
            values=record.values(),
        )
        for name, record in TRICKY.items()
    ]

    results = await view.apply(bound.customer, ops)
    read = {r.external_id: r for r in (await view.read(bound.customer)).records}

    for name, record in TRICKY.items():
        assert on_fields(view, read[ids[name]]) == on_fields(view, view.project(record)), name
    assert all(r.status is OpStatus.APPLIED for r in results)


@pytest.mark.parametrize("api", ["json", "xml"])
async def test_a_read_record_is_its_own_projection(zisson_connect: ZissonConnect, api: str) -> None:
    bound = zisson_connect(api)  # type: ignore[arg-type]
    bound.seed(
        {
            "type": "department",
            "firstName": "skjult",
            "displayName": "Avdeling",
            "emails": ["a@x.no", " ", "b@x.no"],
            "phoneNumbers": [
                {"number": "22 33 44 55", "type": "fax"},
                {"number": "", "type": "work"},
                {"number": "412 34 567", "type": "gsm"},
            ],
        }
    )
    (record,) = (await bound.view.read(bound.customer)).records
    assert bound.view.project(record) == record


async def test_connector_and_views_satisfy_the_protocol(zisson_json: ZissonBound) -> None:
    assert isinstance(zisson_json.connector, Connector)
    assert isinstance(zisson_json.view, Connector)
    assert zisson_json.view.capabilities == frozenset({Capability.DIRECTORY})
    assert zisson_json.connector.system == zisson_json.view.system == "zisson"


async def test_the_unbound_connector_projects_like_the_json_api(zisson_json: ZissonBound) -> None:
    record = TRICKY["everything"]
    assert zisson_json.connector.project(record) == zisson_json.view.project(record)
    assert zisson_json.connector.fields == zisson_json.view.fields


async def test_a_view_refuses_a_customer_on_the_other_api(zisson_connect: ZissonConnect) -> None:
    json_bound = zisson_connect("json")
    xml_bound = zisson_connect("xml", connector=json_bound.connector)
    with pytest.raises(FatalError, match="uses the xml API"):
        await json_bound.view.read(xml_bound.customer)
    assert json_bound.connector.for_customer(xml_bound.customer).api == "xml"
