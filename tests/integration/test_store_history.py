"""pdsync's own records are kept for a stated time, pruned in chunks, proven in the ledger."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from datetime import time as clock
from pathlib import Path

import pytest
import sqlalchemy as sa

from daemon import config
from daemon.ledger import Ledger, Signer
from daemon.report import build_report, render_text
from daemon.service import _schedule, expire_api_records
from daemon.store import Store
from daemon.store.history import HistoryCutoffs
from daemon.store.schema import run_events, runs
from tests.fixtures.store import OpenStore

EXAMPLE = Path(__file__).parents[2] / "config" / "example.toml"
LEASE = timedelta(seconds=30)


def cutoffs(moment: datetime) -> HistoryCutoffs:
    return HistoryCutoffs(
        runs=moment, journal=moment, work=moment, quarantine=moment, instances=moment
    )


def history(store: Store, tag: str) -> dict[str, object]:
    """One of each kind of record, finished; returns their ids."""
    run = store.start_run("sync", customer_id="acme", trigger=tag)
    for n in range(3):
        store.add_event(run, "sync.step", customer_id="acme", detail={"n": n})
    store.finish_run(run, "completed", {"changed": 0})
    op = store.journal_attempt(
        f"intent-{tag}", run_id=run, customer_id="acme", link_id=run, system="zisson", kind="update"
    )
    store.journal_finish(op, "done")
    pending = store.journal_attempt(
        f"pending-{tag}",
        run_id=run,
        customer_id="acme",
        link_id=run,
        system="zisson",
        kind="update",
    )
    item = store.enqueue_work("sync", f"acme-{tag}")
    claimed = store.claim_work(lease=LEASE, kinds=("sync",))
    assert claimed is not None and claimed.id == item
    store.finish_work(claimed.id)
    held = store.quarantine("acme", "zisson", f"z-{tag}", "phone: unparseable", "{}")
    return {"run": run, "op": op, "pending": pending, "item": item, "held": held}


def test_finished_records_older_than_the_cutoff_go_in_chunks_and_the_rest_stay(
    store: Store, open_store: OpenStore
) -> None:
    old = [history(store, f"old{n}") for n in range(3)]
    other = open_store()  # another instance, gone quiet
    other.heartbeat(leader=False)
    running_old = store.start_run("sync", customer_id="acme", trigger="still-running")
    queued_old = store.enqueue_work("retention", "acme")
    time.sleep(0.05)
    cutoff = datetime.now(UTC)
    time.sleep(0.05)
    new = history(store, "new")
    store.heartbeat(leader=True)

    pruned = store.prune_history(cutoffs(cutoff), chunk=2)  # several chunks per kind

    assert pruned.as_dict() == {
        "runs": 3,
        "run_events": 9,
        "quiet_runs": 0,
        "journal": 3,
        "work_items": 3,
        "quarantine": 3,
        "instances": 1,
    }
    runs = {r.id for r in store.list_runs(limit=100)}
    assert runs == {running_old, new["run"]}
    assert len(store.run_events(run_id=str(new["run"]))) == 3
    assert not store.run_events(run_id=str(old[0]["run"]))
    assert store.journal_get(str(old[0]["op"])) is None
    assert store.journal_get(str(new["op"])) is not None
    assert {op.op_id for op in store.pending_ops("acme")} == {
        *(str(h["pending"]) for h in old),
        str(new["pending"]),
    }
    assert {w.id for w in store.work_items()} == {queued_old, new["item"]}
    assert [q.id for q in store.list_quarantine(customer_id="acme", open_only=False)] == [
        new["held"]
    ]
    assert [i.id for i in store.instances()] == [store.instance_id]
    # Nothing left to do: a second pass deletes nothing.
    assert not any(store.prune_history(cutoffs(cutoff), chunk=2).as_dict().values())


def age(store: Store, run_id: str, moment: datetime) -> None:
    with store._engine.begin() as conn:
        conn.execute(sa.update(runs).where(runs.c.id == run_id).values(started_at=moment))


def test_quiet_runs_go_sooner_and_are_still_counted_per_day(store: Store) -> None:
    now = datetime.now(UTC)
    # At noon (UTC) of their days, whatever the hour the test runs: tallies are by day.
    noon = datetime.combine(now.date(), clock(12), tzinfo=UTC)
    days_ago = [noon - timedelta(days=d) for d in (5, 5, 4)]
    quiet = []
    for moment in days_ago:
        run = store.start_run("sync", customer_id="acme", trigger="schedule")
        store.finish_run(run, "completed", {"applied": {}}, quiet=True)
        age(store, run, moment)
        quiet.append(run)
    # Kept whatever their age: a run that changed something, one that failed, one with
    # something to say (an event), a quiet one of another customer within the window.
    changed = store.start_run("sync", customer_id="acme", trigger="schedule")
    store.finish_run(changed, "completed", {"applied": {"zisson.update.applied": 1}})
    failed = store.start_run("sync", customer_id="acme", trigger="schedule")
    store.add_event(failed, "sync_failed", level="error", detail={"error": "timeout"})
    store.finish_run(failed, "failed", {"error": "timeout"})
    for run in (changed, failed):
        age(store, run, days_ago[0])
    recent = store.start_run("sync", customer_id="other", trigger="schedule")
    store.finish_run(recent, "completed", {}, quiet=True)
    since = now - timedelta(days=30)
    before = store.tally_runs(customer_id="acme", since=since)
    assert before["sync", "completed"].runs == 4 and before["sync", "failed"].runs == 1

    pruned = store.prune_history(
        HistoryCutoffs(
            runs=now - timedelta(days=180),
            quiet_runs=now - timedelta(days=2),
            journal=now - timedelta(days=180),
            work=now - timedelta(days=180),
            quarantine=now - timedelta(days=180),
            instances=now - timedelta(days=180),
        ),
        chunk=2,  # the two runs of one day land in two chunks: the tally adds up
    )

    assert (pruned.runs, pruned.quiet_runs) == (3, 3)
    assert {r.id for r in store.list_runs(limit=100)} == {changed, failed, recent}
    assert store.tally_runs(customer_id="acme", since=since) == before  # the report's counts
    later = store.tally_runs(customer_id="acme", since=days_ago[2] - timedelta(hours=6))
    assert later["sync", "completed"].runs == 1  # the day four days ago: its one quiet run
    # The tallies go when the runs they stand for would have.
    pruned = store.prune_history(cutoffs(now - timedelta(days=3)), chunk=2)
    assert pruned.runs == 2  # the changed and the failed run, five days old
    assert store.tally_runs(customer_id="acme", since=since) == {}


def test_only_a_completed_run_can_be_quiet(store: Store) -> None:
    run = store.start_run("sync", customer_id="acme", trigger="schedule")
    with pytest.raises(ValueError, match="a failed run is not quiet"):
        store.finish_run(run, "failed", {}, quiet=True)
    store.finish_run(run, "completed", {}, quiet=True)
    assert store.get_run(run).quiet


def test_released_quarantine_goes_after_its_time_and_an_open_one_seen_again_stays(
    store: Store,
) -> None:
    released = store.quarantine("acme", "zisson", "z-1", "phone: unparseable", "{}")
    seen_again = store.quarantine("acme", "zisson", "z-2", "phone: unparseable", "{}")
    assert store.release_quarantine("acme", "zisson", ["z-1"]) == 1
    time.sleep(0.05)
    cutoff = datetime.now(UTC)
    store.quarantine("acme", "zisson", "z-2", "phone: unparseable", "{}")  # last_seen now
    pruned = store.prune_history(cutoffs(cutoff))
    assert pruned.quarantine == 1
    assert [q.id for q in store.list_quarantine(customer_id="acme", open_only=False)] == [
        seen_again
    ]
    assert released != seen_again


async def test_the_daily_job_prunes_by_the_stated_defaults_and_the_ledger_keeps_proof(
    tmp_path: Path,
) -> None:
    settings = config.load(EXAMPLE).model_copy(
        update={"history": config.HistoryConfig(runs_days=1, chunk_rows=10)}
    )
    assert (config.HistoryConfig().runs_days, config.HistoryConfig().journal_days) == (180, 30)
    store = Store.open(f"sqlite:///{tmp_path / 'store.db'}", master_key=bytes(32))
    try:
        assert "api-records" in _schedule(settings, store, set()).job_ids
        ledger = Ledger(store, Signer.generate())
        run = store.start_run("sync", customer_id="acme", trigger="schedule")
        store.add_event(run, "sync.step", customer_id="acme", detail={})
        store.finish_run(run, "completed", {})
        ledger.record("sync.completed", customer_id="acme", run_id=run)
        recent = store.start_run("sync", customer_id="acme", trigger="schedule")
        store.finish_run(recent, "completed", {})
        two_days_ago = datetime.now(UTC) - timedelta(days=2)
        with store._engine.begin() as conn:  # age the first run by two days
            conn.execute(sa.update(runs).where(runs.c.id == run).values(started_at=two_days_ago))
        entries_before = len(store.ledger_entries())

        await expire_api_records(store, settings, ledger)

        assert [r.id for r in store.list_runs()] == [recent]
        with store._engine.connect() as conn:
            assert conn.scalar(sa.select(sa.func.count()).select_from(run_events)) == 0
        entries = store.ledger_entries()
        assert len(entries) == entries_before + 1  # nothing of the ledger went
        assert entries[-1].kind == "history.pruned"
        assert entries[-1].payload["runs"] == 1 and entries[-1].payload["run_events"] == 1
        assert entries[-1].payload["retention_days"]["runs"] == 1
        assert entries[-1].payload["quiet_runs"] == 0  # neither run was quiet

        text = render_text(build_report(settings, store, "acme"))
        assert "pdsync's records of its own work are kept (days): runs and their events 1," in text
        assert "operation journal 30" in text and "API audit log 90" in text
        norsk = render_text(build_report(settings, store, "acme"), "no")
        assert "pdsyncs registreringer om eget arbeid lagres (dager)" in norsk
    finally:
        store.close()
