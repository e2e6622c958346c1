"""Directory sync end to end: the real Firestore emulator, the Zisson simulator, a store.

Every check looks at the systems through their own APIs (Google's client, the
simulator's state), never through pdsync.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from google.cloud import firestore

from daemon import normalize
from daemon.config import DeletionThresholdConfig, FieldPolicyConfig, SyncConfig
from daemon.domain import ContactKind, ContactRecord, PhoneType
from daemon.policy import ForeignChange
from tests.fixtures.firestore import FirestoreEnv
from tests.fixtures.zisson import ZissonConnect
from tests.integration.sync_world import SyncWorld, opened

pytestmark = pytest.mark.emulator

NAMES = [("Åse", "Bjørnstad"), ("Kjærsti", "Løvås"), ("Ørjan", "Ødegård"), ("ÆRLIG", "ÅSHEIM")]
FORMATS = ["22 33 44 55", "+47 912 34 567", "0047 22 33 44 56", "22334457", "+47 41234567"]


def person(i: int, **overrides: object) -> ContactRecord:
    given, family = NAMES[i % len(NAMES)]
    given = given if i < len(NAMES) else f"{given}{i}"
    values: dict[str, object] = dict(
        system="firestore",
        external_id="",
        kind=ContactKind.PERSON,
        given_name=given,
        family_name=family,
        display_name=f"{given} {family}",
        title="Rådgiver",
        department="Økonomi",
        emails=(f"person{i}@fjord.no",),
        phones=(normalize.phone(f"9{i:07d}", PhoneType.MOBILE),),
        notes="Foretrekker SMS",
    )
    values.update(overrides)
    return ContactRecord(**values)  # type: ignore[arg-type]


async def _world(
    tmp_path: Path,
    firestore_env: FirestoreEnv,
    zisson_connect: ZissonConnect,
    firestore_client: firestore.Client,
    sync: SyncConfig | None = None,
) -> AsyncIterator[SyncWorld]:
    zisson = zisson_connect("json", write_mode="api")
    async with opened(tmp_path, firestore_env, zisson, firestore_client, sync=sync) as world:
        yield world


@pytest.fixture
async def world(
    tmp_path: Path,
    firestore_env: FirestoreEnv,
    zisson_connect: ZissonConnect,
    firestore_client: firestore.Client,
) -> AsyncIterator[SyncWorld]:
    async for w in _world(tmp_path, firestore_env, zisson_connect, firestore_client):
        yield w


def zisson_by_email(world: SyncWorld) -> dict[str, dict[str, object]]:
    return {u["emails"][0]: u for u in world.users()}


async def test_new_card_contacts_reach_zisson_with_letters_and_numbers_exact(
    world: SyncWorld,
) -> None:
    records = [
        person(
            i,
            phones=(
                normalize.phone(FORMATS[i], PhoneType.WORK),
                normalize.phone(FORMATS[-1 - i], PhoneType.MOBILE),
            ),
        )
        for i in range(4)
    ]
    await world.put_card(records)
    report = await world.sync()
    assert report.status == "completed"
    assert report.applied["zisson.create.applied"] == 4
    users = zisson_by_email(world)
    for record in records:
        user = users[record.emails[0]]
        assert (user["firstName"], user["lastName"], user["displayName"]) == (
            record.given_name,
            record.family_name,
            record.display_name,
        )
        assert [p["number"] for p in user["phoneNumbers"]] == [p.number for p in record.phones]
        assert user["title"] == "Rådgiver" and user["department"] == "Økonomi"
    assert await world.settle() <= 2
    assert len(world.users()) == 4  # nothing created twice


async def test_matching_contacts_are_linked_not_duplicated_whatever_the_phone_format(
    world: SyncWorld,
) -> None:
    card = [person(i, phones=(normalize.phone(FORMATS[i], PhoneType.WORK),)) for i in range(3)]
    await world.put_card(card)
    for i in range(len(card)):
        digits = "".join(ch for ch in FORMATS[i] if ch.isdigit())[-8:]
        world.put_user(person(i, phones=(normalize.phone(digits, PhoneType.WORK),)))
    world.zisson.sim.reset_counters()
    report = await world.sync()
    assert report.plan is not None and report.plan.situations["zisson"] == {"unlinked": 3}
    assert world.zisson.sim.counters["creates"] == 0 and world.zisson.sim.counters["updates"] == 0
    assert len(world.users()) == 3


async def test_a_title_changed_on_the_card_reaches_zisson_and_nothing_else_changes(
    world: SyncWorld,
) -> None:
    [stored] = await world.put_card([person(0)])
    await world.settle()
    before = zisson_by_email(world)["person0@fjord.no"]
    world.contacts_ref().document(stored.external_id).update({"title": "Styreleder"})
    report = await world.sync()
    assert report.applied == Counter({"zisson.update.applied": 1})
    after = zisson_by_email(world)["person0@fjord.no"]
    assert after["title"] == "Styreleder"
    assert {k: v for k, v in after.items() if k not in ("title", "version")} == {
        k: v for k, v in before.items() if k not in ("title", "version")
    }
    assert await world.settle() <= 2


async def test_a_sync_with_nothing_to_do_is_quiet_and_one_that_changed_something_is_not(
    world: SyncWorld,
) -> None:
    await world.put_card([person(0)])
    first = await world.sync()
    assert first.applied and not world.store.get_run(first.run_id).quiet  # type: ignore[union-attr]
    await world.settle()
    nothing = await world.sync()
    assert not any(nothing.applied.values())
    assert world.store.get_run(nothing.run_id).quiet  # type: ignore[union-attr]
    # A plan asked for is looked at: never quiet.
    planned = await world.service.sync(world.customer, trigger="test", plan_only=True)
    assert not world.store.get_run(planned.run_id).quiet  # type: ignore[union-attr]


async def test_a_phone_changed_in_zisson_is_put_back_when_the_card_is_authority(
    world: SyncWorld,
) -> None:
    await world.put_card([person(0)])
    await world.settle()
    user = zisson_by_email(world)["person0@fjord.no"]
    world.zisson.sim.patch_user(
        world.zisson.guid,
        user["id"],
        {"phoneNumbers": [{"number": "99 88 77 66", "type": "mobile"}]},
    )
    report = await world.sync()
    assert report.applied == Counter({"zisson.update.applied": 1})
    assert [p["number"] for p in zisson_by_email(world)["person0@fjord.no"]["phoneNumbers"]] == [
        "90000000"
    ]
    card = next(iter(world.card().values()))
    assert [p["number"] for p in card["phones"]] == ["90000000"]


async def test_a_phone_changed_in_zisson_is_disputed_when_the_policy_says_so(
    tmp_path: Path,
    firestore_env: FirestoreEnv,
    zisson_connect: ZissonConnect,
    firestore_client: firestore.Client,
) -> None:
    policy = SyncConfig(
        fields={"phones": FieldPolicyConfig(on_foreign_change=ForeignChange.DISPUTE)}
    )
    async for world in _world(tmp_path, firestore_env, zisson_connect, firestore_client, policy):
        await world.put_card([person(0)])
        await world.settle()
        user = zisson_by_email(world)["person0@fjord.no"]
        world.zisson.sim.patch_user(
            world.zisson.guid,
            user["id"],
            {"phoneNumbers": [{"number": "99887766", "type": "mobile"}]},
        )
        for _ in range(2):
            report = await world.sync()
            assert report.applied == Counter()
        disputes = world.store.list_disputes(customer_id="kunde-01")
        assert [(d.field, sorted(d.fingerprints)) for d in disputes] == [
            ("phones", ["firestore", "zisson"])
        ]
        assert [
            p["number"] for p in zisson_by_email(world)["person0@fjord.no"]["phoneNumbers"]
        ] == ["99887766"]


async def titles_edited_on_both_sides(world: SyncWorld) -> tuple[ContactRecord, dict[str, Any]]:
    """A synced person whose title is then set to "Leder A" on the card and "Leder B"
    in Zisson: the stored card record and the Zisson user."""
    [stored] = await world.put_card([person(0)])
    await world.settle()
    user = zisson_by_email(world)["person0@fjord.no"]
    world.contacts_ref().document(stored.external_id).update({"title": "Leder A"})
    world.zisson.sim.patch_user(world.zisson.guid, user["id"], {"title": "Leder B"})
    return stored, user


async def test_edits_on_both_sides_become_one_dispute_and_neither_value_is_lost(
    world: SyncWorld,
) -> None:
    stored, user = await titles_edited_on_both_sides(world)
    for _ in range(3):
        await world.sync()
    disputes = world.store.list_disputes(customer_id="kunde-01")
    assert [d.field for d in disputes] == ["title"]
    assert world.card()[stored.external_id]["title"] == "Leder A"
    assert zisson_by_email(world)["person0@fjord.no"]["title"] == "Leder B"
    # Someone settles it in Zisson by hand: the dispute closes itself.
    world.zisson.sim.patch_user(world.zisson.guid, user["id"], {"title": "Leder A"})
    await world.settle()
    assert world.store.list_disputes(customer_id="kunde-01") == []


async def test_a_resolved_dispute_puts_the_winners_value_in_every_system(
    world: SyncWorld,
) -> None:
    stored, _ = await titles_edited_on_both_sides(world)
    await world.sync()
    [dispute] = world.store.list_disputes(customer_id="kunde-01")
    assert world.store.resolve_dispute(dispute.id, winner="zisson", by="kari")

    report = await world.sync()
    assert report.applied == Counter({"firestore.update.applied": 1})
    await world.settle()
    assert world.card()[stored.external_id]["title"] == "Leder B"  # read from Firestore
    assert zisson_by_email(world)["person0@fjord.no"]["title"] == "Leder B"
    assert world.store.list_disputes(customer_id="kunde-01") == []
    [done] = world.store.list_disputes(customer_id="kunde-01", open_only=False)
    assert done.resolution is not None and done.resolution["carried_out"]
    # Done with: a later edit on the card goes to Zisson as usual.
    world.contacts_ref().document(stored.external_id).update({"title": "Leder C"})
    await world.settle()
    assert zisson_by_email(world)["person0@fjord.no"]["title"] == "Leder C"


async def test_credentials_refused_is_an_incident(world: SyncWorld) -> None:
    await world.put_card([person(0)])
    await world.settle()
    world.zisson.sim.fail_next(10, status=401)  # the jwt, and the refresh token, refused
    report = await world.sync()
    assert report.status == "failed"
    events = {e.event: e for e in world.store.run_events(run_id=report.run_id)}
    incident = events["incident_auth_failed"]
    assert (incident.level, incident.system) == ("error", "zisson")
    assert "sync_failed" in events


async def test_a_contact_deleted_from_the_card_leaves_zisson(world: SyncWorld) -> None:
    stored = await world.put_card([person(i) for i in range(5)])
    await world.settle()
    world.contacts_ref().document(stored[2].external_id).delete()
    report = await world.sync()
    assert report.applied == Counter({"zisson.delete.applied": 1})
    assert sorted(zisson_by_email(world)) == sorted(f"person{i}@fjord.no" for i in (0, 1, 3, 4))
    assert world.store.counts("kunde-01")["links"] == 4


async def test_a_run_over_the_deletion_threshold_stops_until_approved(
    tmp_path: Path,
    firestore_env: FirestoreEnv,
    zisson_connect: ZissonConnect,
    firestore_client: firestore.Client,
) -> None:
    policy = SyncConfig(deletion_threshold=DeletionThresholdConfig(max_count=3, max_share=0.5))
    async for world in _world(tmp_path, firestore_env, zisson_connect, firestore_client, policy):
        stored = await world.put_card([person(i) for i in range(10)])
        await world.settle()
        for record in stored[:4]:
            world.contacts_ref().document(record.external_id).delete()
        report = await world.sync()
        assert report.status == "awaiting_approval"
        assert len(world.users()) == 10
        assert [e.event for e in world.store.run_events(run_id=report.run_id)][-1:] == [
            "incident_mass_deletion_held"
        ]
        world.store.approve_deletions("kunde-01", 4, by="ops", reason="ticket 17")
        report = await world.sync()
        assert report.status == "completed"
        assert len(world.users()) == 6
        # The approval was used up: the next mass deletion stops again.
        for record in stored[4:8]:
            world.contacts_ref().document(record.external_id).delete()
        assert (await world.sync()).status == "awaiting_approval"


async def test_a_malformed_zisson_record_is_quarantined_and_the_rest_of_the_run_completes(
    world: SyncWorld,
) -> None:
    await world.put_card([person(i) for i in range(3)])
    world.zisson.sim.put_raw(
        world.zisson.guid,
        {
            "id": "bad-1",
            "firstName": "Åse",
            "emails": "not-a-list@fjord.no",
            "phoneNumbers": "22334455",
        },
    )
    report = await world.sync()
    assert report.status == "completed"
    assert report.applied["zisson.create.applied"] == 3
    await world.settle()
    again = await world.sync()  # nothing to change, but a record still held: not quiet
    assert not any(again.applied.values())
    assert not world.store.get_run(again.run_id).quiet  # type: ignore[union-attr]
    [row] = world.store.list_quarantine(customer_id="kunde-01")
    assert (row.system, row.external_id) == ("zisson", "bad-1")
    assert "@" not in row.reason and "2233" not in row.reason
    assert "not-a-list@fjord.no" in world.store.quarantine_payload(row.id)  # kept, encrypted
    database = Path(world.settings.store.url.removeprefix("sqlite:///"))
    world.store.close()
    for path in database.parent.glob(database.name + "*"):
        assert b"not-a-list@fjord.no" not in path.read_bytes()


async def test_with_faults_injected_at_ten_percent_the_sync_still_converges(
    world: SyncWorld,
) -> None:
    await world.put_card([person(i) for i in range(30)])
    world.zisson.sim.set_faults(
        error_rate=0.1, rate_429=0.1, drop_rate=0.05, latency_ms=2, retry_after=0.05, seed=7
    )
    runs = await world.settle(limit=10)
    counters = world.zisson.sim.counters
    assert counters["5xx"] + counters["429"] + counters["drops"] > 0
    emails = Counter(u["emails"][0] for u in world.users())
    assert len(emails) == 30 and set(emails.values()) == {1}
    assert runs <= 10


@pytest.mark.slow
async def test_a_killed_and_restarted_sync_creates_no_duplicates(
    world: SyncWorld, tmp_path: Path
) -> None:
    await world.put_card([person(i) for i in range(60)])
    config = world.config_file(tmp_path / "pdsync.toml", log_format="json")
    world.zisson.sim.set_faults(latency_ms=40)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for kill_after in (5, 25, 45):
        before = world.zisson.sim.counters["creates"]
        process = subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "sync", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + 60
        while world.zisson.sim.counters["creates"] < kill_after and process.poll() is None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert world.zisson.sim.counters["creates"] > before  # it really was mid-apply
    world.zisson.sim.set_faults()
    world.store.mark_interrupted_runs()
    await world.settle()
    emails = Counter(u["emails"][0] for u in world.users())
    assert len(emails) == 60 and set(emails.values()) == {1}
    assert world.store.counts("kunde-01")["links"] == 60
