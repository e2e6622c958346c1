"""Several instances on one service mailbox keep Graph's per-mailbox limits together:
they take turns at the mailbox through a lease in PostgreSQL (daemon/affinity.py), so
the simulator never sees more than 4 requests in flight, the budget's window travels
with the lease, and a dead holder's mailbox is taken over at once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import sqlalchemy as sa

from connectors.outlook import OutlookConnector, OutlookSettings
from daemon import config
from daemon.affinity import HOLD, PostgresMailboxLease, _key, schedule_offset
from daemon.service import _schedule
from daemon.store import Store
from sandbox.graph_sim import GraphSimulator
from tests.e2e.cluster import ON_POSTGRES
from tests.integration.test_outlook_harness import FAST_RETRIES

EXAMPLE = Path(__file__).parents[2] / "config" / "example.toml"

APP = "00000000-0000-4000-8000-0000000000b7"
MAILBOX = "sentralbord@we4you.no"
SECRET_ENV = "PDSYNC_TEST_TURNS_SECRET"

Connect = Callable[..., OutlookConnector]


@pytest_asyncio.fixture
async def instances(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Callable[[GraphSimulator], tuple[OutlookConnector, OutlookConnector]]]:
    """Two "instances": each its own store session and Outlook connector, one app."""
    monkeypatch.setenv(SECRET_ENV, "turns-secret-æøå")
    stores: list[Store] = []
    made: list[OutlookConnector] = []
    leases: list[PostgresMailboxLease] = []

    def make(sim: GraphSimulator, **settings: Any) -> tuple[OutlookConnector, OutlookConnector]:
        sim.add_app(APP, secret=os.environ[SECRET_ENV])
        sim.add_mailbox(MAILBOX)
        values = {
            "tenant_id": sim.tenant_id,
            "client_id": APP,
            "authority_host": sim.url,
            "graph_url": sim.graph_url,
            "ca_bundle": sim.ca_file,
            "client_secret": {"env": SECRET_ENV},
            **settings,
        }
        pair = []
        for _ in range(2):
            store = Store.open(store_url, master_key=b"k" * 32)
            stores.append(store)
            connector = OutlookConnector(
                OutlookSettings.model_validate(values), retry_policy=FAST_RETRIES
            )
            made.append(connector)
            lease = PostgresMailboxLease(store._engine)
            leases.append(lease)
            connector.share_mailboxes(lease, turn_seconds=0.3, linger_seconds=0.1)
            pair.append(connector)
        return pair[0], pair[1]

    yield make
    for connector in made:
        await connector.aclose()
    for lease in leases:
        lease.close()
    for store in stores:
        store.close()


async def _inbox(connector: OutlookConnector) -> int:
    response = await connector.request(
        MAILBOX.casefold(), "GET", f"users/{MAILBOX}/mailFolders/inbox", what="inbox"
    )
    return response.status_code


@ON_POSTGRES
async def test_two_instances_never_have_more_than_four_requests_in_flight(
    instances: Callable[[GraphSimulator], tuple[OutlookConnector, OutlookConnector]],
) -> None:
    with GraphSimulator(seed=3) as sim:
        a, b = instances(sim)
        await asyncio.gather(_inbox(a), _inbox(b))  # tokens and connections first
        sim.reset_counters()
        sim.set_faults(latency_ms=40)  # service time, spent holding a slot

        statuses = await asyncio.gather(*(_inbox(c) for c in [a, b] * 16))

        counters = sim.counters
    assert statuses == [200] * 32
    assert counters["max_in_flight"] <= 4
    assert counters.get("429", 0) == 0
    assert a.throttled == b.throttled == 0


@ON_POSTGRES
async def test_the_budget_spent_by_one_instance_holds_back_the_next(
    instances: Callable[..., tuple[OutlookConnector, OutlookConnector]],
) -> None:
    # 10 requests per 600 simulated seconds at time scale 300: a 2 s window.
    limits: dict[str, Any] = {"request_budget": 10, "budget_window_seconds": 600}
    with GraphSimulator(seed=4, time_scale=300, **limits) as sim:
        a, b = instances(sim, request_budget=10, budget_window_seconds=2.0)
        for _ in range(8):
            await _inbox(a)
        await asyncio.sleep(0.3)  # a's turn lingers out: the lease goes back
        started = asyncio.get_running_loop().time()
        statuses = await asyncio.gather(*(_inbox(b) for _ in range(4)))
        waited = asyncio.get_running_loop().time() - started
        counters = sim.counters
    assert statuses == [200] * 4
    assert counters.get("throttled_budget", 0) == 0  # b knew what a had spent
    assert waited >= 1.0


@ON_POSTGRES
def test_a_dead_holders_mailbox_is_taken_over_at_once(store: Store) -> None:
    first, second = PostgresMailboxLease(store._engine), PostgresMailboxLease(store._engine)
    try:
        assert first.take("mbx") == ""
        assert second.take("mbx") is None
        assert second.take("mbx", wait=0.05) is None  # waited in line, and gave up
        first.close()  # its session ends, as when the process dies
        started = time.monotonic()
        taken = second.take("mbx", wait=5)  # the server ends the backend a moment later
        assert taken == ""  # no hand-over was stored: an empty window
        assert time.monotonic() - started < 4
        assert not second.others_waiting("mbx")
        second.give_back("mbx", '{"spent": [], "paused_until": 0.0}')
        restarted = PostgresMailboxLease(store._engine)  # the dead instance, started again
        try:
            assert restarted.take("mbx") == '{"spent": [], "paused_until": 0.0}'
        finally:
            restarted.close()
        with pytest.raises(RuntimeError):
            first.take("mbx")  # closed: a stopping daemon asks for no mailbox
    finally:
        first.close()
        second.close()


@ON_POSTGRES
def test_a_waiting_instance_is_seen_and_gets_the_mailbox_as_it_is_given_back(
    store: Store,
) -> None:
    holder, waiter = PostgresMailboxLease(store._engine), PostgresMailboxLease(store._engine)
    got: list[tuple[str | None, float]] = []
    try:
        assert holder.take("mbx") == ""
        assert not holder.others_waiting("mbx")
        thread = threading.Thread(
            target=lambda: got.append((waiter.take("mbx", wait=10), time.monotonic()))
        )
        thread.start()
        deadline = time.monotonic() + 5
        while not holder.others_waiting("mbx") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert holder.others_waiting("mbx")  # waiting in the server, not polling
        given_back = time.monotonic()
        holder.give_back("mbx", '{"spent": [[1, 2]], "paused_until": 0.0}')
        thread.join(10)
        [(handoff, taken_at)] = got
        assert handoff == '{"spent": [[1, 2]], "paused_until": 0.0}'
        assert taken_at - given_back < 2  # at once, not when its wait ran out (10 s)
        assert holder.take("mbx", wait=0.05) is None  # in line behind the new holder
        assert not waiter.others_waiting("mbx")
    finally:
        holder.close()
        waiter.close()


def test_customers_are_spread_over_the_interval_at_stable_points() -> None:
    offsets = [schedule_offset(f"kunde-{n:03d}", 60, 300) for n in range(300)]
    assert all(0 <= o < 60 for o in offsets)
    assert offsets == [schedule_offset(f"kunde-{n:03d}", 60, 300) for n in range(300)]
    per_ten_seconds = [sum(1 for o in offsets if s <= o < s + 10) for s in range(0, 60, 10)]
    assert min(per_ten_seconds) >= 30  # about 50 each, never all at once
    assert all(0 <= schedule_offset(f"k{n}", 60, 3) < 3 for n in range(20))  # few: soon


def test_retention_runs_are_spread_and_not_on_the_syncs() -> None:
    """300 customers' retention runs (every 6 hours; each searches a mailbox a while)
    start a second apart on average after a start, not all in its first 30 s."""
    ids = [f"kunde-{n:03d}" for n in range(300)]
    offsets = [schedule_offset(c, 6 * 3600, 300, job="retention") for c in ids]
    assert all(0 <= o < 300 for o in offsets)
    per_thirty_seconds = [sum(1 for o in offsets if s <= o < s + 30) for s in range(0, 300, 30)]
    assert max(per_thirty_seconds) <= 50  # about 30 each
    syncs = [schedule_offset(c, 6 * 3600, 300) for c in ids]
    assert sum(1 for a, b in zip(offsets, syncs, strict=True) if abs(a - b) < 1) < 10


def test_the_leader_schedules_each_retention_run_at_its_point(tmp_path: Path) -> None:
    settings = config.load(EXAMPLE)
    store = Store.open(f"sqlite:///{tmp_path / 'store.db'}", master_key=bytes(32))
    try:
        before = datetime.now(UTC)
        schedule = _schedule(settings, store, {"outlook"})
        customers = len(settings.customers)
        jobs = [j for j in schedule._scheduler.get_jobs() if j.id.startswith("retention:")]
        assert jobs
        for job in jobs:
            customer = job.id.removeprefix("retention:")
            every = settings.retention.interval_seconds
            offset = schedule_offset(customer, every, customers, job="retention")
            assert abs((job.next_run_time - before).total_seconds() - offset) < 0.5
    finally:
        store.close()


@ON_POSTGRES
async def test_a_busy_holder_hands_the_mailbox_to_a_waiting_instance_after_its_turn(
    instances: Callable[[GraphSimulator], tuple[OutlookConnector, OutlookConnector]],
) -> None:
    with GraphSimulator(seed=5) as sim:
        a, b = instances(sim)
        await asyncio.gather(_inbox(a), _inbox(b))  # tokens and connections first
        sim.set_faults(latency_ms=20)
        stop = asyncio.Event()

        async def keep_busy() -> int:
            sent = 0
            while not stop.is_set():
                await _inbox(a)
                sent += 1
            return sent

        busy = [asyncio.create_task(keep_busy()) for _ in range(4)]
        await asyncio.sleep(0.5)  # a holds the mailbox, and never lets it idle
        started = time.monotonic()
        assert await asyncio.wait_for(_inbox(b), 30) == 200
        waited = time.monotonic() - started
        stop.set()
        sent = sum(await asyncio.gather(*busy))
        counters = sim.counters
    assert waited < 0.3 + 2.0  # a's turn (0.3 s here), not a's whole run; a busy machine
    assert sent > 0
    assert counters["max_in_flight"] <= 4
    assert counters.get("429", 0) == 0


@ON_POSTGRES
def test_instances_get_the_mailbox_in_the_order_they_asked_and_a_wait_ends_on_close(
    store: Store,
) -> None:
    a, b, c = (PostgresMailboxLease(store._engine) for _ in range(3))
    order: list[str] = []

    def wait_for(lease: PostgresMailboxLease, name: str) -> threading.Thread:
        def run() -> None:
            with contextlib.suppress(Exception):  # cut short by close()
                if lease.take("mbx", wait=30) is not None:
                    order.append(name)

        before = _waiters(store)
        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 10
        while _waiters(store) == before and time.monotonic() < deadline:
            time.sleep(0.01)  # until it is in line
        return thread

    try:
        assert a.take("mbx") == ""
        waiting_b = wait_for(b, "b")
        waiting_c = wait_for(c, "c")
        a.give_back("mbx", "")
        waiting_b.join(10)
        waiting_a = wait_for(a, "a")  # asks again: behind c, who asked before it
        b.give_back("mbx", "")
        waiting_c.join(10)
        assert order == ["b", "c"]
        started = time.monotonic()
        a.close()  # a waits still; the daemon stops: no waiting out its 30 s
        waiting_a.join(10)
        assert not waiting_a.is_alive() and time.monotonic() - started < 5
        assert order == ["b", "c"]
    finally:
        for lease in (a, b, c):
            lease.close()


def _waiters(store: Store) -> int:
    """Instances in line for the test's mailbox (pg_locks is the whole server's)."""
    query = sa.text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND classid = :hold AND objid = :key AND database = ("
        "SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    with store._engine.connect() as conn:
        return int(conn.scalar(query, {"hold": HOLD, "key": _key("mbx")}) or 0)
