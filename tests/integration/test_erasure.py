"""Erasure end to end against the Firestore emulator and the Zisson simulator.

What is gone is checked through each system's own API, never through pdsync.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from google.cloud import firestore

from daemon import normalize
from daemon.certificate import Certificate, verify_certificate
from daemon.config import ErasureConfig
from daemon.domain import PhoneType, Subject
from daemon.erasure import ErasureError
from daemon.ledger import verify_ledger
from daemon.store import ErasureState, KeyDestroyed
from tests.fixtures.firestore import FirestoreEnv
from tests.fixtures.zisson import ZissonConnect
from tests.integration.sync_world import CUSTOMER, SyncWorld, make_world
from tests.integration.test_sync import person

pytestmark = pytest.mark.emulator


async def seeded(world: SyncWorld, n: int = 6) -> None:
    await world.put_card([person(i) for i in range(n)])
    await world.settle()


def emails_in_zisson(world: SyncWorld) -> set[str]:
    return {e for u in world.users() for e in u["emails"]}


def emails_on_card(world: SyncWorld) -> set[str]:
    return {e for doc in world.card().values() for e in doc["emails"]}


async def test_erasing_a_subject_removes_them_everywhere_and_the_certificate_verifies(
    world: SyncWorld,
) -> None:
    await seeded(world)
    service = world.erasure()
    subject = normalize.parse_subject(emails=["PERSON2@fjord.no"], phones=["9000 0003"])
    preview = await service.preview(CUSTOMER, scope="subject", subject=subject)
    counts = preview.counts()
    assert counts["firestore"] == {"contact": 2} and counts["zisson"] == {"contact": 2}
    assert preview.counts(ambiguous=True) == {"firestore": {}, "zisson": {}}
    assert len(world.users()) == 6  # a preview changes nothing

    request = service.request(
        CUSTOMER, scope="subject", subject=subject, requested_by="ops", reason="ticket 4711"
    )
    row = await service.advance(request)

    assert row.state is ErasureState.COMPLETED
    for gone in ("person2@fjord.no", "person3@fjord.no"):
        assert gone not in emails_in_zisson(world) and gone not in emails_on_card(world)
    assert len(world.users()) == 4 and len(world.card()) == 4
    assert {s: o["outcome"] for s, o in row.outcome.items()} == {
        "firestore": "executed",
        "zisson": "executed",
    }
    assert not row.has_identifiers  # destroyed on completion
    assert row.certificate is not None
    trusted = world.ledger.verifiers
    assert verify_certificate(row.certificate.encode(), trusted_key_id=next(iter(trusted))) == []
    certificate = Certificate.from_json(row.certificate.encode())
    assert certificate.facts.identifiers.emails == ("p***@f***.no",)
    assert "person2" not in row.certificate and "90000003" not in row.certificate
    assert verify_ledger(world.store, trusted).ok
    assert world.store.counts(CUSTOMER)["links"] == 4


async def test_a_sync_after_an_erasure_recreates_nothing_and_data_put_back_is_erased_again(
    world: SyncWorld,
) -> None:
    await seeded(world)
    service = world.erasure()
    subject = Subject(emails=("person1@fjord.no",))
    await service.advance(
        service.request(CUSTOMER, scope="subject", subject=subject, requested_by="ops", reason="x")
    )
    await world.settle()
    assert "person1@fjord.no" not in emails_in_zisson(world) | emails_on_card(world)

    # Someone types the person back into Zisson by hand.
    world.put_user(person(1, phones=(normalize.phone("41 00 00 01", PhoneType.MOBILE),)))
    report = await world.sync()
    assert "person1@fjord.no" not in emails_in_zisson(world)
    events = world.store.run_events(run_id=report.run_id)
    incidents = [e for e in events if e.event == "incident_erased_data_reappeared"]
    assert len(incidents) == 1 and incidents[0].level == "error"
    # The re-erasure counts against the deletion threshold like any deletion (reconcile).
    assert report.plan is not None and report.plan.deleted_contacts == 1
    # The card never got it either.
    assert "person1@fjord.no" not in emails_on_card(world)


async def test_erasing_a_customer_leaves_nothing_in_any_system_or_the_store(
    world: SyncWorld, tmp_path: Path
) -> None:
    await seeded(world, 8)
    notes = world.contacts_ref().parent.collection("notes")  # type: ignore[union-attr]
    notes.document("n1").set({"text": "Ring Åse"})
    notes.document("n1").collection("replies").document("r1").set({"text": "Ringt"})
    card_ref = world.client.collection("customers").document(CUSTOMER)
    under_card = (1 if card_ref.get().exists else 0) + 2  # the card, a note and its reply
    service = world.erasure()
    request = service.request(
        CUSTOMER, scope="customer", subject=None, requested_by="anne", reason="contract ended"
    )
    row = await service.advance(request)
    assert row.state is ErasureState.AWAITING_APPROVAL
    assert len(world.users()) == 8  # nothing before the second admin says so
    with pytest.raises(ErasureError, match="cannot approve"):
        service.approve(request, approver="anne")
    service.approve(request, approver="bjørn")
    row = await service.advance(request)

    assert row.state is ErasureState.COMPLETED, row.error
    assert world.users() == []
    card = world.client.collection("customers").document(CUSTOMER)
    assert not card.get().exists
    assert list(card.collections()) == []
    assert world.store.load_state(CUSTOMER).links == {}
    with pytest.raises(KeyDestroyed):
        world.store.customer_key(CUSTOMER)
    assert row.outcome["pdsync"]["outcome"] == "executed"
    # The card is counted as the documents that went with it, not as one card.
    assert row.outcome["firestore"]["counts"]["card"] == under_card
    # The certificate states the store's own backups as a residual, with the others.
    certificate = Certificate.from_json(row.certificate.encode())  # type: ignore[union-attr]
    [backups] = [r for r in certificate.facts.residuals if r.system == "pdsync"]
    assert backups.retention == world.settings.store.backup_retention
    assert {r.system for r in certificate.facts.residuals} >= {"firestore", "zisson", "pdsync"}
    # Its Zisson account's refresh token is forgotten with it.
    assert row.outcome["pdsync"]["counts"]["connector_secrets"] == 1
    assert world.store.connector_secret("zisson", world.zisson.binding.account) is None
    assert (
        verify_certificate(
            row.certificate.encode(), trusted_key_id=next(iter(world.ledger.verifiers))
        )
        == []
    )  # type: ignore[union-attr]
    # A later sync of the erased customer changes nothing and says why.
    report = await world.sync()
    assert "erased" in (report.error or "")
    # Nothing of the customer's people is left in the store's files.
    world.store.close()
    database = Path(world.settings.store.url.removeprefix("sqlite:///"))
    stored = b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))
    for i in range(8):
        assert f"person{i}@fjord.no".encode() not in stored
        assert f"9{i:07d}".encode() not in stored
    assert "Bjørnstad".encode() not in stored


async def test_unknown_customer_and_malformed_identifiers_are_refused_and_change_nothing(
    world: SyncWorld,
) -> None:
    await seeded(world, 2)
    service = world.erasure()
    with pytest.raises(ErasureError, match="unknown customer 'nobody'"):
        service.request(
            "nobody",
            scope="subject",
            subject=Subject(emails=("a@b.no",)),
            requested_by="ops",
            reason="x",
        )
    for bad in ({"emails": ["not-an-address"]}, {"phones": ["12"]}, {"names": ["!"]}, {}):
        with pytest.raises(normalize.BadIdentifier) as error:
            normalize.parse_subject(**bad)
        assert "not-an-address" not in str(error.value)
    assert world.store.list_erasures() == []
    assert len(world.users()) == 2


@pytest.mark.slow
async def test_a_customer_erasure_killed_at_ten_points_completes_once_after_restarts(
    tmp_path: Path,
    firestore_env: FirestoreEnv,
    zisson_connect: ZissonConnect,
    firestore_client: firestore.Client,
) -> None:
    zisson = zisson_connect("json", write_mode="api")
    world = make_world(
        tmp_path,
        firestore_env,
        zisson,
        firestore_client,
        erasure=ErasureConfig(require_second_admin=False),
    )
    try:
        await world.put_card([person(i) for i in range(40)])
        await world.settle()
        users_before = len(world.users())
        config = world.config_file(
            tmp_path / "pdsync.toml", require_second_admin=False, log_format="json"
        )
        world.zisson.sim.reset_counters()
        # Slow enough that the poller below sees each step, even on a busy machine.
        world.zisson.sim.set_faults(latency_ms=150)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        base = [sys.executable, "-m", "daemon.cli"]
        first = [
            *base,
            "erase",
            "customer",
            CUSTOMER,
            "--execute",
            "--reason",
            "end",
            "--yes",
            "--config",
            str(config),
        ]
        kills, request_id, seen_done = 0, None, -1
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            command = (
                first
                if request_id is None
                else [*base, "erasures", "resume", request_id, "--config", str(config)]
            )
            process = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
            )
            # Kill as soon as the erasure moved on: an item marked done in the store, or a
            # delete seen by Zisson that the store may not have recorded yet.
            while process.poll() is None and time.monotonic() < deadline:
                rows = world.store.list_erasures(customer_id=CUSTOMER)
                if rows:
                    request_id = rows[0].id
                    done = len(world.store.erasure_items(request_id, status="done"))
                    done += world.zisson.sim.counters["deletes"]
                    if done > seen_done and kills < 12:
                        seen_done = done
                        process.send_signal(signal.SIGKILL)
                        kills += 1
                        break
                time.sleep(0.02)
            process.wait()
            if request_id and world.store.get_erasure(request_id).state is ErasureState.COMPLETED:
                break
        assert kills >= 10
        assert request_id is not None
        row = world.store.get_erasure(request_id)
        assert row.state is ErasureState.COMPLETED, row.error
        assert len(world.store.list_erasures()) == 1  # one request, one certificate
        assert (
            world.users() == []
            and not world.client.collection("customers").document(CUSTOMER).get().exists
        )
        counters = world.zisson.sim.counters
        assert counters["deletes"] == users_before  # each deleted exactly once
        # What the store held is counted once, before its purge: a kill after the purge
        # does not turn the certificate's counts into zeros.
        assert row.outcome["pdsync"]["counts"]["links"] == users_before
        assert (
            row.certificate
            and Certificate.from_json(row.certificate.encode()).facts.customer_id == CUSTOMER
        )
    finally:
        world.store.close()
        await world.firestore.aclose()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDSYNC_")}
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


async def test_the_cli_erases_exports_and_verifies_and_catches_tampering(
    world: SyncWorld, tmp_path: Path
) -> None:
    await seeded(world, 3)
    config = str(world.config_file(tmp_path / "pdsync.toml", log_format="json"))
    world.store.close()
    plan = _cli(
        "erase",
        "subject",
        "--customer",
        CUSTOMER,
        "--email",
        "person0@fjord.no",
        "--plan",
        "--config",
        config,
    )
    assert plan.returncode == 0, plan.stderr
    assert "zisson" in plan.stdout and "person0" not in plan.stdout
    bad = _cli(
        "erase",
        "subject",
        "--customer",
        CUSTOMER,
        "--email",
        "nope",
        "--execute",
        "--reason",
        "x",
        "--yes",
        "--config",
        config,
    )
    assert bad.returncode == 2 and "--email #1 is not an e-mail address" in bad.stderr
    unknown = _cli("erase", "customer", "ghost", "--plan", "--config", config)
    assert unknown.returncode == 2 and "unknown customer 'ghost'" in unknown.stderr
    done = _cli(
        "erase",
        "subject",
        "--customer",
        CUSTOMER,
        "--email",
        "person0@fjord.no",
        "--execute",
        "--reason",
        "ticket 9",
        "--yes",
        "--config",
        config,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    request = _cli("erasures", "--config", config).stdout.split("│")[1].strip()

    certificate = tmp_path / "cert.json"
    pdf = tmp_path / "cert.pdf"
    assert (
        _cli(
            "certificate", "export", request, "-o", str(certificate), "--config", config
        ).returncode
        == 0
    )
    assert (
        _cli(
            "certificate", "export", request, "--format", "pdf", "-o", str(pdf), "--config", config
        ).returncode
        == 0
    )
    assert pdf.read_bytes().startswith(b"%PDF")
    ok = _cli("certificate", "verify", str(certificate), "--config", config)
    assert ok.returncode == 0 and "valid" in ok.stdout
    data = bytearray(certificate.read_bytes())
    data[data.index(b"ticket 9") + 7] = ord("8")
    tampered = tmp_path / "tampered.json"
    tampered.write_bytes(bytes(data))
    broken = _cli("certificate", "verify", str(tampered), "--config", config)
    assert broken.returncode == 1 and "INVALID" in broken.stderr

    assert _cli("ledger", "verify", "--config", config).returncode == 0
    import sqlalchemy as sa

    engine = sa.create_engine(world.settings.store.url)
    with engine.begin() as conn:
        seq = conn.scalar(sa.text("SELECT min(seq) FROM ledger_entries WHERE kind = 'sync.create'"))
        conn.execute(
            sa.text(
                "UPDATE ledger_entries SET payload = replace(payload, 'zisson', 'zissom')"
                " WHERE seq = :s"
            ),
            {"s": seq},
        )
    engine.dispose()
    verdict = _cli("ledger", "verify", "--config", config)
    assert verdict.returncode == 1
    assert f"seq {seq}" in verdict.stderr


async def test_zisson_in_manual_mode_gets_a_task_and_the_request_waits_for_the_read_back(
    tmp_path: Path,
    firestore_env: FirestoreEnv,
    zisson_connect: ZissonConnect,
    firestore_client: firestore.Client,
) -> None:
    zisson = zisson_connect("json", write_mode="manual")
    world = make_world(tmp_path, firestore_env, zisson, firestore_client)
    try:
        records = await world.put_card([person(i) for i in range(3)])
        for i in range(3):  # already in Zisson: manual mode could not have put them there
            world.put_user(person(i))
        await world.settle()
        service = world.erasure()
        request = service.request(
            CUSTOMER,
            scope="subject",
            subject=Subject(emails=("person1@fjord.no",)),
            requested_by="ops",
            reason="ticket 12",
        )
        row = await service.advance(request)
        assert row.state is ErasureState.VERIFYING
        assert row.outcome["zisson"]["outcome"] == "manual_pending"
        assert row.outcome["firestore"]["outcome"] == "executed"
        [task] = [
            t
            for t in world.store.list_tasks(customer_id=CUSTOMER)
            if t.link_id == f"erasure:{request}"
        ]
        [user] = [u for u in world.users() if "person1@fjord.no" in u["emails"]]
        instruction = world.store.task_instruction(task.id)  # for the operator, decrypted
        assert "Kjærsti Løvås" in instruction and user["id"] in instruction
        assert "person1@fjord.no" in emails_in_zisson(world)  # nothing done behind its back
        assert (await service.advance(request)).state is ErasureState.VERIFYING  # still waits

        # The operator deletes the entry in Zisson by hand; the read-back sees it gone.
        world.zisson.sim.delete_user(world.zisson.guid, user["id"])
        row = await service.advance(request)
        assert row.state is ErasureState.COMPLETED
        assert row.outcome["zisson"]["outcome"] == "executed"
        assert all(
            t.link_id != f"erasure:{request}"
            for t in world.store.list_tasks(customer_id=CUSTOMER, open_only=True)
        )
        assert len(records) == 3
        assert "person1@fjord.no" not in emails_on_card(world)
    finally:
        world.store.close()
        await world.firestore.aclose()
