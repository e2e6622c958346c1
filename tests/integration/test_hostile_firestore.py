"""Hostile customer-card contacts in Google's Firestore emulator (issue 10, item 5): each is
rejected naming its field, and the rest of the card is read."""

from __future__ import annotations

from typing import Any

import pytest
from google.cloud import firestore

from connectors.firestore import FirestoreConnector
from daemon.domain import Customer

pytestmark = pytest.mark.emulator

CUSTOMER_ID = "kunde-hostile"
HOSTILE: dict[str, tuple[dict[str, Any], str]] = {
    "c1": ({"given_name": "Kari\x9b2J"}, "given_name"),
    "escape": ({"title": "\x1b[31mSjef"}, "title"),
    "nul": ({"notes": "Nordmann\x00"}, "notes"),
    "long": ({"family_name": "A" * 5000}, "family_name"),
    "many": ({"emails": [f"k{i}@fjord.no" for i in range(150)]}, "emails"),
    "number": ({"phones": [{"number": "22\x0733", "type": "work"}]}, "phones[0].number"),
}


async def test_hostile_card_contacts_are_rejected_and_the_rest_is_read(
    firestore_connector: FirestoreConnector,
    firestore_client: firestore.Client,
    firestore_env: Any,
) -> None:
    customer: Customer = firestore_env.customer(CUSTOMER_ID)
    contacts = firestore_client.collection("customers").document(CUSTOMER_ID).collection("contacts")
    for n in range(3):
        contacts.document(f"good-{n}").set({"given_name": f"Åse{n}", "notes": "Linje\r\n\tto"})
    for doc_id, (data, _) in HOSTILE.items():
        contacts.document(doc_id).set({"given_name": "Kari", **data})
    contacts.document("bell\x07").set({"given_name": "Kari"})  # Firestore takes it as an id

    result = await firestore_connector.read(customer)

    assert sorted(r.external_id for r in result.records) == ["good-0", "good-1", "good-2"]
    reasons = {r.external_id: r.reason for r in result.rejected}
    assert set(reasons) == {*HOSTILE, None}
    for doc_id, (_, field) in HOSTILE.items():
        assert reasons[doc_id].startswith(f"{field}:"), reasons[doc_id]
    assert reasons[None] == "id: a control character"
    for rejected in result.rejected:
        assert not any(s in rejected.reason for s in ("Kari", "Sjef", "Nordmann", "fjord", "AAAA"))
        rejected.raw.encode("utf-8")
