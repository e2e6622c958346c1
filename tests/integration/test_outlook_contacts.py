"""The contact folder as a directory, against the Graph simulator: CRUD, the read-back
law, idempotent replays, versions, and delta with an expired link."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from connectors.outlook import ResyncRequired
from connectors.outlook.mapping import FIELDS
from daemon.domain import ContactRecord, Operation, OpKind, OpStatus, Phone, PhoneType
from sandbox.graph_sim import GraphSimulator
from tests.integration import test_outlook_harness as harness
from tests.integration.test_outlook_harness import Connect, OutlookWorld
from tests.integration.test_sync_loop import calls_on_this_thread

NAMES = ["Åse", "Bjørn", "Kari", "Øystein", "Ærlige", "Nordmann", "Bjørnstad-Lie", "O'Hara", ""]
NUMBERS = ["22 33 44 55", "+47 412 34 567", "0047 900 11 222", "ring meg", " 67 00 00 01 "]

# Fixtures shared by the test_outlook_* modules (tests/fixtures/ is another engineer's).
outlook = harness.outlook
outlook_connect = harness.outlook_connect


def record(rng: random.Random) -> ContactRecord:
    return ContactRecord(
        system="firestore",
        external_id="",
        given_name=rng.choice(NAMES),
        family_name=rng.choice(NAMES),
        display_name=rng.choice(["", "Resepsjonen", "Åse B."]),
        title=rng.choice(["", "Daglig leder", "Sjåfør\r\nlager"]),
        department=rng.choice(["", "Økonomi"]),
        emails=tuple(
            rng.sample(["a@x.no", "b@x.no", "ÆØÅ@x.no", " c@x.no", "d@x.no"], rng.randint(0, 5))
        ),
        phones=tuple(
            Phone(number=rng.choice(NUMBERS), type=rng.choice(list(PhoneType)))
            for _ in range(rng.randint(0, 6))
        ),
        notes=rng.choice(["", "Ring før 10", "Linje 1\nLinje 2 – æøå"]),
    )


def on_fields(item: ContactRecord) -> dict[str, Any]:
    return {name: value for name, value in item.values().items() if name in FIELDS}


def create(link: str, item: ContactRecord) -> Operation:
    return Operation(
        op_id=Operation.make_id("create", link),
        kind=OpKind.CREATE,
        system="outlook",
        link_id=link,
        values=item.values(),
    )


async def test_write_any_record_read_it_back_get_its_projection(outlook: OutlookWorld) -> None:
    rng = random.Random(7)
    wanted = {f"link-{i}": record(rng) for i in range(45)}  # three $batch envelopes
    ops = [create(link, item) for link, item in wanted.items()]
    results = await outlook.connector.apply(outlook.customer, ops)
    assert [r.status for r in results] == [OpStatus.APPLIED] * len(ops)
    by_id = {r.external_id: link for r, link in zip(results, wanted, strict=True)}
    read = await outlook.connector.read(outlook.customer)
    assert read.rejected == ()
    assert len(read.records) == len(wanted)
    for held in read.records:
        assert on_fields(held) == on_fields(
            outlook.connector.project(wanted[by_id[held.external_id]])
        )
        assert held.version and held.version.startswith('W/"')
    assert outlook.sim.counters["batches"] >= 3


async def test_a_replayed_create_makes_nothing_twice(outlook: OutlookWorld) -> None:
    item = record(random.Random(1))
    op = create("link-replay", item)
    first = await outlook.connector.apply(outlook.customer, [op])
    again = await outlook.connector.apply(outlook.customer, [op, create("link-other", item)])
    assert again[0].status is OpStatus.APPLIED
    assert again[0].external_id == first[0].external_id
    assert len(outlook.contacts()) == 2
    assert [c["categories"] for c in outlook.contacts()] == [[], []]  # nothing a user sees
    assert outlook.links() == ["link-other", "link-replay"]


async def test_a_create_whose_answer_is_lost_is_found_not_repeated(outlook: OutlookWorld) -> None:
    await outlook.connector.read(outlook.customer)  # the folder exists
    outlook.sim.fail_next(1, status="drop")  # the POST is done, its answer lost
    (result,) = await outlook.connector.apply(
        outlook.customer, [create("link-drop", record(random.Random(2)))]
    )
    assert result.status is OpStatus.APPLIED and result.external_id
    assert len(outlook.contacts()) == 1


async def test_update_with_versions_conflicts_and_replays(outlook: OutlookWorld) -> None:
    (made,) = await outlook.connector.apply(
        outlook.customer,
        [
            create(
                "link-u",
                ContactRecord(system="x", external_id="", given_name="Åse", family_name="Berg"),
            )
        ],
    )
    assert made.record is not None and made.record.display_name == "Åse Berg"
    update = Operation(
        op_id="u1",
        kind=OpKind.UPDATE,
        system="outlook",
        link_id="link-u",
        external_id=made.external_id,
        values={"family_name": "Bjørnstad", "display_name": "", "title": "Sjåfør"},
        expected_version=made.version,
    )
    (updated,) = await outlook.connector.apply(outlook.customer, [update])
    assert updated.status is OpStatus.APPLIED and updated.version != made.version
    assert updated.record is not None
    # An empty display name is composed from the names, as the projection says.
    assert (updated.record.display_name, updated.record.title) == ("Åse Bjørnstad", "Sjåfør")
    (replayed,) = await outlook.connector.apply(
        outlook.customer, [update]
    )  # stale version, same values
    assert replayed.status is OpStatus.APPLIED

    outlook.sim.patch_contact(outlook.mailbox, str(made.external_id), {"jobTitle": "Lagersjef"})
    read = await outlook.connector.read(outlook.customer)
    assert read.records[0].version not in (made.version, updated.version)  # changed in Outlook
    stale = Operation(
        op_id="u2",
        kind=OpKind.UPDATE,
        system="outlook",
        link_id="link-u",
        external_id=made.external_id,
        values={"title": "Daglig leder"},
        expected_version=updated.version,
    )
    (conflict,) = await outlook.connector.apply(outlook.customer, [stale])
    assert conflict.status is OpStatus.CONFLICT
    assert conflict.record is not None and conflict.record.title == "Lagersjef"


async def test_delete_and_delete_again(outlook: OutlookWorld) -> None:
    (made,) = await outlook.connector.apply(
        outlook.customer, [create("link-d", record(random.Random(3)))]
    )
    delete = Operation(
        op_id="d1",
        kind=OpKind.DELETE,
        system="outlook",
        link_id="link-d",
        external_id=made.external_id,
        expected_version=made.version,
    )
    first, second = await outlook.connector.apply(outlook.customer, [delete, delete])
    assert (first.status, second.status) == (OpStatus.APPLIED, OpStatus.APPLIED)  # 404: gone
    assert outlook.contacts() == []
    missing = Operation(
        op_id="u",
        kind=OpKind.UPDATE,
        system="outlook",
        link_id="l",
        external_id=made.external_id,
        values={"title": "x"},
    )
    (result,) = await outlook.connector.apply(outlook.customer, [missing])
    assert result.status is OpStatus.NOT_FOUND


async def test_delta_and_an_expired_link(outlook: OutlookWorld) -> None:
    rng = random.Random(11)
    ops = [create(f"link-{i}", record(rng)) for i in range(25)]
    made = await outlook.connector.apply(outlook.customer, ops)
    connector, customer = outlook.connector, outlook.customer
    first, removed, cursor = await connector.changes(customer, None)
    assert len(first.records) == 25 and removed == [] and first.cursor == cursor

    changed_id, gone_id = str(made[0].external_id), str(made[1].external_id)
    outlook.sim.patch_contact(outlook.mailbox, changed_id, {"jobTitle": "Ny tittel"})
    outlook.sim.delete_contact(outlook.mailbox, gone_id)
    later, removed, cursor = await connector.changes(customer, cursor)
    assert [r.external_id for r in later.records] == [changed_id]
    assert later.records[0].title == "Ny tittel" and removed == [gone_id]

    outlook.sim.expire_delta_tokens()
    with pytest.raises(ResyncRequired):
        await connector.changes(customer, cursor)
    full, removed, cursor = await connector.changes(customer, None)  # the resync
    ids = [r.external_id for r in full.records]
    assert len(ids) == len(set(ids)) == 24 and removed == []
    assert set(ids) == {r.external_id for r in (await connector.read(customer)).records}
    quiet, removed, _ = await connector.changes(customer, cursor)
    assert quiet.records == () and removed == []


@pytest.mark.parametrize("status", [410, 404])
async def test_an_expired_round_midway_starts_again(
    graph_sim: GraphSimulator, outlook_connect: Connect, status: int
) -> None:
    world = outlook_connect(graph_sim, page_size=5)  # five delta pages for 25 contacts
    ops = [create(f"l{i}", record(random.Random(i))) for i in range(25)]
    await world.connector.apply(world.customer, ops)
    graph_sim.expire_delta_tokens(status, after_pages=2)  # the round's own next link dies
    result, removed, _ = await world.connector.changes(world.customer, None)
    ids = [r.external_id for r in result.records]
    assert len(ids) == len(set(ids)) == 25 and removed == []
    # Two pages, refused, then a whole round of five from the start.
    assert graph_sim.counters["GET /users/{user}/contactFolders/{cfolder}/contacts/delta"] == 8


async def test_creates_through_faults_are_neither_lost_nor_doubled(outlook: OutlookWorld) -> None:
    await outlook.connector.read(outlook.customer)  # the folder exists
    outlook.sim.set_faults(error_rate=0.3, rate_429=0.1, retry_after=0, seed=3)
    rng = random.Random(5)
    ops = [create(f"link-f{i}", record(rng)) for i in range(40)]
    results = await outlook.connector.apply(outlook.customer, ops)
    outlook.sim.set_faults()
    assert [r.status for r in results] == [OpStatus.APPLIED] * 40
    assert outlook.links() == sorted(op.link_id for op in ops)  # each exactly once
    assert outlook.sim.counters["5xx"] > 0


async def test_a_read_maps_the_folders_contacts_off_the_event_loop(outlook: OutlookWorld) -> None:
    rng = random.Random(7)
    ops = [create(f"link-{i}", record(rng)) for i in range(30)]
    assert all(
        r.status is OpStatus.APPLIED for r in await outlook.connector.apply(outlook.customer, ops)
    )

    with calls_on_this_thread({"from_contact"}) as on_loop:
        read = await outlook.connector.read(outlook.customer)
        changed, _, _ = await outlook.connector.changes(outlook.customer, None)

    assert len(read.records) == len(changed.records) == 30
    assert on_loop == Counter()
