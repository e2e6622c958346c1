"""FirestoreConnector against Google's Firestore emulator."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.api_core import exceptions as google_errors
from google.cloud import firestore
from google.cloud.firestore_v1.bulk_batch import BulkWriteBatch

from connectors.firestore import FirestoreConnector, contact_document_id, format_version
from connectors.firestore.settings import FirestoreBinding
from daemon.config import CustomerConfig
from daemon.domain import (
    ContactKind,
    ContactRecord,
    Customer,
    ItemRef,
    Operation,
    OpKind,
    OpResult,
    OpStatus,
    Phone,
    PhoneType,
)
from daemon.retention import RetentionService
from daemon.store import Store
from tests.fixtures.firestore import FirestoreEnv

pytestmark = pytest.mark.emulator

CUSTOMER_ID = "kunde-1"
ÅSE: dict[str, Any] = {
    "kind": ContactKind.PERSON,
    "given_name": "Åse Bjørg",
    "family_name": "Ærøy-Østgård",
    "display_name": "ÆØÅ æøå",
    "title": "Daglig leder",
    "department": "Økonomi",
    "emails": ("åse@bær.no", "ase.ostgard@example.no"),
    "phones": (
        Phone(number="22 33 44 55", type=PhoneType.WORK),
        Phone(number="+47 22334455", type=PhoneType.MOBILE),
        Phone(number="0047 22 33 44 55", type=PhoneType.HOME),
    ),
    "notes": "Ring før kl. 16 – spør etter Øyvind.",
}


def create(link_id: str, op_id: str | None = None, **values: Any) -> Operation:
    return Operation(
        op_id=op_id or f"create-{link_id}",
        kind=OpKind.CREATE,
        system="firestore",
        link_id=link_id,
        values=values or {"given_name": "Kari", "family_name": "Nordmann"},
    )


def update(result: OpResult, op_id: str = "update-1", **values: Any) -> Operation:
    return Operation(
        op_id=op_id,
        kind=OpKind.UPDATE,
        system="firestore",
        link_id="L",
        external_id=result.external_id,
        values=values,
        expected_version=result.version,
    )


def delete(external_id: str, version: str | None = None, op_id: str = "delete-1") -> Operation:
    return Operation(
        op_id=op_id,
        kind=OpKind.DELETE,
        system="firestore",
        link_id="L",
        external_id=external_id,
        expected_version=version,
    )


def contacts(client: firestore.Client) -> Any:
    return client.collection("customers").document(CUSTOMER_ID).collection("contacts")


@pytest.fixture
def customer(firestore_env: FirestoreEnv) -> Customer:
    return firestore_env.customer(CUSTOMER_ID)


async def test_a_contact_round_trips_exactly_with_norwegian_letters_and_phone_formats(
    firestore_connector: FirestoreConnector, firestore_client: firestore.Client, customer: Customer
) -> None:
    (created,) = await firestore_connector.apply(customer, [create("L1", **ÅSE)])

    assert created.status is OpStatus.APPLIED
    assert created.external_id == contact_document_id("L1")
    stored = contacts(firestore_client).document(created.external_id).get()
    assert stored.to_dict() == {
        "kind": "person",
        "given_name": "Åse Bjørg",
        "family_name": "Ærøy-Østgård",
        "display_name": "ÆØÅ æøå",
        "title": "Daglig leder",
        "department": "Økonomi",
        "emails": ["åse@bær.no", "ase.ostgard@example.no"],
        "phones": [
            {"number": "22 33 44 55", "type": "work"},
            {"number": "+47 22334455", "type": "mobile"},
            {"number": "0047 22 33 44 55", "type": "home"},
        ],
        "notes": "Ring før kl. 16 – spør etter Øyvind.",
    }
    assert created.version == format_version(stored.update_time)

    read = await firestore_connector.read(customer)

    assert read.rejected == ()
    (record,) = read.records
    assert record == created.record
    assert record.version == created.version
    assert {name: getattr(record, name) for name in ÅSE if name != "phones"} == {
        name: value for name, value in ÅSE.items() if name != "phones"
    }
    assert [(p.number, p.type, p.e164) for p in record.phones] == [
        ("22 33 44 55", PhoneType.WORK, "+4722334455"),
        ("+47 22334455", PhoneType.MOBILE, "+4722334455"),
        ("0047 22 33 44 55", PhoneType.HOME, "+4722334455"),
    ]


async def test_malformed_documents_are_rejected_and_the_rest_is_read(
    firestore_connector: FirestoreConnector, firestore_client: firestore.Client, customer: Customer
) -> None:
    collection = contacts(firestore_client)
    collection.document("good").set({"given_name": "Kari", "phones": [{"number": "ukjent"}]})
    collection.document("bad-emails").set({"given_name": "Ola", "emails": "ola@nordmann.no"})
    collection.document("bad-kind").set({"given_name": "Per", "kind": "robot"})
    collection.document("bad-phone").set({"phones": [{"type": "work"}]})

    read = await firestore_connector.read(customer)

    assert [record.external_id for record in read.records] == ["good"]
    assert read.records[0].phones[0].e164 is None
    reasons = {item.external_id: item.reason for item in read.rejected}
    assert reasons == {
        "bad-emails": "emails: expected a list of strings, got str",
        "bad-kind": "kind: unknown kind (expected one of department, person)",
        "bad-phone": "phones[0].number: missing",
    }
    raw = {item.external_id: item.raw for item in read.rejected}
    assert "ola@nordmann.no" in raw["bad-emails"]


async def test_a_replayed_create_makes_no_duplicate_and_reports_the_existing_document(
    firestore_connector: FirestoreConnector, firestore_client: firestore.Client, customer: Customer
) -> None:
    (first,) = await firestore_connector.apply(customer, [create("L1")])
    # The rerun after a crash: same op, and a CREATE of other values for the same link.
    (again,) = await firestore_connector.apply(customer, [create("L1")])
    (other,) = await firestore_connector.apply(customer, [create("L1", given_name="Ola")])

    assert first.status is again.status is other.status is OpStatus.APPLIED
    assert first.external_id == again.external_id == other.external_id
    assert first.version == again.version == other.version
    assert again.record is not None and again.record.given_name == "Kari"
    assert len(list(contacts(firestore_client).stream())) == 1


async def test_an_update_with_a_stale_version_conflicts_and_changes_nothing(
    firestore_connector: FirestoreConnector, firestore_client: firestore.Client, customer: Customer
) -> None:
    (created,) = await firestore_connector.apply(customer, [create("L1")])
    (changed,) = await firestore_connector.apply(customer, [update(created, family_name="Ødegård")])
    assert changed.status is OpStatus.APPLIED and changed.version != created.version
    before = contacts(firestore_client).document(created.external_id).get()

    (stale,) = await firestore_connector.apply(
        customer, [update(created, op_id="update-2", family_name="Hansen")]
    )

    assert stale.status is OpStatus.CONFLICT
    assert stale.version == changed.version  # what the document holds now
    assert stale.error is not None and "Hansen" not in stale.error
    after = contacts(firestore_client).document(created.external_id).get()
    assert after.to_dict() == before.to_dict()
    assert after.update_time == before.update_time


async def test_a_replayed_update_is_applied_once(
    firestore_connector: FirestoreConnector, customer: Customer
) -> None:
    (created,) = await firestore_connector.apply(customer, [create("L1")])
    operation = update(created, notes="Æ", emails=["kari@bær.no"])

    (first,) = await firestore_connector.apply(customer, [operation])
    (again,) = await firestore_connector.apply(customer, [operation])

    assert first.status is again.status is OpStatus.APPLIED
    assert again.version == first.version


async def test_an_update_writes_only_its_fields_and_leaves_foreign_fields_alone(
    firestore_connector: FirestoreConnector, firestore_client: firestore.Client, customer: Customer
) -> None:
    (created,) = await firestore_connector.apply(customer, [create("L1")])
    reference = contacts(firestore_client).document(created.external_id)
    reference.update({"created_by": "web-ui"})
    current = await firestore_connector.read(customer)

    (result,) = await firestore_connector.apply(
        customer,
        [
            update(
                OpResult(
                    op_id="x",
                    status=OpStatus.APPLIED,
                    external_id=created.external_id,
                    version=current.records[0].version,
                ),
                title="Sjef",
            )
        ],
    )

    assert result.status is OpStatus.APPLIED
    assert reference.get().to_dict() == {
        "kind": "person",
        "given_name": "Kari",
        "family_name": "Nordmann",
        "display_name": "",
        "title": "Sjef",
        "department": "",
        "emails": [],
        "phones": [],
        "notes": "",
        "created_by": "web-ui",
    }


async def test_an_update_of_a_missing_document_is_not_found(
    firestore_connector: FirestoreConnector, customer: Customer
) -> None:
    gone = OpResult(op_id="x", status=OpStatus.APPLIED, external_id="gone", version=None)
    with_version = OpResult(
        op_id="y",
        status=OpStatus.APPLIED,
        external_id="gone",
        version="2025-01-01T00:00:00.000000000Z",
    )

    results = await firestore_connector.apply(
        customer, [update(gone, notes="x"), update(with_version, op_id="u2", notes="x")]
    )

    assert [result.status for result in results] == [OpStatus.NOT_FOUND, OpStatus.NOT_FOUND]


async def test_deletes_honour_the_precondition_and_a_missing_document_counts_as_deleted(
    firestore_connector: FirestoreConnector, firestore_client: firestore.Client, customer: Customer
) -> None:
    (created,) = await firestore_connector.apply(customer, [create("L1")])
    assert created.external_id is not None and created.version is not None
    stale = "2020-01-01T00:00:00.000000000Z"

    results = await firestore_connector.apply(
        customer,
        [
            delete("never-was", op_id="d1"),
            delete("never-was", version=stale, op_id="d2"),
            delete(created.external_id, version=stale, op_id="d3"),
        ],
    )

    assert [result.status for result in results] == [
        OpStatus.APPLIED,
        OpStatus.APPLIED,
        OpStatus.CONFLICT,
    ]
    assert contacts(firestore_client).document(created.external_id).get().exists

    (deleted,) = await firestore_connector.apply(
        customer, [delete(created.external_id, version=created.version, op_id="d4")]
    )
    (replayed,) = await firestore_connector.apply(
        customer, [delete(created.external_id, version=created.version, op_id="d4")]
    )

    assert deleted.status is replayed.status is OpStatus.APPLIED
    assert not contacts(firestore_client).document(created.external_id).get().exists


async def test_a_batch_of_200_operations_goes_through_the_bulk_writer_with_results_in_order(
    firestore_connector: FirestoreConnector, firestore_client: firestore.Client, customer: Customer
) -> None:
    existing = await firestore_connector.apply(customer, [create(f"E{n}") for n in range(20)])
    fresh, stale_ones, doomed = existing[:8], existing[8:12], existing[12:20]
    stale = "2020-01-01T00:00:00.000000000Z"
    ops: list[Operation] = [create(f"N{n}", given_name=f"Ny {n}") for n in range(150)]
    ops += [update(r, op_id=f"u{n}", title="Sjef") for n, r in enumerate(fresh)]
    ops += [
        update(
            OpResult(op_id="", status=OpStatus.APPLIED, external_id=r.external_id, version=stale),
            op_id=f"s{n}",
            title="Nei",
        )
        for n, r in enumerate(stale_ones)
    ]
    ops += [delete(r.external_id or "", r.version, op_id=f"d{n}") for n, r in enumerate(doomed)]
    ops += [delete(f"missing-{n}", op_id=f"m{n}") for n in range(10)]
    ops += [create(f"N{n}", op_id=f"replay-{n}") for n in range(10)]  # replays, same batch
    ops += [update(OpResult(op_id="", status=OpStatus.APPLIED, external_id=None), op_id="bad")]
    # Two writes to one document: the second must see the first.
    ops += [update(fresh[0], op_id="twice", notes="n")]
    assert len(ops) == 192
    ops += [create(f"X{n}") for n in range(8)]
    requests_before = firestore_connector.requests

    results = await firestore_connector.apply(customer, ops)

    assert [result.op_id for result in results] == [op.op_id for op in ops]
    statuses = [result.status for result in results]
    assert statuses[:150] == [OpStatus.APPLIED] * 150
    assert statuses[150:158] == [OpStatus.APPLIED] * 8
    assert statuses[158:162] == [OpStatus.CONFLICT] * 4
    assert statuses[162:180] == [OpStatus.APPLIED] * 18
    assert statuses[180:190] == [OpStatus.APPLIED] * 10
    assert statuses[190] is OpStatus.FAILED
    # The first update to fresh[0] moved its version on, so this one's precondition fails.
    assert statuses[191] is OpStatus.CONFLICT
    assert statuses[192:] == [OpStatus.APPLIED] * 8
    for op, result in zip(ops[:150], results[:150], strict=True):
        assert result.external_id == contact_document_id(op.link_id)
        assert result.version is not None and result.record is not None
    for n in range(10):
        assert results[180 + n].external_id == results[n].external_id
        assert results[180 + n].version == results[n].version

    stored = {snapshot.id: snapshot.to_dict() for snapshot in contacts(firestore_client).stream()}
    assert len(stored) == 20 - 8 + 150 + 8
    assert all(stored[r.external_id or ""]["title"] == "Sjef" for r in fresh)
    assert all(stored[r.external_id or ""]["title"] == "" for r in stale_ones)
    assert not any(r.external_id in stored for r in doomed)
    # BatchWrite RPCs of 20 plus the read-backs, not one RPC per operation.
    assert firestore_connector.requests - requests_before < 40


async def test_5000_seeded_contacts_are_read_back(
    firestore_connector: FirestoreConnector, customer: Customer
) -> None:
    records = [
        ContactRecord(
            system="firestore",
            external_id=f"seed-{n:05d}",
            given_name=f"Bjørn {n}",
            family_name="Ødegård",
            emails=(f"bjorn.{n}@example.no",),
            phones=(Phone(number=f"9{n:07d}", type=PhoneType.MOBILE),),
        )
        for n in range(5000)
    ]
    started = time.monotonic()
    stored = await firestore_connector.put_contacts(customer, records)
    seeded = time.monotonic() - started
    requests = firestore_connector.requests

    started = time.monotonic()
    read = await firestore_connector.read(customer)
    took = time.monotonic() - started

    assert len(stored) == 5000 and all(record.version for record in stored)
    assert read.rejected == ()
    assert len(read.records) == 5000
    by_id = {record.external_id: record for record in read.records}
    assert by_id["seed-04711"] == stored[4711]
    # Pages of page_size, each a RunQuery of its own; the last (empty) one ends the read.
    assert firestore_connector.requests == requests + 5000 // firestore_connector.page_size + 1
    print(f"\nfirestore: seeded 5000 contacts in {seeded:.2f} s, read them in {took:.2f} s")
    assert seeded < 30 and took < 30


async def test_put_contacts_gives_records_without_an_id_a_new_one(
    firestore_connector: FirestoreConnector, customer: Customer
) -> None:
    stored = await firestore_connector.put_contacts(
        customer, [ContactRecord(system="firestore", external_id="", given_name="Åse")] * 2
    )

    assert len({record.external_id for record in stored}) == 2
    assert len((await firestore_connector.read(customer)).records) == 2


async def test_the_card_is_read_and_written_keeping_fields_it_does_not_name(
    firestore_connector: FirestoreConnector, firestore_client: firestore.Client, customer: Customer
) -> None:
    assert await firestore_connector.read_card(customer) is None

    version = await firestore_connector.write_card(
        customer,
        {
            "name": "Bær & Ål AS",
            "instructions": "Sett over til sentralbord.",
            "domains": ["bær.no"],
        },
    )
    firestore_client.collection("customers").document(CUSTOMER_ID).update({"priority": 1})
    await firestore_connector.write_card(customer, {"domains": ["bær.no", "baer.no"]})

    assert version.endswith("Z")
    assert await firestore_connector.read_card(customer) == {
        "name": "Bær & Ål AS",
        "instructions": "Sett over til sentralbord.",
        "domains": ["bær.no", "baer.no"],
        "priority": 1,
    }
    with pytest.raises(ValueError, match="colour: not a card field"):
        await firestore_connector.write_card(customer, {"colour": "blå"})


async def test_a_no_change_read_is_one_request(
    firestore_connector: FirestoreConnector, customer: Customer
) -> None:
    await firestore_connector.apply(customer, [create(f"L{n}") for n in range(3)])
    before = firestore_connector.requests

    await firestore_connector.read(customer)

    assert firestore_connector.requests == before + 1


async def test_customers_do_not_see_each_others_contacts(
    firestore_connector: FirestoreConnector, firestore_env: FirestoreEnv, customer: Customer
) -> None:
    other = firestore_env.customer("kunde-2")
    await firestore_connector.apply(customer, [create("L1")])

    assert (await firestore_connector.read(other)).records == ()


async def test_a_connector_is_usable_again_after_aclose(
    firestore_env: FirestoreEnv, customer: Customer
) -> None:
    connector = FirestoreConnector(firestore_env.settings())
    await connector.apply(customer, [create("L1")])
    await connector.aclose()

    assert len((await connector.read(customer)).records) == 1
    await connector.aclose()


async def test_a_bulk_batch_lost_to_a_transient_error_is_retried_by_the_bulk_writer(
    firestore_connector: FirestoreConnector,
    firestore_client: firestore.Client,
    customer: Customer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    commit = BulkWriteBatch.commit
    failures = iter([True])  # the first BatchWrite RPC fails, the rest go through

    def flaky(self: BulkWriteBatch, *args: Any, **kwargs: Any) -> Any:
        if next(failures, False):
            raise google_errors.ServiceUnavailable("connection reset")
        return commit(self, *args, **kwargs)

    monkeypatch.setattr(BulkWriteBatch, "commit", flaky)
    ops = [create(f"L{n}") for n in range(30)]

    results = await firestore_connector.apply(customer, ops)

    assert [result.status for result in results] == [OpStatus.APPLIED] * 30
    assert firestore_connector.requests == 3  # two batches, one of them twice
    assert len(list(contacts(firestore_client).stream())) == 30


async def test_a_write_the_database_refuses_fails_alone_in_a_bulk(
    firestore_connector: FirestoreConnector, customer: Customer
) -> None:
    ops = [create(f"L{n}") for n in range(25)]
    ops[7] = create("huge", notes="æ" * 600_000)  # 1.2 MB: over Firestore's 1 MiB limit

    results = await firestore_connector.apply(customer, ops)

    assert results[7].status is OpStatus.FAILED
    assert results[7].error == "INVALID_ARGUMENT"
    assert [r.status for n, r in enumerate(results) if n != 7] == [OpStatus.APPLIED] * 24


async def test_retention_deletes_exactly_the_subcollection_documents_past_their_rule(
    firestore_connector: FirestoreConnector,
    firestore_client: firestore.Client,
    firestore_env: FirestoreEnv,
    store: Store,
) -> None:
    binding = FirestoreBinding(customer_id=CUSTOMER_ID, retention_days={"notes": 90, "calls": 30})
    card = firestore_client.collection("customers").document(CUSTOMER_ID)
    for i in range(3):
        card.collection("notes").document(f"n{i}").set({"text": "Ring Åse tilbake"})
        card.collection("calls").document(f"c{i}").set({"from": "+47 22 33 44 55"})
        card.collection("archive").document(f"a{i}").set({"text": "no rule: kept"})
    await firestore_connector.put_contacts(
        firestore_env.customer(CUSTOMER_ID), [ContactRecord(system="firestore", external_id="")]
    )
    config = CustomerConfig(id=CUSTOMER_ID, name="Kunde 1", firestore=binding)
    customer = config.to_customer()
    # Written just now: 60 days on, only the 30-day rule has run out.
    later = datetime.now(UTC) + timedelta(days=60)
    scan = await firestore_connector.expired(customer, later)
    assert sorted(ref.id for ref in scan.refs) == ["calls/c0", "calls/c1", "calls/c2"]
    assert (await firestore_connector.expired(customer, datetime.now(UTC))).refs == ()

    foreign = ItemRef(system="firestore", kind="document", id="archive/a0", scope=CUSTOMER_ID)
    assert await firestore_connector.erase(customer, [foreign]) == [(foreign, OpStatus.FAILED)]

    # Through the retention service, as the schedule runs it (100 days on: both rules).
    service = RetentionService(store, {"firestore": firestore_connector})
    summary = await service.run(config, trigger="test", now=later + timedelta(days=40))
    assert summary == {"firestore": {"expired": 6, "results": {"applied": 6}}}, summary
    [run] = store.list_runs(customer_id=CUSTOMER_ID)
    assert (run.kind, run.status) == ("retention", "completed")
    assert [d.id for d in card.collection("notes").stream()] == []
    assert [d.id for d in card.collection("calls").stream()] == []
    assert sorted(d.id for d in card.collection("archive").stream()) == ["a0", "a1", "a2"]
    assert len(list(contacts(firestore_client).stream())) == 1  # the directory untouched


def test_a_retention_rule_on_the_synced_contacts_is_refused() -> None:
    with pytest.raises(ValueError, match="'contacts' is the synced directory"):
        FirestoreBinding(customer_id=CUSTOMER_ID, retention_days={"contacts": 30})
    with pytest.raises(ValueError, match="days must be at least 1"):
        FirestoreBinding(customer_id=CUSTOMER_ID, retention_days={"notes": 0})
