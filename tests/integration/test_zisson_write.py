"""Writing to Zisson against the simulator: the assumed write API and manual mode."""

from __future__ import annotations

from typing import Any

import pytest
from structlog.testing import capture_logs

from connectors.base import AuthError
from daemon.domain import (
    ContactKind,
    ContactRecord,
    Operation,
    OpKind,
    OpStatus,
    Phone,
    PhoneType,
)
from tests.fixtures.zisson import ZissonBound, ZissonConnect

KARI: dict[str, Any] = {
    "kind": ContactKind.PERSON,
    "given_name": "Kari",
    "family_name": "Ødegård",
    "title": "Daglig leder",
    "emails": ("kari@ødegård.no", "kari.privat@example.no"),
    "phones": (
        Phone(number="22 33 44 55", type=PhoneType.WORK),
        Phone(number="412 34 567", type=PhoneType.MOBILE),
    ),
    "notes": "Foretrekker e-post",
}


def op(kind: OpKind, link: str = "link-1", **fields: Any) -> Operation:
    op_id = Operation.make_id(kind, link, repr(sorted(fields.items())))
    return Operation(op_id=op_id, kind=kind, system="zisson", link_id=link, **fields)


async def test_create_update_delete_through_the_json_api(zisson_json: ZissonBound) -> None:
    connector, customer = zisson_json.connector, zisson_json.customer

    (created,) = await connector.apply(customer, [op(OpKind.CREATE, values=KARI)])

    assert created.status is OpStatus.APPLIED and created.version == "1"
    assert created.external_id is not None and created.record is not None
    assert created.record.emails == KARI["emails"]
    assert created.record.phones[0].e164 == "+4722334455"
    (stored,) = zisson_json.users()
    assert stored["id"] == created.external_id
    assert stored["firstName"] == "Kari" and stored["lastName"] == "Ødegård"
    assert stored["phoneNumbers"] == [
        {"number": "22 33 44 55", "type": "work"},
        {"number": "412 34 567", "type": "mobile"},
    ]

    (updated,) = await connector.apply(
        customer,
        [
            op(
                OpKind.UPDATE,
                external_id=created.external_id,
                expected_version="1",
                values={"title": "Styreleder", "notes": ""},
            )
        ],
    )

    assert updated.status is OpStatus.APPLIED and updated.version == "2"
    assert updated.record is not None and updated.record.title == "Styreleder"
    assert zisson_json.users()[0]["comments"] == ""
    assert zisson_json.users()[0]["emails"] == list(KARI["emails"])  # untouched

    (deleted,) = await connector.apply(
        customer, [op(OpKind.DELETE, external_id=created.external_id, expected_version="2")]
    )

    assert deleted.status is OpStatus.APPLIED and deleted.external_id == created.external_id
    assert zisson_json.users() == []
    counters = zisson_json.sim.counters
    assert (counters["creates"], counters["updates"], counters["deletes"]) == (1, 1, 1)


async def test_create_replayed_with_the_same_op_id_makes_no_duplicate(
    zisson_json: ZissonBound,
) -> None:
    create = op(OpKind.CREATE, values=KARI)

    (first,) = await zisson_json.connector.apply(zisson_json.customer, [create])
    (again,) = await zisson_json.connector.apply(zisson_json.customer, [create])

    assert again.status is OpStatus.APPLIED
    assert again.external_id == first.external_id
    assert len(zisson_json.users()) == 1
    assert zisson_json.sim.counters["creates"] == 1
    assert zisson_json.sim.counters["replays"] == 1


async def test_create_whose_answer_was_lost_is_retried_without_a_duplicate(
    zisson_json: ZissonBound,
) -> None:
    await zisson_json.connector.read(zisson_json.customer)  # the token exchange is not the drop
    zisson_json.sim.fail_next(1, status="drop")  # processed, then the connection is closed

    (result,) = await zisson_json.connector.apply(
        zisson_json.customer, [op(OpKind.CREATE, values=KARI)]
    )

    assert result.status is OpStatus.APPLIED
    assert len(zisson_json.users()) == 1
    counters = zisson_json.sim.counters
    assert (counters["drops"], counters["creates"], counters["replays"]) == (1, 1, 1)


async def test_update_with_a_stale_version_is_a_conflict(zisson_json: ZissonBound) -> None:
    user_id = zisson_json.seed({"firstName": "Kari"})
    zisson_json.sim.patch_user(zisson_json.guid, user_id, {"title": "Endret i Zisson"})

    (result,) = await zisson_json.connector.apply(
        zisson_json.customer,
        [op(OpKind.UPDATE, external_id=user_id, expected_version="1", values={"title": "Ny"})],
    )

    assert result.status is OpStatus.CONFLICT
    assert result.error is not None and "412" in result.error
    assert zisson_json.sim.user(zisson_json.guid, user_id)["title"] == "Endret i Zisson"


