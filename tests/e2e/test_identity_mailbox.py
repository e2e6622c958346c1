"""Erasing the right person in ONE service mailbox shared by every customer: the sandbox
(Firestore emulator, Zisson and Graph simulators), two customers.

Each failed on the main of 2026-12-04 (issue 9): a subject erasure for one customer
located and permanently deleted another customer's mail (case 2), and a name written
surname first with a particle ("van der Berg, Ola") was never found, so that mail stayed
while the certificate said "verified absent" (case 7).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from daemon import config
from daemon.certificate import verify_certificate
from daemon.cli import app as cli
from daemon.config import Settings
from daemon.domain import Subject
from daemon.erasure import ErasureService
from daemon.proof import certifier_for, open_ledger
from daemon.store import ErasureState, Store
from daemon.sync import SyncService
from daemon.wiring import erasers_for, open_connectors
from sandbox.up import SERVICE_MAILBOX, Sandbox, running

pytestmark = [pytest.mark.emulator, pytest.mark.slow]


@dataclass
class Two:
    box: Sandbox
    settings: Settings
    store: Store
    sync: SyncService
    erasure: ErasureService

    def message_ids(self) -> set[str]:
        return {m["id"] for m in self.box.graph.messages(SERVICE_MAILBOX)}

    def deliver(self, customer: int, **message: object) -> str:
        folder = f"Kunde {self.box.customers[customer].id}"
        folder_id = self.box.graph.folder_id(SERVICE_MAILBOX, folder)
        return self.box.graph.add_message(SERVICE_MAILBOX, folder_id, **message)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with running(tmp_path_factory.mktemp("sandbox"), seed=5, customers=2, contacts=8) as box:
        yield box


@pytest.fixture
async def two(sandbox: Sandbox) -> AsyncIterator[Two]:
    settings = config.load(sandbox.config_path)
    store = Store.open(settings.store.url, master_key=settings.store.master_key_bytes())
    async with AsyncExitStack() as stack:
        connectors = await open_connectors(settings, stack, store=store)
        ledger = open_ledger(settings, store)
        two = Two(
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
        )
        for customer in settings.customers:
            await two.sync.sync(customer, trigger="test")
        yield two
    store.close()


async def erase(two: Two, customer_id: str, subject: Subject, **kwargs: object) -> dict[str, Any]:
    """Erase, check the certificate verifies against the ledger's key, return it."""
    request = two.erasure.request(
        customer_id,
        scope="subject",
        subject=subject,
        requested_by="anne",
        reason="ticket 9",
        **kwargs,  # type: ignore[arg-type]
    )
    row = await two.erasure.advance(request)
    assert row.state is ErasureState.COMPLETED, (row.state, row.error)
    assert row.certificate is not None
    key_id = next(iter(open_ledger(two.settings, two.store).verifiers))
    assert verify_certificate(row.certificate.encode(), trusted_key_id=key_id) == []
    document: dict[str, Any] = json.loads(row.certificate)
    return document


async def test_a_subject_erasure_never_touches_another_customers_mail(two: Two) -> None:
    """Case 2: the subject's address and name in the body of customer B's mail, in B's
    folder, from B's domain: not A's mail, and it stays."""
    a, b = two.box.customers
    person = next(c.card for c in a.contacts if c.card.kind == "person" and c.card.emails)
    email, name = person.emails[0], person.display_name
    from_subject = two.deliver(0, subject="Beskjed", body="Ring meg", sender=email)
    named_at_a = two.deliver(
        0, subject="Notat", body=f"{name} ringte om fakturaen", sender=f"resepsjon@{a.domains[0]}"
    )
    at_b = two.deliver(
        1,
        subject="Kopi",
        body=f"Videresendt fra {name} <{email}>",
        sender=f"post@{b.domains[0]}",
    )
    before = two.message_ids()
    document = await erase(two, a.id, Subject(emails=(email,), names=(name,)))
    after = two.message_ids()
    assert from_subject not in after  # the subject's own mail, by a personal address
    assert at_b in after  # customer B's mail is B's
    assert named_at_a in after  # a name alone is a question for a person: left alone
    gone = before - after
    assert gone and all(m not in gone for m in (at_b, named_at_a))
    (outlook,) = [s for s in document["systems"] if s["system"] == "outlook"]
    assert outlook["verified_absent"] is True
    left = [g for g in document["left_alone"] if g["system"] == "outlook"]
    assert sum(sum(g["counts"].values()) for g in left) >= 1  # named, left alone


async def test_a_name_written_surname_first_with_a_particle_is_found(two: Two) -> None:
    """Case 7: "van der Berg, Ola" and "Nordmann Hansen, Kari" name Ola van der Berg and
    Kari Nordmann Hansen. Found (as name-only evidence, for a person to include), they
    are erased once included, and no longer reported absent while they stay."""
    a = two.box.customers[0]
    colleague = f"resepsjon@{a.domains[0]}"
    ola = two.deliver(0, subject="Avtale", body="Hilsen van der Berg, Ola", sender=colleague)
    kari = two.deliver(
        0, subject="Referat", body="Til stede: Nordmann Hansen, Kari", sender=colleague
    )
    near = two.deliver(0, subject="Annet", body="Berg, Ola ringte", sender=colleague)
    subject = Subject(names=("Ola van der Berg", "Kari Nordmann Hansen"))
    preview = await two.erasure.preview(a.id, scope="subject", subject=subject)
    found = {f.ref.id: f for f in preview.located if f.ref.system == "outlook"}
    assert {ola, kari} <= set(found) and near not in found
    assert all(found[m].ambiguous for m in (ola, kari))
    await erase(two, a.id, subject, include=[found[ola].item, found[kari].item])
    after = two.message_ids()
    assert ola not in after and kari not in after and near in after


def test_config_check_asks_the_mailbox_for_every_folder_the_file_names(
    sandbox: Sandbox, tmp_path: Path, cli_logging_restored: None
) -> None:
    runner = CliRunner()
    fine = runner.invoke(cli, ["config", "check", "--config", str(sandbox.config_path)])
    assert fine.exit_code == 0, fine.output
    text = sandbox.config_path.read_text(encoding="utf-8")
    first = sandbox.customers[0].id
    folders = f'mail_folders = ["Kunde {first}"]'
    assert folders in text
    misspelt = tmp_path / "pdsync.toml"
    misspelt.write_text(text.replace(folders, f'mail_folders = ["Kunde {first}x"]'), "utf-8")
    bad = runner.invoke(cli, ["config", "check", "--config", str(misspelt)])
    assert bad.exit_code == 2, bad.output
    assert "customers[0].outlook.mail_folders[0]" in bad.output
    offline = runner.invoke(cli, ["config", "check", "--offline", "--config", str(misspelt)])
    assert offline.exit_code == 0, offline.output
