"""Updating a contact's phones keeps what the card app keeps in each phone entry
(`extension`, `label`), against Google's Firestore emulator."""

from __future__ import annotations

from typing import Any

import pytest
from google.cloud import firestore

from connectors.firestore import FirestoreConnector
from daemon.domain import Customer, Operation, OpKind, OpStatus, Phone, PhoneType
from tests.fixtures.firestore import FirestoreEnv

pytestmark = pytest.mark.emulator

CUSTOMER_ID = "kunde-1"
CARD_APP_PHONES = [
    {"number": "22 33 44 55", "type": "work", "extension": "12", "label": "Sentralbord"},
    {"number": "+47 912 34 567", "type": "mobile", "label": "Privat"},
]


def update(doc_id: str, version: str | None, *numbers: Phone, op_id: str = "u1") -> Operation:
    return Operation(
        op_id=op_id,
        kind=OpKind.UPDATE,
        system="firestore",
        link_id="L",
        external_id=doc_id,
        values={"phones": numbers},
        expected_version=version,
    )


@pytest.fixture
def contact(firestore_client: firestore.Client) -> firestore.DocumentReference:
    reference = (
        firestore_client.collection("customers")
        .document(CUSTOMER_ID)
        .collection("contacts")
        .document("åse")
    )
    reference.set({"given_name": "Åse", "phones": CARD_APP_PHONES})
    return reference


async def version_of(connector: FirestoreConnector, customer: Customer) -> str | None:
    [record] = (await connector.read(customer)).records
    return record.version


@pytest.mark.parametrize("bulk_threshold", [20, 0], ids=["single", "bulk"])
async def test_a_phones_update_keeps_extension_and_label(
    firestore_env: FirestoreEnv, contact: firestore.DocumentReference, bulk_threshold: int
) -> None:
    connector = FirestoreConnector(firestore_env.settings(bulk_threshold=bulk_threshold))
    customer = firestore_env.customer(CUSTOMER_ID)
    op = update(
        "åse",
        await version_of(connector, customer),
        Phone(number="22334455", type=PhoneType.WORK),  # the same line, another format
        Phone(number="40000000", type=PhoneType.HOME),  # new
    )  # the mobile is gone

    try:
        [result] = await connector.apply(customer, [op])
        # Replayed (after a crash): the document holds it already, so it is applied,
        # not a conflict, though the stored entries carry more than pdsync wrote.
        [replayed] = await connector.apply(customer, [op])
    finally:
        await connector.aclose()

    assert result.status is OpStatus.APPLIED
    stored: dict[str, Any] = contact.get().to_dict() or {}
    assert stored["phones"] == [
        {"number": "22334455", "type": "work", "extension": "12", "label": "Sentralbord"},
        {"number": "40000000", "type": "home"},
    ]
    assert stored["given_name"] == "Åse"
    assert replayed.status is OpStatus.APPLIED


async def test_a_card_app_change_between_read_and_write_is_a_conflict_not_lost(
    firestore_connector: FirestoreConnector,
    firestore_env: FirestoreEnv,
    contact: firestore.DocumentReference,
) -> None:
    customer = firestore_env.customer(CUSTOMER_ID)
    version = await version_of(firestore_connector, customer)
    contact.update({"phones": [{**CARD_APP_PHONES[0], "label": "Resepsjon"}]})

    [result] = await firestore_connector.apply(
        customer, [update("åse", version, Phone(number="22334455", type=PhoneType.WORK))]
    )

    assert result.status is OpStatus.CONFLICT
    assert (contact.get().to_dict() or {})["phones"][0]["label"] == "Resepsjon"