async def test_delete_with_a_stale_version_is_a_conflict(zisson_json: ZissonBound) -> None:
    user_id = zisson_json.seed({"firstName": "Kari"})
    zisson_json.sim.patch_user(zisson_json.guid, user_id, {"title": "Endret"})

    (result,) = await zisson_json.connector.apply(
        zisson_json.customer, [op(OpKind.DELETE, external_id=user_id, expected_version="1")]
    )

    assert result.status is OpStatus.CONFLICT
    assert len(zisson_json.users()) == 1


async def test_delete_of_a_missing_user_counts_as_applied(zisson_json: ZissonBound) -> None:
    (result,) = await zisson_json.connector.apply(
        zisson_json.customer, [op(OpKind.DELETE, external_id="finnes-ikke")]
    )
    assert result.status is OpStatus.APPLIED
    assert zisson_json.sim.counters["deletes"] == 0


async def test_update_of_a_missing_user_is_not_found(zisson_json: ZissonBound) -> None:
    (result,) = await zisson_json.connector.apply(
        zisson_json.customer,
        [op(OpKind.UPDATE, external_id="finnes-ikke", values={"title": "x"})],
    )
    assert result.status is OpStatus.NOT_FOUND


async def test_one_bad_op_fails_alone(zisson_json: ZissonBound) -> None:
    ops = [
        op(OpKind.CREATE, "a", values={"given_name": "Åse"}),
        op(OpKind.CREATE, "b", values={"given_name": 42}),
        op(OpKind.CREATE, "c", values={"shoe_size": "44"}),
        op(OpKind.UPDATE, "d", values={"title": "x"}),  # no external_id
        op(OpKind.CREATE, "e", values={"given_name": "Per"}),
        Operation(op_id="ø-1", kind=OpKind.CREATE, system="zisson", link_id="f"),
        Operation(op_id="o-2", kind=OpKind.CREATE, system="outlook", link_id="g"),
    ]

    with capture_logs() as logged:
        results = await zisson_json.connector.apply(zisson_json.customer, ops)

    # One line for the batch, with its counts (a line an op flooded the log and held the
    # event loop on a large first sync); each op at debug.
    [batch] = [e for e in logged if e["event"] == "applied"]
    assert batch["log_level"] == "info" and batch["ops"] == 7
    assert batch["results"] == {"create.applied": 2, "create.failed": 4, "update.failed": 1}
    per_op = [e for e in logged if e["event"] == "applied_op"]
    assert [e["op_id"] for e in per_op] == [o.op_id for o in ops]
    assert {e["log_level"] for e in per_op} == {"debug"}
    assert [r.status for r in results] == [
        OpStatus.APPLIED,
        OpStatus.FAILED,
        OpStatus.FAILED,
        OpStatus.FAILED,
        OpStatus.APPLIED,
        OpStatus.FAILED,
        OpStatus.FAILED,
    ]
    assert [r.op_id for r in results] == [o.op_id for o in ops]
    assert results[1].error == "given_name: not a string"
    assert results[2].error == "shoe_size: not a sync field"
    assert {u["firstName"] for u in zisson_json.users()} == {"Åse", "Per"}


async def test_ops_on_one_link_run_in_order(zisson_json: ZissonBound) -> None:
    user_id = zisson_json.seed({"firstName": "Kari"})
    ops = [
        op(OpKind.UPDATE, "same", external_id=user_id, values={"title": "Først"}),
        op(OpKind.UPDATE, "same", external_id=user_id, values={"title": "Sist"}),
    ]
    results = await zisson_json.connector.apply(zisson_json.customer, ops)
    assert [r.version for r in results] == ["2", "3"]
    assert zisson_json.sim.user(zisson_json.guid, user_id)["title"] == "Sist"


async def test_xml_customers_write_with_basic_auth_and_only_what_xml_shows(
    zisson_xml: ZissonBound,
) -> None:
    connector, customer = zisson_xml.connector, zisson_xml.customer

    (created,) = await connector.apply(customer, [op(OpKind.CREATE, values=KARI)])

    assert created.status is OpStatus.APPLIED
    (stored,) = zisson_xml.users()
    assert stored["emails"] == ["kari@ødegård.no"]  # nothing the XML API cannot show
    assert created.record is not None
    assert created.record == zisson_xml.view.project(created.record)
    (read,) = (await connector.read(customer)).records
    assert read.values() == created.record.values()
    assert zisson_xml.sim.counters["refreshes"] == 0  # Basic all the way

    (updated,) = await connector.apply(
        customer,
        [
            op(
                OpKind.UPDATE,
                external_id=created.external_id,
                values={"emails": ("ny@ødegård.no", "skjult@example.no"), "title": "Eier"},
            )
        ],
    )

    assert updated.status is OpStatus.APPLIED
    stored = zisson_xml.users()[0]
    assert stored["emails"] == ["ny@ødegård.no"] and stored["title"] == "Eier"
    (read,) = (await connector.read(customer)).records
    assert read.emails == ("ny@ødegård.no",)


