"""Links, members, fingerprints, tombstones and cursors, as load_state returns them."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from daemon.state import Member
from daemon.store import DuplicateMember, NotFound, Store
from daemon.store.schema import fingerprints, links
from tests.fixtures.store import OpenStore


def test_members_and_fingerprints_round_trip(store: Store) -> None:
    link = store.create_link("c1")
    store.set_member("c1", link, "zisson", "z-1", "v1", {"given_name": "fp-a", "emails": "fp-b"})
    store.set_member("c1", link, "firestore", "f-1", None, {"given_name": "fp-a"})

    state = store.load_state("c1")

    assert state.customer_id == "c1"
    assert set(state.links) == {link}
    assert dict(state.links[link].members) == {
        "zisson": Member(
            system="zisson",
            external_id="z-1",
            version="v1",
            fingerprints={"given_name": "fp-a", "emails": "fp-b"},
        ),
        "firestore": Member(
            system="firestore", external_id="f-1", version=None, fingerprints={"given_name": "fp-a"}
        ),
    }
    assert store.find_member("c1", "zisson", "z-1") == link
    assert store.find_member("c1", "zisson", "nope") is None
    assert store.find_member("c2", "zisson", "z-1") is None  # customers are separate
    assert store.load_state("c2").links == {}


def test_set_member_replaces_only_the_fingerprints_given(store: Store) -> None:
    link = store.create_link("c1")
    store.set_member("c1", link, "zisson", "z-1", "v1", {"given_name": "a", "emails": "b"})
    store.set_member("c1", link, "zisson", "z-1", "v2", {"emails": "c", "phones": "d"})

    member = store.load_state("c1").links[link].members["zisson"]
    assert member.version == "v2"
    assert member.fingerprints == {"given_name": "a", "emails": "c", "phones": "d"}


def test_set_member_can_point_at_a_replacement_record(store: Store) -> None:
    link = store.create_link("c1")
    store.set_member("c1", link, "zisson", "z-old", "v1", {})
    store.set_member("c1", link, "zisson", "z-new", "v1", {})
    assert store.find_member("c1", "zisson", "z-old") is None
    assert store.find_member("c1", "zisson", "z-new") == link


def test_a_record_cannot_be_claimed_by_a_second_link(store: Store) -> None:
    first, second = store.create_link("c1"), store.create_link("c1")
    store.set_member("c1", first, "zisson", "z-1", None, {"given_name": "a"})

    with pytest.raises(DuplicateMember) as raised:
        store.set_member("c1", second, "zisson", "z-1", None, {"given_name": "b"})

    assert raised.value.link_id == first
    assert store.find_member("c1", "zisson", "z-1") == first
    assert store.load_state("c1").links[second].members == {}
    # Another customer may well have a record with the same id.
    other = store.create_link("c2")
    store.set_member("c2", other, "zisson", "z-1", None, {})


def test_racing_claims_leave_one_owner(store: Store, open_store: OpenStore) -> None:
    stores = [store, open_store()]
    link_ids = [store.create_link("c1"), store.create_link("c1")]
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def claim(index: int) -> None:
        barrier.wait()
        try:
            stores[index].set_member("c1", link_ids[index], "zisson", "z-1", None, {"a": "b"})
            outcomes.append("ok")
        except DuplicateMember:
            outcomes.append("duplicate")

    threads = [threading.Thread(target=claim, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["duplicate", "ok"]


def test_set_member_on_a_foreign_link_is_refused_and_a_new_link_is_created(store: Store) -> None:
    link = store.create_link("c1")
    store.customer_key("c2")
    with pytest.raises(NotFound):
        store.set_member("c2", link, "zisson", "z-1", None, {})
    # The reconciler names new links itself (deterministically): set_member makes them.
    store.set_member("c1", "new-link", "zisson", "z-1", None, {})
    assert store.find_member("c1", "zisson", "z-1") == "new-link"
    assert store.load_state("c2").links == {}


def test_remove_member_drops_its_fingerprints_and_the_emptied_link(store: Store) -> None:
    link = store.create_link("c1")
    store.set_member("c1", link, "zisson", "z-1", None, {"given_name": "a"})
    store.set_member("c1", link, "outlook", "o-1", None, {"given_name": "a"})

    assert store.remove_member("c1", link, "zisson") is True
    assert set(store.load_state("c1").links[link].members) == {"outlook"}
    assert store.remove_member("c1", link, "zisson") is False  # already gone

    assert store.remove_member("c1", link, "outlook") is True
    assert store.load_state("c1").links == {}
    assert store.remove_member("c1", link, "outlook") is False
    with store._engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(fingerprints)) == 0
        assert conn.scalar(sa.select(sa.func.count()).select_from(links)) == 0


def test_remove_member_of_another_customers_link_does_nothing(store: Store) -> None:
    link = store.create_link("c1")
    store.set_member("c1", link, "zisson", "z-1", None, {})
    assert store.remove_member("c2", link, "zisson") is False
    assert store.find_member("c1", "zisson", "z-1") == link


def test_state_carries_open_disputes_tasks_and_tombstones(store: Store) -> None:
    link = store.create_link("c1")
    store.set_member("c1", link, "zisson", "z-1", None, {})
    dispute = store.open_dispute("c1", link, "emails", {"zisson": "x", "outlook": "y"})
    closed = store.open_dispute("c1", link, "phones", {"zisson": "x", "outlook": "y"})
    store.resolve_dispute(closed, winner="zisson", by="op")
    task = store.open_task("c1", "zisson", link, "update", "op-fp", "Set the title of …")
    store.add_tombstones("c1", ["t1", "t2", "t1"])
    store.add_tombstones("c1", ["t2", "t3"])

    state = store.load_state("c1")

    assert set(state.disputes) == {(link, "emails")}
    assert state.disputes[(link, "emails")].id == dispute
    assert state.disputes[(link, "emails")].fingerprints == {"zisson": "x", "outlook": "y"}
    assert set(state.tasks) == {(link, "zisson")}
    assert state.tasks[(link, "zisson")].id == task
    assert state.tasks[(link, "zisson")].op_fingerprint == "op-fp"
    assert state.tombstones == frozenset({"t1", "t2", "t3"})


def test_cursors(store: Store) -> None:
    assert store.get_cursor("c1", "outlook", "mailbox-a") is None
    store.set_cursor("c1", "outlook", "mailbox-a", "delta-1")
    store.set_cursor("c1", "outlook", "mailbox-a", "delta-2")
    store.set_cursor("c1", "outlook", "mailbox-b", "delta-9")
    assert store.get_cursor("c1", "outlook", "mailbox-a") == "delta-2"
    assert store.get_cursor("c2", "outlook", "mailbox-a") is None
    store.set_cursor("c1", "outlook", "mailbox-a", None)  # e.g. 410 Gone: read in full
    assert store.get_cursor("c1", "outlook", "mailbox-a") is None
    assert store.get_cursor("c1", "outlook", "mailbox-b") == "delta-9"
