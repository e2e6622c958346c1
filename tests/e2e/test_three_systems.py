"""All three systems at once, in the sandbox: the customer card, Zisson and Outlook.

Each check reads the system's own side (Google's client, the simulators' state).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore

from daemon import config
from daemon.certificate import verify_certificate
from daemon.config import Settings
from daemon.domain import Subject
from daemon.erasure import ErasureService
from daemon.proof import certifier_for, open_ledger
from daemon.retention import RetentionService
from daemon.store import ErasureState, Store
from daemon.sync import SyncService
from daemon.wiring import erasers_for, open_connectors
from sandbox.up import PROJECT, SERVICE_MAILBOX, Sandbox, running

pytestmark = [pytest.mark.emulator, pytest.mark.slow]


@dataclass
class Three:
    box: Sandbox
    settings: Settings
    store: Store
    sync: SyncService
    erasure: ErasureService
    retention: RetentionService
    client: firestore.Client

    def outlook_contacts(self, customer: str) -> list[dict[str, Any]]:
        return self.box.graph.contacts(SERVICE_MAILBOX, self.box.contact_folders[customer])

    def card_doc(self, customer: str, email: str) -> firestore.DocumentReference:
        contacts = self.client.collection("customers").document(customer).collection("contacts")
        [doc] = [d for d in contacts.stream() if email in (d.to_dict() or {}).get("emails", [])]
        return doc.reference


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with running(tmp_path_factory.mktemp("sandbox"), seed=3, customers=1, contacts=12) as box:
        yield box


@pytest.fixture
async def three(sandbox: Sandbox) -> AsyncIterator[Three]:
    settings = config.load(sandbox.config_path)
    store = Store.open(settings.store.url, master_key=settings.store.master_key_bytes())
    client = firestore.Client(project=PROJECT, credentials=AnonymousCredentials())
    client._emulator_host = sandbox.emulator.host  # type: ignore[attr-defined]
    async with AsyncExitStack() as stack:
        connectors = await open_connectors(settings, stack, store=store)
        ledger = open_ledger(settings, store)
        yield Three(
            box=sandbox,
            settings=settings,
            store=store,
            sync=SyncService(settings, store, connectors, ledger=ledger),
            erasure=ErasureService(
                settings,
                store,
                erasers_for(connectors),
                recorder=ledger,
                certify=certifier_for(settings, ledger),
            ),
            retention=RetentionService(store, connectors, ledger=ledger),
            client=client,
        )
    store.close()
    client.close()


async def settle(three: Three) -> None:
    customer = three.settings.customers[0]
    for _ in range(4):
        report = await three.sync.sync(customer, trigger="test")
        assert report.status == "completed", report.error
        assert report.plan is not None
        if not report.plan.ops and not report.plan.members:
            return
    raise AssertionError("sync did not settle")


async def test_card_changes_reach_outlook_and_outlook_edits_are_put_back_then_erasure_and_retention(
    three: Three,
) -> None:
    customer = three.settings.customers[0].id
    seed = three.box.customers[0]
    await settle(three)
    people = [c.card for c in seed.contacts]
    assert len(three.outlook_contacts(customer)) == len(people)

    # A title changed on the card reaches the Outlook contact folder.
    target = next(p for p in people if p.kind == "person")
    email = target.emails[0]
    three.card_doc(customer, email).update({"title": "Styreleder"})
    await settle(three)
    [contact] = [
        c
        for c in three.outlook_contacts(customer)
        if email in [a["address"] for a in c["emailAddresses"]]
    ]
    assert contact["jobTitle"] == "Styreleder"

    # A job title changed in Outlook is put back (the card is the authority).
    three.box.graph.patch_contact(SERVICE_MAILBOX, contact["id"], {"jobTitle": "Vaktmester"})
    await settle(three)
    [contact] = [
        c
        for c in three.outlook_contacts(customer)
        if email in [a["address"] for a in c["emailAddresses"]]
    ]
    assert contact["jobTitle"] == "Styreleder"

    # Erasing the subject removes them from all three systems, mail included.
    mentioned = [
        m
        for m in three.box.graph.messages(SERVICE_MAILBOX)
        if target.display_name in m["body"]["content"]
    ]
    assert mentioned
    request = three.erasure.request(
        customer,
        scope="subject",
        subject=Subject(emails=(email,)),
        requested_by="ops",
        reason="kunden ba om det",
    )
    row = await three.erasure.advance(request)
    assert row.state is ErasureState.COMPLETED, row.error
    assert {s for s, o in row.outcome.items() if o["outcome"] == "executed"} == {
        "firestore",
        "zisson",
        "outlook",
    }
    zisson_users = three.box.zisson.users(three.box.zisson_accounts[customer])
    assert email not in {e for u in zisson_users for e in u["emails"]}
    assert email not in {
        a["address"] for c in three.outlook_contacts(customer) for a in c["emailAddresses"]
    }
    left = {m["id"] for m in three.box.graph.messages(SERVICE_MAILBOX)}
    assert not left & {m["id"] for m in mentioned if email in str(m)}
    assert (
        verify_certificate(
            row.certificate.encode(),
            trusted_key_id=next(iter(open_ledger(three.settings, three.store).verifiers)),
        )
        == []
    )  # type: ignore[union-attr]

    # Retention deletes exactly the inbox messages older than the customer's 365 days.
    from datetime import UTC, datetime, timedelta

    cutoff = datetime.now(UTC) - timedelta(days=365)
    inbox_old = [
        m
        for m in three.box.graph.messages(SERVICE_MAILBOX, "inbox")
        if datetime.fromisoformat(m["receivedDateTime"].replace("Z", "+00:00")) < cutoff
    ]
    assert inbox_old
    summary = await three.retention.run(three.settings.customers[0], trigger="test")
    assert summary["outlook"]["expired"] == len(inbox_old)
    remaining = {m["id"] for m in three.box.graph.messages(SERVICE_MAILBOX, "inbox")}
    assert not remaining & {m["id"] for m in inbox_old}
    runs = three.store.list_runs(customer_id=customer)
    assert any(r.kind == "retention" and r.status == "completed" for r in runs)