async def test_xml_update_keeps_what_the_xml_view_hides(zisson_xml: ZissonBound) -> None:
    user_id = zisson_xml.seed(
        {
            "firstName": "Kari",
            "displayName": "Kari fra Zisson-appen",
            "emails": ["kari@example.no"],
        }
    )
    (result,) = await zisson_xml.connector.apply(
        zisson_xml.customer,
        [op(OpKind.UPDATE, external_id=user_id, values={"title": "Eier", "display_name": "X"})],
    )
    assert result.status is OpStatus.APPLIED
    stored = zisson_xml.sim.user(zisson_xml.guid, user_id)
    assert stored["title"] == "Eier"
    assert stored["displayName"] == "Kari fra Zisson-appen"  # a person's is not in the view


async def test_xml_update_turning_a_person_into_a_department(zisson_xml: ZissonBound) -> None:
    user_id = zisson_xml.seed({"firstName": "Kari", "lastName": "Nordmann"})
    (result,) = await zisson_xml.connector.apply(
        zisson_xml.customer,
        [
            op(
                OpKind.UPDATE,
                external_id=user_id,
                values={"kind": ContactKind.DEPARTMENT, "display_name": "Resepsjonen"},
            )
        ],
    )
    assert result.status is OpStatus.APPLIED and result.record is not None
    (read,) = (await zisson_xml.connector.read(zisson_xml.customer)).records
    assert (read.kind, read.display_name, read.given_name) == (
        ContactKind.DEPARTMENT,
        "Resepsjonen",
        "",
    )
    assert read.values() == result.record.values()


async def test_xml_update_with_nothing_to_change_sends_no_write(zisson_xml: ZissonBound) -> None:
    user_id = zisson_xml.seed({"firstName": "Kari", "displayName": "skjult"})
    (result,) = await zisson_xml.connector.apply(
        zisson_xml.customer,
        [
            op(
                OpKind.UPDATE,
                external_id=user_id,
                values={"given_name": "Kari", "display_name": "y"},
            )
        ],
    )
    assert result.status is OpStatus.APPLIED and result.version == "1"
    assert zisson_xml.sim.counters["updates"] == 0


@pytest.mark.parametrize("api", ["json", "xml"])
async def test_manual_mode_asks_an_operator_and_changes_nothing(
    zisson_connect: ZissonConnect, api: str
) -> None:
    bound = zisson_connect(api, write_mode="manual")  # type: ignore[arg-type]
    existing = bound.seed(
        {
            "firstName": "Per",
            "lastName": "Ås",
            "title": "Regnskap",
            "phoneNumbers": [{"number": "22 33 44 55", "type": "work"}],
        }
    )
    before = bound.users()
    ops = [
        op(OpKind.CREATE, "a", values=KARI),
        op(OpKind.UPDATE, "b", external_id=existing, values={"title": "", "given_name": "Pål"}),
        op(OpKind.DELETE, "c", external_id=existing),
    ]

    results = await bound.connector.apply(bound.customer, ops)

    assert [r.status for r in results] == [OpStatus.MANUAL] * 3
    create, update, delete = (r.instruction or "" for r in results)
    assert "add a new person" in create and "«Kari»" in create and "«Ødegård»" in create
    assert "«22 33 44 55»" in create and "«412 34 567»" in create
    assert "Kunde" in create  # names the customer
    if api == "xml":
        assert "«kari@ødegård.no»" in create and "kari.privat" not in create
        assert "GSM number: «412 34 567»" in create
    else:
        assert "«kari@ødegård.no», «kari.privat@example.no», in this order" in create
    assert f"«Per Ås» (Zisson id {existing})" in update
    assert "set First name to «Pål»" in update and "clear Title" in update
    assert "Last name" not in update  # only what changes
    assert (
        delete.startswith("In Zisson")
        and f"delete the entry «Per Ås» (Zisson id {existing})" in delete
    )
    assert bound.users() == before
    counters = bound.sim.counters
    assert counters["creates"] == counters["updates"] == counters["deletes"] == 0


async def test_manual_mode_without_a_readable_zisson_still_gives_instructions(
    zisson_connect: ZissonConnect,
) -> None:
    bound = zisson_connect("json", write_mode="manual")
    bound.token_file.write_text("rt-dead")
    (result,) = await bound.connector.apply(
        bound.customer, [op(OpKind.DELETE, external_id="abc-123")]
    )
    assert result.status is OpStatus.MANUAL
    assert result.instruction is not None and "Zisson id abc-123" in result.instruction


async def test_auth_failure_during_apply_raises(zisson_json: ZissonBound) -> None:
    zisson_json.token_file.write_text("rt-dead")
    with pytest.raises(AuthError):
        await zisson_json.connector.apply(zisson_json.customer, [op(OpKind.CREATE, values=KARI)])


async def test_op_results_carry_records_in_the_customers_projection(
    zisson_json: ZissonBound,
) -> None:
    (result,) = await zisson_json.connector.apply(
        zisson_json.customer,
        [op(OpKind.CREATE, values={**KARI, "emails": ("a@b.no", "  ")})],
    )
    assert isinstance(result.record, ContactRecord)
    assert result.record.emails == ("a@b.no",)
    assert result.record.system == "zisson" and result.record.external_id == result.external_id
