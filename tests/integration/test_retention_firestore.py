"""Retention of the card's subcollections deletes exactly what the rule says, and proves it:
against Google's Firestore emulator, with failures injected on the client's gRPC channel
(test_firestore_faults.py); what happened is read back with Google's own client.

- a document changed between listing and deleting is kept, and counted as changed;
- what is below an expired document goes with it, at any depth; below a living one it
  stays; below a document that is gone, each document is judged by its own age;
- a run that deleted part of what it found records that part, on the ledger too;
- a run that failed on an error that is no connector's is recorded as failed, with the
  error's kind;
- all of that is written from the service's own thread, none of it on the event loop.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.cloud import firestore

from connectors.base import RetryPolicy
from connectors.firestore import FirestoreBinding, FirestoreConnector
from daemon.config import CustomerConfig
from daemon.domain import OpStatus
from daemon.ledger import Ledger, Signer
from daemon.retention import RetentionService
from daemon.store import Store
from tests.fixtures.firestore import FirestoreEnv
from tests.integration.test_firestore_faults import GrpcFaults, install
from tests.integration.test_sync_loop import statements_on_this_thread

pytestmark = pytest.mark.emulator

CUSTOMER_ID = "kunde-1"
RULES = {"notes": 90}
QUICK = RetryPolicy(attempts=2, max_delay=5.0, base_wait=0.01, max_wait=0.05)


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    store = Store.open(f"sqlite:///{tmp_path / 'store.db'}", master_key=os.urandom(32))
    yield store
    store.close()


@pytest.fixture
def config() -> CustomerConfig:
    return CustomerConfig(
        id=CUSTOMER_ID,
        name="Kunde 1",
        firestore=FirestoreBinding(customer_id=CUSTOMER_ID, retention_days=RULES),
    )


@pytest.fixture
def card(firestore_client: firestore.Client) -> firestore.DocumentReference:
    return firestore_client.collection("customers").document(CUSTOMER_ID)


def cutoff_after_the_old_ones(card: firestore.DocumentReference) -> datetime:
    """The server's clock now: documents written before are older than a 90-day rule at
    the `now` this returns plus 90 days, documents written after are younger."""
    result = card.collection("clock").document("now").set({"t": 1})
    time.sleep(0.01)
    moment: datetime = result.update_time
    return moment + timedelta(days=RULES["notes"])


def paths_below(card: firestore.DocumentReference) -> set[str]:
    prefix = card.path + "/"
    found = set()
    for collection in card.collections():
        for snapshot in collection.recursive().stream():
            found.add(snapshot.reference.path.removeprefix(prefix))
    return found


def ledger_of(store: Store, kind: str) -> list[dict[str, Any]]:
    return [e.payload for e in store.ledger_entries() if e.kind == kind]


async def test_a_note_changed_between_listing_and_deleting_is_kept_and_counted(
    firestore_connector: FirestoreConnector,
    firestore_client: firestore.Client,
    card: firestore.DocumentReference,
    config: CustomerConfig,
    sqlite_store: Store,
) -> None:
    for name in ("old", "edited"):
        card.collection("notes").document(name).set({"text": "Ring tilbake"})
    now = cutoff_after_the_old_ones(card)
    faults = GrpcFaults()
    install(firestore_connector, faults)
    # Someone edits a note after retention listed it, just before the deletes are sent.
    faults.before(
        "BatchWrite",
        lambda: card.collection("notes").document("edited").update({"text": "Viktig!"}),
    )
    ledger = Ledger(sqlite_store, Signer.generate())
    service = RetentionService(sqlite_store, {"firestore": firestore_connector}, ledger=ledger)

    summary = await service.run(config, trigger="test", now=now)

    assert summary == {"firestore": {"expired": 2, "results": {"applied": 1, "conflict": 1}}}
    assert paths_below(card) == {"notes/edited", "clock/now"}
    assert card.collection("notes").document("edited").get().to_dict() == {"text": "Viktig!"}
    [run] = sqlite_store.list_runs(customer_id=CUSTOMER_ID)
    assert run.status == "completed"  # a kept document is no failure
    [deleted] = ledger_of(sqlite_store, "retention.deleted")
    assert deleted["results"] == {"applied": 1, "conflict": 1}


async def test_a_precondition_per_document_at_the_connector(
    firestore_connector: FirestoreConnector,
    card: firestore.DocumentReference,
    config: CustomerConfig,
) -> None:
    for name in ("a", "b"):
        card.collection("notes").document(name).set({"text": "x"})
    now = cutoff_after_the_old_ones(card)
    customer = config.to_customer()
    scan = await firestore_connector.expired(customer, now)
    card.collection("notes").document("a").update({"text": "y"})
    card.collection("notes").document("b").delete()  # gone meanwhile: counts as deleted

    results = await firestore_connector.erase(customer, list(scan.refs))

    assert {ref.id: status for ref, status in results} == {
        "notes/a": OpStatus.CONFLICT,
        "notes/b": OpStatus.APPLIED,
    }
    assert all(ref.version for ref in scan.refs)
    assert card.collection("notes").document("a").get().exists


async def test_what_is_below_an_expired_document_goes_with_it(
    firestore_connector: FirestoreConnector,
    card: firestore.DocumentReference,
    config: CustomerConfig,
    sqlite_store: Store,
) -> None:
    notes = card.collection("notes")
    # Old: an expired note with data below it, at several depths.
    old = notes.document("old")
    old.set({"text": "Beskjed"})
    old.collection("comments").document("c1").set({"text": "ok"})
    old.collection("comments").document("c1").collection("likes").document("l1").set({"n": 1})
    old.collection("attachments").document("a1").set({"name": "vedlegg.pdf"})
    # Old data below a note that was never there (or was deleted without it).
    notes.document("gone").collection("comments").document("x").set({"text": "foreldreløs"})
    # Old data below a note that is changed later: it stays with its living note.
    notes.document("living").collection("comments").document("c2").set({"text": "gammel"})
    now = cutoff_after_the_old_ones(card)
    notes.document("living").set({"text": "endret nylig"})
    notes.document("gone2").collection("comments").document("y").set({"text": "ny"})
    notes.document("fresh").set({"text": "ny"})

    service = RetentionService(sqlite_store, {"firestore": firestore_connector})
    summary = await service.run(config, trigger="test", now=now)

    assert summary == {"firestore": {"expired": 5, "results": {"applied": 5}}}
    assert paths_below(card) == {
        "clock/now",
        "notes/living",
        "notes/living/comments/c2",
        "notes/gone2/comments/y",
        "notes/fresh",
    }


async def test_a_partly_done_run_records_every_deletion_that_landed(
    firestore_env: FirestoreEnv,
    firestore_client: firestore.Client,
    card: firestore.DocumentReference,
    config: CustomerConfig,
    sqlite_store: Store,
) -> None:
    writer = firestore_client.bulk_writer()
    for n in range(520):
        writer.set(card.collection("notes").document(f"n{n:03d}"), {"text": f"Beskjed {n}"})
    writer.close()
    now = cutoff_after_the_old_ones(card)
    connector = FirestoreConnector(firestore_env.settings(), retry_policy=QUICK)
    faults = GrpcFaults()
    install(connector, faults)
    # 26 batches of 20 deletes: the last one sent is refused for good. (Commit: where a
    # batched delete would go instead.)
    faults.fail("BatchWrite", skip=25, times=50, code=grpc.StatusCode.DATA_LOSS)
    faults.fail("Commit", skip=1, times=50, code=grpc.StatusCode.DATA_LOSS)
    ledger = Ledger(sqlite_store, Signer.generate())
    service = RetentionService(sqlite_store, {"firestore": connector}, ledger=ledger)
    service.chunk_size = 1000  # all 520 in one erase: the partial result of one call
    try:
        summary = await service.run(config, trigger="test", now=now)
    finally:
        await connector.aclose()

    assert summary == {"firestore": {"expired": 520, "results": {"applied": 500, "failed": 20}}}
    left = [d.id for d in card.collection("notes").stream()]
    assert len(left) == 20
    [run] = sqlite_store.list_runs(customer_id=CUSTOMER_ID)
    assert (run.status, run.summary["firestore"]["results"]) == (
        "failed",
        {"applied": 500, "failed": 20},
    )
    [deleted] = ledger_of(sqlite_store, "retention.deleted")
    assert (deleted["system"], deleted["results"]) == ("firestore", {"applied": 500, "failed": 20})
    [ran] = ledger_of(sqlite_store, "retention.run")
    assert (ran["expired"], ran["results"]) == (520, {"applied": 500, "failed": 20})


async def test_a_run_cut_short_after_a_chunk_keeps_that_chunk_on_the_ledger(
    firestore_env: FirestoreEnv,
    firestore_client: firestore.Client,
    card: firestore.DocumentReference,
    config: CustomerConfig,
    sqlite_store: Store,
) -> None:
    writer = firestore_client.bulk_writer()
    for n in range(520):
        writer.set(card.collection("notes").document(f"n{n:03d}"), {"text": f"Beskjed {n}"})
    writer.close()
    now = cutoff_after_the_old_ones(card)
    connector = FirestoreConnector(firestore_env.settings(), retry_policy=QUICK)
    connector.bulk_attempts = 1
    faults = GrpcFaults()
    install(connector, faults)
    # The first chunk (500: 25 batches) lands; then the database is gone for good.
    faults.fail("BatchWrite", skip=25, times=1000)
    faults.fail("Commit", skip=1, times=1000)
    ledger = Ledger(sqlite_store, Signer.generate())
    service = RetentionService(sqlite_store, {"firestore": connector}, ledger=ledger)
    try:
        summary = await service.run(config, trigger="test", now=now)
    finally:
        await connector.aclose()

    assert summary["firestore"]["results"] == {"applied": 500}
    assert summary["firestore"]["error_kind"] == "RetriableError"
    assert len(list(card.collection("notes").stream())) == 20
    [deleted] = ledger_of(sqlite_store, "retention.deleted")
    assert deleted["results"] == {"applied": 500}
    [ran] = ledger_of(sqlite_store, "retention.run")
    assert (ran["results"], ran["error_kind"]) == ({"applied": 500}, "RetriableError")
    [run] = sqlite_store.list_runs(customer_id=CUSTOMER_ID)
    assert run.status == "failed"


async def test_a_run_that_fails_on_an_error_that_is_no_connector_s_is_failed_with_its_kind(
    firestore_connector: FirestoreConnector,
    card: firestore.DocumentReference,
    config: CustomerConfig,
    sqlite_store: Store,
) -> None:
    card.collection("notes").document("n").set({"text": "x"})
    service = RetentionService(sqlite_store, {"firestore": firestore_connector})

    # A clock without a time zone: a programming error (ValueError), no connector's.
    summary = await service.run(config, trigger="test", now=datetime.now())

    assert summary["firestore"]["error_kind"] == "ValueError"
    [run] = sqlite_store.list_runs(customer_id=CUSTOMER_ID)
    assert run.status == "failed"
    [failed] = [e for e in sqlite_store.run_events(run_id=run.id) if e.event == "retention_failed"]
    assert (failed.level, failed.detail) == ("error", {"error_kind": "ValueError"})
    assert card.collection("notes").document("n").get().exists


async def test_a_subcollection_that_cannot_be_read_fails_alone(
    firestore_env: FirestoreEnv,
    card: firestore.DocumentReference,
    sqlite_store: Store,
) -> None:
    card.collection("calls").document("c").set({"n": 1})
    card.collection("notes").document("n").set({"n": 1})
    now = datetime.now(UTC) + timedelta(days=400)
    connector = FirestoreConnector(firestore_env.settings(), retry_policy=QUICK)
    faults = GrpcFaults()
    install(connector, faults)
    faults.fail("RunQuery", code=grpc.StatusCode.DATA_LOSS)  # "calls" is read first
    config = CustomerConfig(
        id=CUSTOMER_ID,
        name="Kunde 1",
        firestore=FirestoreBinding(
            customer_id=CUSTOMER_ID, retention_days={"calls": 30, "notes": 30}
        ),
    )
    try:
        summary = await RetentionService(sqlite_store, {"firestore": connector}).run(
            config, trigger="test", now=now
        )
    finally:
        await connector.aclose()

    assert summary["firestore"] == {
        "expired": 1,
        "results": {"applied": 1},
        "rules_failed": ["calls"],
    }
    assert paths_below(card) == {"calls/c"}
    [run] = sqlite_store.list_runs(customer_id=CUSTOMER_ID)
    assert run.status == "failed"
    [event] = [e for e in sqlite_store.run_events(run_id=run.id) if e.event.endswith("rule_failed")]
    assert (event.level, event.detail["rule"]) == ("error", "calls")


async def test_a_run_records_chunk_by_chunk_and_none_of_it_on_the_event_loop(
    firestore_connector: FirestoreConnector,
    card: firestore.DocumentReference,
    config: CustomerConfig,
    sqlite_store: Store,
) -> None:
    """The run, its chunks' events and ledger entries are written in the service's
    thread: on the event loop they held every customer's sync and the API meanwhile."""
    notes = card.collection("notes")
    for i in range(5):
        notes.document(f"old{i}").set({"text": f"Beskjed {i}"})
    now = cutoff_after_the_old_ones(card)
    ledger = Ledger(sqlite_store, Signer.generate())
    service = RetentionService(sqlite_store, {"firestore": firestore_connector}, ledger=ledger)
    service.chunk_size = 2

    with statements_on_this_thread() as on_loop:
        summary = await service.run(config, trigger="test", now=now)

    assert summary == {"firestore": {"expired": 5, "results": {"applied": 5}}}
    assert sum(on_loop.values()) == 0, on_loop
    assert [p["items"] for p in ledger_of(sqlite_store, "retention.deleted")] == [2, 2, 1]
    assert ledger_of(sqlite_store, "retention.run")[-1]["results"] == {"applied": 5}
    (run,) = sqlite_store.list_runs(limit=10)
    assert run.kind == "retention" and run.status == "completed"
