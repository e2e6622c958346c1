"""Reading a long history back: `pdsync log` and the dashboard ask for the recent events
of a store that keeps half a year of them (issue 15); what they read grows with what
they ask for, not with what is kept."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from daemon.store import EventLevel, Store
from daemon.store.schema import run_events


def old_events(store: Store, run_id: str, n: int, *, at: datetime, level: str = "info") -> None:
    """`n` events of `run_id` stamped `at` (a long history, written in one go)."""
    with store._engine.begin() as conn:
        conn.execute(
            sa.insert(run_events),
            [
                {
                    "run_id": run_id,
                    "ts": at,
                    "level": level,
                    "customer_id": "acme",
                    "system": "zisson",
                    "event": "updated",
                    "detail": {"n": i},
                }
                for i in range(n)
            ],
        )


@contextmanager
def sqlite_steps(store: Store) -> Iterator[list[int]]:
    """SQLite's virtual machine steps (in thousands) taken by the store's statements in
    the block: the work its queries do, however busy the machine is."""
    counted = [0]
    counting: list[Any] = []

    def step() -> int:
        counted[0] += 1
        return 0

    def before(conn: sa.Connection, *_: object) -> None:
        raw = conn.connection.driver_connection
        assert raw is not None
        if raw not in counting:
            raw.set_progress_handler(step, 1000)
            counting.append(raw)

    sa.event.listen(store._engine, "before_cursor_execute", before)
    try:
        yield counted
    finally:
        sa.event.remove(store._engine, "before_cursor_execute", before)
        for raw in counting:
            raw.set_progress_handler(None, 1000)


def test_recent_events_are_found_without_reading_the_old_ones(store: Store) -> None:
    now = datetime.now(UTC)
    run = store.start_run("sync", customer_id="acme", trigger="test")
    kept = 20_000 if store.dialect == "sqlite" else 200
    old_events(store, run, kept, at=now - timedelta(days=100))
    recent = [
        store.add_event(run, "updated", level=lv, customer_id="acme", detail={"i": i})
        for i, lv in enumerate(["info", "warning", "info", "error"])
    ]

    def reads() -> tuple[list[int], ...]:
        since = now - timedelta(hours=1)
        return (
            [e.id for e in store.run_events(since=since)],
            [e.id for e in store.run_events(since=since, min_level="warning", limit=500)],
            [e.id for e in store.run_events(since=since, limit=2)],
            [e.id for e in store.run_events(customer_id="acme", since=since)],
            [e.id for e in store.run_events(run_id=run, since=since)],
        )

    assert reads() == (recent, [recent[1], recent[3]], recent[2:], recent, recent)
    assert store.run_events(since=now + timedelta(hours=1)) == []
    assert len(store.run_events(since=now - timedelta(days=101), limit=50_000)) == kept + 4
    if store.dialect == "sqlite":
        with sqlite_steps(store) as steps:
            reads()
        # Reading every kept event takes ten steps or more each: these take a few
        # hundred in all (a few thousand at most, counted in thousands).
        assert steps[0] < 5, steps


def test_events_since_a_moment_are_exact_when_ids_and_times_disagree(store: Store) -> None:
    """Two instances' clocks differ: an event written later (a higher id) can carry an
    earlier time. Every event at or after `since` is found, none before it."""
    now = datetime.now(UTC)
    run = store.start_run("sync", customer_id="acme", trigger="test")
    old_events(store, run, 3, at=now - timedelta(minutes=5))  # at the cutoff's side
    old_events(store, run, 2, at=now - timedelta(minutes=20))  # later ids, earlier times
    old_events(store, run, 2, at=now - timedelta(minutes=1), level="warning")
    found = store.run_events(since=now - timedelta(minutes=10))
    assert [e.ts >= now - timedelta(minutes=10) for e in found] == [True] * 5
    assert len(store.run_events(since=now - timedelta(minutes=30))) == 7
    warned = store.run_events(since=now - timedelta(minutes=10), min_level=EventLevel.WARNING)
    assert [e.level for e in warned] == [EventLevel.WARNING] * 2


def test_a_run_is_found_by_the_start_of_its_id(store: Store) -> None:
    ids = [store.start_run("sync", customer_id="acme", trigger="test") for _ in range(40)]
    for run_id in ids:
        assert store.find_runs(run_id) == [run_id]
        assert run_id in store.find_runs(run_id[:8])
    shared = next(
        (a, b) for a in ids for b in ids if a < b and a[0] == b[0]
    )  # 40 hex ids: two share a first character
    assert set(store.find_runs(shared[0][0], limit=100)) >= set(shared)
    assert len(store.find_runs(shared[0][0], limit=1)) == 1
    assert store.find_runs("zz") == []
    assert store.find_runs("%") == [] and store.find_runs("_") == []
    assert store.find_runs("f") == sorted(i for i in ids if i.startswith("f"))[:2]
    last = max(ids)
    assert store.find_runs(last[:9]) == [last]  # up to its first dash
    lettered = next(i for i in ids if not i[:8].isdigit())  # upper case is another prefix
    assert store.find_runs(lettered[:8].upper()) == []  # ids are lowercase, as shown


def test_the_customer_list_is_read_in_a_few_statements(store: Store) -> None:
    """The dashboard's overview lists every customer with its last sync and counts: the
    same answers as asking customer by customer."""
    customers = [f"kunde-{n}" for n in range(7)]
    for n, customer in enumerate(customers[:5]):
        links = [str(uuid.uuid4()) for _ in range(n + 1)]
        store.set_members(
            customer,
            [
                (link, system, f"{system}-{link}", "1", {"name": "f"})
                for link in links
                for system in ("firestore", "zisson")[: 1 + n % 2]
            ],
        )
        for kind in ["sync", "retention", "sync", "plan"][: n + 1]:
            run = store.start_run(kind, customer_id=customer, trigger="test")
            store.finish_run(run, "completed", {})
        if n % 2:
            store.open_dispute(customer, links[0], "title", {"zisson": "a", "firestore": "b"})
            store.open_task(customer, "zisson", links[0], "update", "op", "call them")
        if n >= 3:
            store.quarantine(customer, "zisson", f"z{n}", "phones: unparseable", "{}")
            store.journal_attempt(
                f"op-{n}",
                run_id=run,
                customer_id=customer,
                link_id=links[0],
                system="zisson",
                kind="update",
            )
    store.start_run("retention", customer_id=customers[5], trigger="test")  # no sync

    latest = store.latest_runs([*customers, customers[0]], kind="sync")
    for customer in customers:
        newest = next(
            (r for r in store.list_runs(customer_id=customer, limit=100) if r.kind == "sync"),
            None,
        )
        assert latest.get(customer) == newest
    assert store.customer_counts(customers) == {c: store.counts(c) for c in customers}
    sent: list[str] = []

    def count(conn: sa.Connection, cursor: object, statement: str, *_: object) -> None:
        sent.append(statement)

    sa.event.listen(store._engine, "before_cursor_execute", count)
    try:
        store.latest_runs(customers, kind="sync")
        store.customer_counts(customers)
    finally:
        sa.event.remove(store._engine, "before_cursor_execute", count)
    selects = [s for s in sent if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) <= 2 + 6, selects
    assert store.latest_runs([], kind="sync") == {} and store.customer_counts([]) == {}
    if store.dialect == "sqlite":
        many = [f"kunde-{n}" for n in range(600)]  # past SQLite's compound SELECT limit
        assert store.latest_runs(many, kind="sync").keys() == latest.keys()
        assert store.customer_counts(many)["kunde-3"] == store.counts("kunde-3")


def test_a_month_of_runs_is_counted_without_reading_each(store: Store) -> None:
    """The processing report's activity: syncs counted in the store, only those that
    changed something read (at a sync a minute a month is 43,200 runs)."""
    from daemon.report import _activity

    made: list[tuple[str, str, dict[str, object]]] = [
        ("sync", "completed", {"applied": {}}),
        ("sync", "completed", {"applied": {"zisson.update.applied": 2, "zisson.x.failed": 1}}),
        ("sync", "failed", {"applied": {}, "error": "boom"}),
        ("sync", "failed", {"applied": {"outlook.create.applied": 1}}),
        ("sync", "awaiting_approval", {"applied": {}}),
        ("retention", "completed", {"outlook": {"expired": 3, "results": {"applied": 3}}}),
        ("plan", "completed", {"applied": {}}),
    ]
    for kind, status, summary in made:
        run = store.start_run(kind, customer_id="acme", trigger="test")
        store.finish_run(run, status, summary)
    other = store.start_run("sync", customer_id="fjord", trigger="test")
    store.finish_run(other, "completed", {"applied": {"zisson.update.applied": 5}})
    store.start_run("sync", customer_id="acme", trigger="test")  # still running
    now = datetime.now(UTC)

    changed = store.list_runs(customer_id="acme", kind="sync", applied_only=True)
    assert sorted((r.summary["applied"] for r in changed), key=str) == sorted(
        [{"zisson.update.applied": 2, "zisson.x.failed": 1}, {"outlook.create.applied": 1}],
        key=str,
    )
    tally = store.tally_runs(customer_id="acme", since=now - timedelta(hours=1))
    assert {k: t.runs for k, t in tally.items()} == {
        ("sync", "completed"): 2,
        ("sync", "failed"): 2,
        ("sync", "awaiting_approval"): 1,
        ("sync", "running"): 1,
        ("retention", "completed"): 1,
        ("plan", "completed"): 1,
    }
    assert tally["sync", "running"].last_finished is None
    assert store.tally_runs(customer_id="acme", since=now + timedelta(hours=1)) == {}
    completed = [
        r for r in store.list_runs(customer_id="acme", limit=100) if r.status == "completed"
    ]
    activity = _activity(store, "acme", now)
    assert (activity.syncs, activity.syncs_failed, activity.changes) == (6, 2, 3)
    assert (activity.retention_runs, activity.deleted_by_retention) == (1, 3)
    assert activity.deleted_by_system == {"outlook": 3}
    assert activity.last_sync == max(
        r.finished_at for r in completed if r.kind == "sync" and r.finished_at
    )
