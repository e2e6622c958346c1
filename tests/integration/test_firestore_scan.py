"""A subcollection of any size is read under transient errors: 6,000 documents, streams
dropped part-way and pages timing out, injected on the gRPC channel Google's client uses
(test_firestore_faults.py). Both readers go through it: the sync's read of the contacts
and retention's scan of a subcollection of the card."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.cloud import firestore

from connectors.firestore import FirestoreBinding, FirestoreConnector
from daemon.config import CustomerConfig
from daemon.domain import ContactRecord, Phone, PhoneType
from daemon.ledger import Ledger, Signer
from daemon.retention import RetentionService
from daemon.store import Store
from tests.fixtures.firestore import FirestoreEnv
from tests.integration.test_firestore_faults import GrpcFaults, faults

pytestmark = [pytest.mark.emulator, pytest.mark.slow]
__all__ = ["faults"]  # the fixture, used by name below

CUSTOMER_ID = "kunde-1"
DOCUMENTS = 6000


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    """One store backend is enough here: what is tested is reading Firestore."""
    store = Store.open(f"sqlite:///{tmp_path / 'store.db'}", master_key=os.urandom(32))
    yield store
    store.close()


def break_pages(faults: GrpcFaults) -> None:
    """Streams dropped part-way and pages that time out, spread over the read."""
    faults.fail("RunQuery", after=300)  # the first page breaks after 300 documents
    faults.fail("RunQuery", times=2, after=999, code=grpc.StatusCode.DEADLINE_EXCEEDED)
    faults.fail("RunQuery", skip=2, after=0, code=grpc.StatusCode.UNAVAILABLE)
    faults.fail("RunQuery", skip=1, after=10, code=grpc.StatusCode.INTERNAL)


async def test_a_6000_contact_read_survives_dropped_streams_and_slow_pages(
    firestore_connector: FirestoreConnector, firestore_env: FirestoreEnv, faults: GrpcFaults
) -> None:
    customer = firestore_env.customer(CUSTOMER_ID)
    records = [
        ContactRecord(
            system="firestore",
            external_id=f"k{n:05d}",
            given_name=f"Bjørn {n}",
            family_name="Ødegård",
            phones=(Phone(number=f"9{n:07d}", type=PhoneType.MOBILE),),
        )
        for n in range(DOCUMENTS)
    ]
    await firestore_connector.put_contacts(customer, records)
    break_pages(faults)

    read = await firestore_connector.read(customer)

    assert faults.injected["RunQuery"] == 5
    assert firestore_connector.retries == 5
    ids = [record.external_id for record in read.records]
    assert len(ids) == DOCUMENTS and set(ids) == {r.external_id for r in records}
    assert read.rejected == ()


async def test_a_6000_document_subcollection_is_scanned_and_deleted_under_errors(
    firestore_connector: FirestoreConnector,
    firestore_client: firestore.Client,
    faults: GrpcFaults,
    sqlite_store: Store,
) -> None:
    card = firestore_client.collection("customers").document(CUSTOMER_ID)
    writer = firestore_client.bulk_writer()
    for n in range(DOCUMENTS):
        writer.set(card.collection("notes").document(f"n{n:05d}"), {"text": f"Beskjed {n}"})
    writer.set(card.collection("calls").document("kept"), {"text": "no rule"})
    writer.close()
    break_pages(faults)
    # And batches of deletes lost to transient errors: the BulkWriter sends them again.
    faults.fail("BatchWrite", skip=40, times=3)
    config = CustomerConfig(
        id=CUSTOMER_ID,
        name="Kunde 1",
        firestore=FirestoreBinding(customer_id=CUSTOMER_ID, retention_days={"notes": 30}),
    )
    ledger = Ledger(sqlite_store, Signer.generate())
    service = RetentionService(sqlite_store, {"firestore": firestore_connector}, ledger=ledger)

    summary = await service.run(config, trigger="test", now=datetime.now(UTC) + timedelta(days=31))

    assert summary == {"firestore": {"expired": DOCUMENTS, "results": {"applied": DOCUMENTS}}}
    assert faults.injected["RunQuery"] == 5 and faults.injected["BatchWrite"] == 3
    assert list(card.collection("notes").limit(1).stream()) == []
    assert [d.id for d in card.collection("calls").stream()] == ["kept"]
    [run] = sqlite_store.list_runs(customer_id=CUSTOMER_ID)
    assert run.status == "completed"
    deleted = [
        e.payload["results"].get("applied", 0)
        for e in sqlite_store.ledger_entries()
        if e.kind == "retention.deleted" and e.customer_id == CUSTOMER_ID
    ]
    assert sum(deleted) == DOCUMENTS and len(deleted) == DOCUMENTS // service.chunk_size
