"""The leader's erasure tick queues the "erasures" work item only while a request can be
moved on: an idle daemon does not start its worker process (daemon/worker.py) every
minute for nothing, and a request is still taken up at the next tick."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from daemon import config
from daemon.service import _schedule
from daemon.store import Store
from daemon.store.rows import ErasureState

EXAMPLE = Path(__file__).parents[2] / "config" / "example.toml"


async def test_the_erasure_tick_queues_work_only_for_a_request_to_move_on(tmp_path: Path) -> None:
    settings = config.load(EXAMPLE)
    store = Store.open(f"sqlite:///{tmp_path / 'store.db'}", master_key=bytes(32))
    try:
        schedule = _schedule(settings, store, set())
        [job] = [j for j in schedule._scheduler.get_jobs() if j.id == "erasures"]

        def queued() -> list[str]:
            return [w.kind for w in store.work_items(limit=100) if w.state == "queued"]

        await job.func()
        assert queued() == []  # nothing open

        customer = settings.customers[0].id
        request = store.create_erasure(
            customer,
            scope="subject",
            identifiers='{"emails": ["ola@firma.no"], "phones": [], "names": []}',
            masked={"emails": ["o***@f***.no"], "phones": [], "names": []},
            requested_by="anne",
            reason="ticket 1",
            deadline=timedelta(hours=72),
        )
        await job.func()
        assert queued() == ["erasures"]
        store.finish_work(store.claim_work(lease=timedelta(seconds=30)).id)  # type: ignore[union-attr]

        store.update_erasure(request, state=ErasureState.AWAITING_APPROVAL)
        await job.func()
        assert queued() == []  # waiting for a person, not for the daemon
    finally:
        store.close()
