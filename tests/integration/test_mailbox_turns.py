"""Several instances on one service mailbox keep Graph's per-mailbox limits together:
they take turns at the mailbox through a lease in PostgreSQL (daemon/affinity.py), so
the simulator never sees more than 4 requests in flight, the budget's window travels
with the lease, and a dead holder's mailbox is taken over at once."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

from connectors.outlook import OutlookConnector, OutlookSettings
from daemon.affinity import PostgresMailboxLease, schedule_offset
from daemon.store import Store
from sandbox.graph_sim import GraphSimulator
from tests.e2e.cluster import ON_POSTGRES
from tests.integration.test_outlook_harness import FAST_RETRIES

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
        assert first.try_take("mbx") == ""
        assert second.try_take("mbx") is None
        assert first.others_waiting("mbx")
        first.close()  # its session ends, as when the process dies
        taken = None
        deadline = time.monotonic() + 5  # the server ends the backend a moment later
        while taken is None and time.monotonic() < deadline:
            taken = second.try_take("mbx")
            time.sleep(0.01)
        assert taken == ""  # no hand-over was stored: an empty window
        assert not second.others_waiting("mbx")
        second.give_back("mbx", '{"spent": [], "paused_until": 0.0}')
        assert first.try_take("mbx") == '{"spent": [], "paused_until": 0.0}'
    finally:
        first.close()
        second.close()


def test_customers_are_spread_over_the_interval_at_stable_points() -> None:
    offsets = [schedule_offset(f"kunde-{n:03d}", 60, 300) for n in range(300)]
    assert all(0 <= o < 60 for o in offsets)
    assert offsets == [schedule_offset(f"kunde-{n:03d}", 60, 300) for n in range(300)]
    per_ten_seconds = [sum(1 for o in offsets if s <= o < s + 10) for s in range(0, 60, 10)]
    assert min(per_ten_seconds) >= 30  # about 50 each, never all at once
    assert all(0 <= schedule_offset(f"k{n}", 60, 3) < 3 for n in range(20))  # few: soon
