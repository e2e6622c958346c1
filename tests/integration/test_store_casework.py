"""Quarantine, disputes, manual tasks, approvals and the operation journal."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from daemon.store import (
    DisputeStatus,
    JournalStatus,
    KeyDestroyed,
    NotFound,
    Store,
    TaskStatus,
)
from daemon.store.schema import approvals, manual_tasks, quarantine
from tests.fixtures.store import OpenStore, raw_bytes

PAYLOAD = "<Contact><FirstName>Bjørn Åge</FirstName><Number>+47 99 88 77 66</Number></Contact>"
INSTRUCTION = "Endre e-post for Bjørn Åge Ødegård til bjorn.odegard@example.no"


# -- quarantine -----------------------------------------------------------------------


def test_quarantine_upserts_and_keeps_the_payload_encrypted(store: Store, store_url: str) -> None:
    first = store.quarantine("c1", "zisson", "z-1", "phones: unparseable", PAYLOAD)
    again = store.quarantine("c1", "zisson", "z-1", "phones: unparseable; emails: empty", PAYLOAD)
    store.quarantine("c1", "zisson", "z-2", "kind: unknown", "<Contact/>")

    assert again == first
    (entry, other) = store.list_quarantine(customer_id="c1")
    assert entry.id == first
    assert entry.count == 2
    assert entry.reason == "phones: unparseable; emails: empty"
    assert entry.last_seen >= entry.first_seen
    assert other.external_id == "z-2"
    assert store.quarantine_payload(first) == PAYLOAD
    assert PAYLOAD.encode() not in raw_bytes(store, store_url, quarantine, "payload")
    assert "Bjørn".encode() not in raw_bytes(store, store_url, quarantine, "payload")


def test_records_without_an_id_are_told_apart_by_payload(store: Store) -> None:
    a = store.quarantine("c1", "zisson", None, "no ContactId", "<Contact>a</Contact>")
    b = store.quarantine("c1", "zisson", None, "no ContactId", "<Contact>b</Contact>")
    assert store.quarantine("c1", "zisson", None, "no ContactId", "<Contact>a</Contact>") == a
    assert a != b
    assert [q.count for q in store.list_quarantine()] == [2, 1]
    assert store.quarantine_payload(b) == "<Contact>b</Contact>"


def test_release_and_reopen(store: Store) -> None:
    store.quarantine("c1", "zisson", "z-1", "bad", "p1")
    store.quarantine("c1", "zisson", "z-2", "bad", "p2")
    store.quarantine("c1", "outlook", "z-1", "bad", "p3")

    assert store.release_quarantine("c1", "zisson", ["z-1", "z-9"]) == 1
    assert store.release_quarantine("c1", "zisson", ["z-1"]) == 0
    assert store.release_quarantine("c1", "zisson", []) == 0
    assert {(q.system, q.external_id) for q in store.list_quarantine()} == {
        ("zisson", "z-2"),
        ("outlook", "z-1"),
    }
    assert len(store.list_quarantine(open_only=False)) == 3

    store.quarantine("c1", "zisson", "z-1", "bad again", "p1")  # broken once more
    reopened = [
        q for q in store.list_quarantine() if q.external_id == "z-1" and q.system == "zisson"
    ]
    assert reopened[0].released_at is None
    assert reopened[0].count == 2


def test_release_handles_many_ids(store: Store) -> None:
    for i in range(3):
        store.quarantine("c1", "zisson", f"z-{i}", "bad", "p")
    seen = [f"z-{i}" for i in range(1200)]  # more than one IN (...) chunk
    assert store.release_quarantine("c1", "zisson", seen) == 3


def test_payload_is_unreadable_after_shredding(store: Store) -> None:
    entry = store.quarantine("c1", "zisson", "z-1", "bad", PAYLOAD)
    store.destroy_customer_key("c1")
    with pytest.raises(KeyDestroyed):
        store.quarantine_payload(entry)
    with pytest.raises(NotFound):
        store.quarantine_payload(10_000)


# -- disputes -------------------------------------------------------------------------


def test_open_dispute_is_idempotent_per_link_and_field(store: Store) -> None:
    link = store.create_link("c1")
    first = store.open_dispute("c1", link, "emails", {"zisson": "a", "firestore": "b"})
    again = store.open_dispute("c1", link, "emails", {"zisson": "a", "firestore": "c"})
    phones = store.open_dispute("c1", link, "phones", {"zisson": "a", "firestore": "b"})

    assert again == first
    assert phones != first
    disputes = {d.field: d for d in store.list_disputes(customer_id="c1")}
    assert disputes["emails"].fingerprints == {"zisson": "a", "firestore": "c"}

    assert store.resolve_dispute(first, winner="firestore", by="operator:kari") is True
    assert store.resolve_dispute(first, winner="zisson", by="operator:ola") is False
    resolved = next(d for d in store.list_disputes(open_only=False) if d.id == first)
    assert resolved.status is DisputeStatus.RESOLVED
    assert resolved.resolution == {"winner": "firestore", "by": "operator:kari"}
    assert resolved.resolved_at is not None
    with pytest.raises(NotFound):
        store.resolve_dispute(10_000, winner="zisson", by="x")

    # Once resolved, the same conflict coming back is a new dispute.
    assert store.open_dispute("c1", link, "emails", {"zisson": "d", "firestore": "e"}) != first


def test_a_decision_is_in_the_state_until_it_is_carried_out(store: Store) -> None:
    link = store.create_link("c1")
    decided = store.open_dispute("c1", link, "title", {"zisson": "a", "firestore": "b"})
    store.open_dispute("c1", link, "phones", {"zisson": "c", "firestore": "d"})
    closed = store.open_dispute("c1", link, "emails", {"zisson": "e"})
    store.resolve_dispute(decided, winner="zisson", by="operator:kari")
    store.close_disputes_for_link("c1", link, "emails")  # no winner: nothing to carry out

    state = store.load_state("c1")
    assert list(state.decisions) == [(link, "title")]
    decision = state.decisions[link, "title"]
    assert (decision.id, decision.winner) == (decided, "zisson")
    assert decision.fingerprints == {"zisson": "a", "firestore": "b"}
    assert list(state.disputes) == [(link, "phones")]
    assert store.load_state("c2").decisions == {}

    assert store.finish_decisions([decided, closed, decided], run_id="run-1") == 1
    assert store.finish_decisions([decided], run_id="run-2") == 0  # the first run stands
    assert store.load_state("c1").decisions == {}
    done = next(d for d in store.list_disputes(open_only=False) if d.id == decided)
    assert done.resolution is not None
    assert (done.resolution["winner"], done.resolution["carried_out"]["run"]) == ("zisson", "run-1")


def test_close_disputes_for_link(store: Store) -> None:
    link, other = store.create_link("c1"), store.create_link("c1")
    store.open_dispute("c1", link, "emails", {"zisson": "a"})
    store.open_dispute("c1", link, "phones", {"zisson": "a"})
    store.open_dispute("c1", other, "emails", {"zisson": "a"})

    assert store.close_disputes_for_link("c1", link, "emails") == 1
    assert store.close_disputes_for_link("c1", link) == 1
    assert store.close_disputes_for_link("c1", link) == 0
    assert [(d.link_id, d.field) for d in store.list_disputes()] == [(other, "emails")]
    closed = store.list_disputes(customer_id="c1", open_only=False)[0]
    assert closed.resolution == {"winner": None, "by": "pdsync"}


# -- manual tasks ---------------------------------------------------------------------


def test_open_task_is_idempotent_per_record_and_op_kind(store: Store, store_url: str) -> None:
    link = store.create_link("c1")
    task = store.open_task("c1", "zisson", link, "update", "fp-1", INSTRUCTION)
    assert store.open_task("c1", "zisson", link, "update", "fp-1", "ignored: same change") == task
    assert store.task_instruction(task) == INSTRUCTION

    assert store.open_task("c1", "zisson", link, "update", "fp-2", "the change moved on") == task
    assert store.task_instruction(task) == "the change moved on"
    (row,) = store.list_tasks(customer_id="c1")
    assert row.op_fingerprint == "fp-2"
    assert row.status is TaskStatus.OPEN

    delete = store.open_task("c1", "zisson", link, "delete", "fp-3", "Slett kontakten")
    assert delete != task
    assert "Ødegård".encode() not in raw_bytes(store, store_url, manual_tasks, "instruction")


def test_close_task(store: Store) -> None:
    link = store.create_link("c1")
    task = store.open_task("c1", "zisson", link, "update", "fp-1", INSTRUCTION)

    assert store.close_task(task, "read back: in place") is True
    assert store.close_task(task, "again") is False
    assert store.list_tasks() == []
    (done,) = store.list_tasks(open_only=False)
    assert done.status is TaskStatus.DONE
    assert done.note == "read back: in place"
    assert done.closed_at is not None
    with pytest.raises(NotFound):
        store.close_task(10_000)
    # The same change needed again later is a new task.
    assert store.open_task("c1", "zisson", link, "update", "fp-1", INSTRUCTION) != task


# -- approvals ------------------------------------------------------------------------


def test_approval_is_consumed_exactly_once(store: Store) -> None:
    small = store.approve_deletions("c1", 5, by="admin:kari", reason="ticket 42")
    big = store.approve_deletions("c1", 50, by="admin:kari", reason="ticket 43")

    assert store.consume_approval("c1", 20, "run-1") is True  # only `big` covers 20
    assert store.consume_approval("c1", 20, "run-2") is False
    assert store.consume_approval("c2", 1, "run-3") is False  # other customer's
    assert [a.id for a in store.list_approvals(customer_id="c1")] == [small]
    assert store.consume_approval("c1", 3, "run-4") is True
    assert store.consume_approval("c1", 0, "run-5") is False

    consumed = {a.id: a for a in store.list_approvals(open_only=False)}
    assert consumed[big].consumed_by_run == "run-1"
    assert consumed[small].consumed_by_run == "run-4"
    assert consumed[small].consumed_at is not None
    with pytest.raises(ValueError):
        store.approve_deletions("c1", -1, by="x", reason="y")


def test_concurrent_consumers_share_approvals_without_double_use(
    store: Store, open_store: OpenStore
) -> None:
    stores = [store, open_store(), open_store(), open_store()]
    for _ in range(2):
        store.approve_deletions("c1", 10, by="admin", reason="ticket")
    barrier = threading.Barrier(len(stores))
    won: list[bool] = []

    def consume(index: int) -> None:
        barrier.wait()
        won.append(stores[index].consume_approval("c1", 5, f"run-{index}"))

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(won) == [False, False, True, True]
    runs = [a.consumed_by_run for a in store.list_approvals(open_only=False)]
    assert len(set(runs)) == 2 and None not in runs


# PostgreSQL only: SQLite has no row locks, its writers take turns (BEGIN IMMEDIATE).
@pytest.mark.parametrize(
    "store_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_a_locked_approval_is_skipped_not_waited_for(store: Store) -> None:
    first = store.approve_deletions("c1", 10, by="admin", reason="ticket")
    second = store.approve_deletions("c1", 10, by="admin", reason="ticket")
    with store._engine.connect() as other:  # another instance, mid-consume of `first`
        other.execute(sa.select(approvals).where(approvals.c.id == first).with_for_update())
        assert store.consume_approval("c1", 5, "run-1") is True
        other.rollback()
    consumed = {a.id: a.consumed_by_run for a in store.list_approvals(open_only=False)}
    assert consumed == {first: None, second: "run-1"}


# -- op journal -----------------------------------------------------------------------


def test_journal(store: Store) -> None:
    begun = store.journal_begin(
        "op-1", run_id="r1", customer_id="c1", link_id="l1", system="zisson", kind="create"
    )
    assert begun.status is JournalStatus.PENDING
    assert begun.external_id is None
    store.journal_begin(
        "op-2", run_id="r1", customer_id="c1", link_id="l2", system="outlook", kind="update"
    )
    assert [j.op_id for j in store.pending_ops("c1")] == ["op-1", "op-2"]
    assert store.pending_ops("c2") == []

    store.journal_finish("op-1", "done", external_id="z-new")
    finished = store.journal_get("op-1")
    assert finished is not None
    assert finished.status is JournalStatus.DONE
    assert finished.external_id == "z-new"
    assert finished.finished_at is not None
    assert [j.op_id for j in store.pending_ops("c1")] == ["op-2"]
    assert store.journal_get("op-9") is None
    with pytest.raises(NotFound):
        store.journal_finish("op-9", "done")
    with pytest.raises(ValueError):
        store.journal_finish("op-2", "pending")


def test_journal_begin_is_idempotent(store: Store) -> None:
    args = {"customer_id": "c1", "link_id": "l1", "system": "zisson", "kind": "create"}
    store.journal_begin("op-1", run_id="r1", **args)
    # A crash, and the next run begins the same operation again.
    again = store.journal_begin("op-1", run_id="r2", **args)
    assert again.status is JournalStatus.PENDING
    assert again.run_id == "r2"

    store.journal_finish("op-1", JournalStatus.FAILED)
    retried = store.journal_begin("op-1", run_id="r3", **args)
    assert retried.status is JournalStatus.PENDING
    assert retried.finished_at is None

    store.journal_finish("op-1", JournalStatus.DONE, external_id="z-1")
    store.journal_finish("op-1", JournalStatus.DONE)  # keeps the external id
    done = store.journal_begin("op-1", run_id="r4", **args)
    assert done.status is JournalStatus.DONE  # done stays done: do not apply it twice
    assert done.run_id == "r3"
    assert done.external_id == "z-1"
    with store._engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM op_journal")) == 1
