"""A whole-customer erasure of the card: everything below it is found and deleted, at any
depth, also when the card document or the documents between are gone; the number of
documents deleted is returned; a delete that fails is an error, never silence. Against
Google's Firestore emulator, through the callbacks daemon/wiring.py hands the erasure."""

from __future__ import annotations

import grpc
import pytest
from google.cloud import firestore

from connectors.base import RetryPolicy
from connectors.firestore import FirestoreConnector, IncompleteDeletion
from daemon.domain import ContactRecord, Customer
from daemon.wiring import erasers_for
from tests.fixtures.firestore import FirestoreEnv
from tests.integration.test_firestore_faults import GrpcFaults, install

pytestmark = pytest.mark.emulator

CUSTOMER_ID = "kunde-1"


def everything(client: firestore.Client) -> set[str]:
    """Every document of the project, at any depth, as Google's client finds them."""
    found = set()
    for collection in client.collections():
        for snapshot in collection.recursive().stream():
            found.add(snapshot.reference.path)
    return found


def neighbours(client: firestore.Client) -> set[str]:
    """Other customers' cards, with ids that share a prefix with kunde-1's."""
    customers = client.collection("customers")
    customers.document("kunde-10").set({"name": "Ti"})
    customers.document("kunde-10").collection("notes").document("n").set({"t": 1})
    customers.document("kunde-1-b").collection("notes").document("n").set({"t": 1})
    customers.document("kunde-0").collection("calls").document("c").set({"t": 1})
    return everything(client)


async def test_only_nested_documents_left_under_a_missing_card_are_found_counted_and_deleted(
    firestore_connector: FirestoreConnector,
    firestore_client: firestore.Client,
    firestore_env: FirestoreEnv,
) -> None:
    others = neighbours(firestore_client)
    card = firestore_client.collection("customers").document(CUSTOMER_ID)
    # No card document, no note document: only what was below them is left.
    card.collection("notes").document("n1").collection("comments").document("c1").set({"t": 1})
    deep = card.collection("calls").document("x").collection("log").document("y")
    deep.collection("deep").document("z").set({"t": 1})
    customer = firestore_env.customer(CUSTOMER_ID)
    [eraser] = erasers_for({"firestore": firestore_connector}).values()

    assert await firestore_connector.has_card(customer)
    located = await eraser.locate_customer(customer)
    assert [ref.kind for ref in located] == ["card"]

    assert await firestore_connector.delete_card(customer) == 2

    assert not await firestore_connector.has_card(customer)
    assert await eraser.locate_customer(customer) == []  # verified absent: truly empty
    assert everything(firestore_client) == others


async def test_the_count_is_every_document_deleted_the_card_included(
    firestore_connector: FirestoreConnector,
    firestore_client: firestore.Client,
    firestore_env: FirestoreEnv,
) -> None:
    others = neighbours(firestore_client)
    customer = firestore_env.customer(CUSTOMER_ID)
    await firestore_connector.write_card(customer, {"name": "Kunde 1"})
    await firestore_connector.put_contacts(
        customer, [ContactRecord(system="firestore", external_id=f"c{n}") for n in range(3)]
    )
    card = firestore_client.collection("customers").document(CUSTOMER_ID)
    note = card.collection("notes").document("n1")
    note.set({"t": 1})
    note.collection("comments").document("c1").set({"t": 1})

    assert await firestore_connector.delete_card(customer) == 1 + 3 + 2
    assert await firestore_connector.delete_card(customer) == 0  # nothing left to delete
    assert everything(firestore_client) == others


async def test_a_delete_that_fails_is_an_error_with_the_count_and_the_card_is_still_found(
    firestore_env: FirestoreEnv, firestore_client: firestore.Client
) -> None:
    customer: Customer = firestore_env.customer(CUSTOMER_ID)
    card = firestore_client.collection("customers").document(CUSTOMER_ID)
    card.set({"name": "Kunde 1"})
    for n in range(30):  # with the card: two batches of at most 20 deletes
        card.collection("notes").document(f"n{n:02d}").set({"t": n})
    connector = FirestoreConnector(
        firestore_env.settings(), retry_policy=RetryPolicy(attempts=2, base_wait=0.01)
    )
    connector.bulk_attempts = 1
    faults = GrpcFaults()
    install(connector, faults)
    faults.fail("BatchWrite", skip=1, code=grpc.StatusCode.DATA_LOSS)
    try:
        with pytest.raises(IncompleteDeletion) as caught:
            await connector.delete_card(customer)
        assert caught.value.deleted + caught.value.failed == 31
        assert caught.value.failed in (11, 20)  # the batch refused: either of the two
        assert "DATA_LOSS" in str(caught.value)
        # What is left is found: a verification reading back says "still there".
        assert await connector.has_card(customer)
        # Called again, the rest goes; the two counts add up to every document.
        assert await connector.delete_card(customer) == caught.value.failed
        assert not await connector.has_card(customer)
    finally:
        await connector.aclose()
