"""Runs and their events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from daemon.store import EventLevel, NotFound, RunRow, RunStatus, Store
from daemon.store.schema import run_events, runs
from tests.fixtures.store import OpenStore


def get(store: Store, run_id: str) -> RunRow:
    row = store.get_run(run_id)
    assert row is not None
    return row


def test_run_lifecycle(store: Store) -> None:
    before = datetime.now(UTC)
    run = store.start_run("sync", customer_id="c1", trigger="schedule")

    started = get(store, run)
    assert started.status is RunStatus.RUNNING
    assert started.customer_id == "c1"
    assert started.instance_id == store.instance_id
    assert started.started_at.tzinfo is not None
    assert before - timedelta(seconds=1) <= started.started_at <= datetime.now(UTC)
    assert started.finished_at is None

    store.finish_run(run, "completed", {"created": 3, "systems": ["zisson"]})

    finished = get(store, run)
    assert finished.status is RunStatus.COMPLETED
    assert finished.summary == {"created": 3, "systems": ["zisson"]}
    assert finished.finished_at is not None and finished.finished_at >= finished.started_at
    assert store.get_run("nope") is None
    with pytest.raises(NotFound):
        store.finish_run("nope", RunStatus.FAILED, {})
    with pytest.raises(ValueError):
        store.finish_run(run, "running", {})
    with pytest.raises(ValueError):
        store.finish_run(run, "exploded", {})


def test_list_runs_newest_first_with_filters(store: Store) -> None:
    first = store.start_run("sync", customer_id="c1", trigger="schedule")
    second = store.start_run("erasure", customer_id="c2", trigger="cli")
    third = store.start_run("retention", customer_id=None, trigger="schedule")

    assert [r.id for r in store.list_runs()] == [third, second, first]
    assert [r.id for r in store.list_runs(customer_id="c1")] == [first]
    assert [r.id for r in store.list_runs(limit=2)] == [third, second]
    cutoff = get(store, second).started_at
    assert [r.id for r in store.list_runs(since=cutoff)] == [third, second]
    assert store.list_runs(since=datetime.now(UTC) + timedelta(hours=1)) == []


def test_events_filter_and_order(store: Store) -> None:
    run = store.start_run("sync", customer_id="c1", trigger="schedule")
    other = store.start_run("sync", customer_id="c2", trigger="schedule")
    ids = [
        store.add_event(run, "read", detail={"records": 12}, system="zisson"),
        store.add_event(run, "conflict", level="warning", detail={"field": "emails"}),
        store.add_event(other, "read"),
        store.add_event(run, "apply.failed", level=EventLevel.ERROR, customer_id="c9"),
        store.add_event(run, "trace", level="debug"),
    ]
    assert ids == sorted(ids)

    events = store.run_events(run_id=run)
    assert [e.event for e in events] == ["read", "conflict", "apply.failed", "trace"]
    assert events[0].customer_id == "c1"  # the run's customer by default
    assert events[0].system == "zisson"
    assert events[0].detail == {"records": 12}
    assert events[0].ts.tzinfo is not None
    assert events[2].customer_id == "c9"

    assert [e.event for e in store.run_events(min_level="warning")] == ["conflict", "apply.failed"]
    assert [e.event for e in store.run_events(customer_id="c2")] == ["read"]
    assert [e.event for e in store.run_events(run_id=run, limit=2)] == ["apply.failed", "trace"]
    assert store.run_events(since=datetime.now(UTC) + timedelta(hours=1)) == []
    with pytest.raises(NotFound):
        store.add_event("nope", "read")


def test_dead_processes_runs_are_marked_interrupted(store: Store, open_store: OpenStore) -> None:
    dead = open_store()  # another process that started runs and then died
    orphan = dead.start_run("sync", customer_id="c1", trigger="schedule")
    finished = dead.start_run("sync", customer_id="c1", trigger="schedule")
    dead.finish_run(finished, "completed", {})
    ours = store.start_run("sync", customer_id="c1", trigger="schedule")

    assert store.mark_interrupted_runs() == [orphan]

    assert get(store, orphan).status is RunStatus.INTERRUPTED
    assert get(store, orphan).finished_at is not None
    assert get(store, finished).status is RunStatus.COMPLETED
    assert get(store, ours).status is RunStatus.RUNNING
    assert [e.event for e in store.run_events(run_id=orphan)] == ["run.interrupted"]
    assert store.mark_interrupted_runs() == []


def test_with_idle_for_only_quiet_runs_count_as_dead(store: Store, open_store: OpenStore) -> None:
    other = open_store()
    quiet = other.start_run("sync", customer_id="c1", trigger="schedule")
    busy = other.start_run("sync", customer_id="c1", trigger="schedule")
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    with store._engine.begin() as conn:  # age both runs, then let `busy` log an event
        conn.execute(sa.update(runs).values(started_at=an_hour_ago))
    other.add_event(busy, "progress")
    with store._engine.begin() as conn:
        conn.execute(sa.update(run_events).values(ts=datetime.now(UTC)))

    assert store.mark_interrupted_runs(idle_for=timedelta(minutes=10)) == [quiet]
    assert get(store, busy).status is RunStatus.RUNNING


def test_a_dead_worker_s_runs_alone_are_marked_interrupted(
    store: Store, open_store: OpenStore
) -> None:
    worker, live = open_store(), open_store()  # a worker process that died, and another
    orphan = worker.start_run("sync", customer_id="c1", trigger="schedule")
    alive = live.start_run("sync", customer_id="c2", trigger="schedule")

    assert store.mark_interrupted_runs(of_instance=worker.instance_id) == [orphan]

    assert get(store, orphan).status is RunStatus.INTERRUPTED
    assert get(store, alive).status is RunStatus.RUNNING
