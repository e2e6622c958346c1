"""A sync (and an erasure) leaves the daemon's event loop free while it waits on the
store or plans.

Every customer's sync, the mailbox's turns and the admin API share one event loop. A
sync that called the store from the loop (a round trip per ledger entry, per baseline,
per event) or planned there held all of them up: in a fleet, the mailbox sat idle while
the loop waited on PostgreSQL. The store's statements are watched through SQLAlchemy's
own events, on the thread each runs on (the real Firestore emulator, the Zisson
simulator, a store).
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from google.cloud import firestore
from sqlalchemy import event
from sqlalchemy.engine import Engine

from daemon.store import RunStatus
from tests.fixtures.firestore import FirestoreEnv
from tests.fixtures.zisson import ZissonBound, ZissonConnect
from tests.integration.sync_world import SyncWorld
from tests.integration.test_sync import person
from tests.integration.test_sync_safety import zisson_world

pytestmark = pytest.mark.emulator

CONTACTS = 40
# What a sync still asks of the store on the loop, whatever the customer's size: its
# run's start and end (a transaction with one statement each).
AT_MOST_ON_LOOP = 4


@contextmanager
def watching_this_thread(note: Callable[[str], None]) -> Iterator[None]:
    """`note(statement)` for each of the store's statements run on the calling thread
    (the event loop's) while the block runs."""
    here = threading.get_ident()

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if threading.get_ident() == here:
            note(statement)

    event.listen(Engine, "before_cursor_execute", before)
    try:
        yield
    finally:
        event.remove(Engine, "before_cursor_execute", before)


@contextmanager
def statements_on_this_thread() -> Iterator[Counter[str]]:
    """The store's statements run on the calling thread, by their first word."""
    seen: Counter[str] = Counter()
    with watching_this_thread(lambda statement: seen.update([statement.split()[0].upper()])):
        yield seen


async def test_a_sync_waits_on_the_store_and_plans_off_the_event_loop(world: SyncWorld) -> None:
    await world.put_card([person(i) for i in range(CONTACTS)])
    with statements_on_this_thread() as first:
        report = await world.sync()
    assert report.status == RunStatus.COMPLETED, report.error
    assert report.applied["zisson.create.applied"] == CONTACTS
    assert len(world.users()) == CONTACTS
    # Each created contact cost baselines, journal entries and a ledger entry: none of
    # them on the loop.
    assert world.ledger.size() >= CONTACTS
    assert sum(first.values()) <= AT_MOST_ON_LOOP, first

    with statements_on_this_thread() as steady:
        report = await world.sync()
    assert report.status == RunStatus.COMPLETED and report.plan is not None
    assert sum(steady.values()) <= AT_MOST_ON_LOOP, steady


async def test_what_each_result_comes_to_is_recorded_off_the_event_loop(
    tmp_path: Path,
    firestore_env: FirestoreEnv,
    zisson_connect: ZissonConnect,
    firestore_client: firestore.Client,
) -> None:
    """A result's event (built and scrubbed of personal data) and, for a change an
    operator must make, its manual task (a store write) were done on the loop, one
    result at a time: a 500-operation chunk held the API and the other worker up."""
    async with zisson_world(
        tmp_path, firestore_env, zisson_connect, firestore_client, write_mode="manual"
    ) as world:
        await world.put_card([person(i) for i in range(CONTACTS)])
        with (
            statements_on_this_thread() as on_loop,
            calls_on_this_thread({"_record_result"}) as calls,
        ):
            report = await world.sync()
        assert report.status == RunStatus.COMPLETED, report.error
        assert report.applied["zisson.create.manual"] == CONTACTS
        tasks = world.store.list_tasks(customer_id=world.customer.id, open_only=True)
        assert len(tasks) == CONTACTS  # an operator is asked to enter each
        assert sum(on_loop.values()) <= AT_MOST_ON_LOOP, on_loop
        assert calls == Counter(), calls


async def test_a_cancelled_sync_ends_only_once_its_thread_is_out_of_the_store(
    world: SyncWorld,
) -> None:
    """A sync cancelled while one of its threads is in the store (the daemon's drain
    running out, an API sync stopped): a thread cannot be stopped, so the run ends, and
    lets the customer's next run in, only once that thread is done. Otherwise it would
    go on writing the customer's state after its run was over, beside the next one."""
    await world.put_card([person(i) for i in range(5)])
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(world.sync())
    ended = threading.Event()
    task.add_done_callback(lambda _: ended.set())
    cancelled = threading.Event()
    after_the_end: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not threading.current_thread().name.startswith("sync"):
            return
        if ended.is_set():
            after_the_end.append(statement.split(None, 1)[0].upper())
        elif not cancelled.is_set():
            # The sync's first statement off the loop: cancel it now, and give the run
            # time to end while this thread is still at work.
            cancelled.set()
            loop.call_soon_threadsafe(task.cancel)
            ended.wait(1.0)

    event.listen(Engine, "before_cursor_execute", before)
    try:
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.3)  # what the thread still had to do, it does now
    finally:
        event.remove(Engine, "before_cursor_execute", before)
    assert cancelled.is_set()
    assert after_the_end == []
    run = world.store.list_runs(customer_id=world.customer.id, limit=1)[0]
    assert run.status == RunStatus.INTERRUPTED
    report = await world.sync()  # the next run goes ahead as usual
    assert report.status == RunStatus.COMPLETED, report.error
    assert report.applied["zisson.create.applied"] == 5


@contextmanager
def item_statements_on_this_thread() -> Iterator[list[str]]:
    """The store's statements on the calling thread that read or write as many rows as
    an erasure has items (its items, the customer's purge)."""
    seen: list[str] = []

    def note(statement: str) -> None:
        words = statement.split()
        if "erasure_items" in statement or words[0].upper() == "DELETE":
            seen.append(" ".join(words[:3]))

    with watching_this_thread(note):
        yield seen


async def test_an_erasure_reads_and_writes_its_items_off_the_event_loop(world: SyncWorld) -> None:
    """An erasure's store work runs in a thread: its items (thousands for a customer:
    every contact and message) and the customer's purge held every other customer's
    sync and the API for a few tenths of a second each on the loop (measured with 8,000
    items in bench.customer_erase_bench); its single reads and writes, ledger entries
    and certificate now go there too (one update stalled the loop for 0.39 s)."""
    await world.put_card([person(i) for i in range(8)])
    await world.settle()
    service = world.erasure()
    request = service.request(
        world.customer.id, scope="customer", subject=None, requested_by="anne", reason="ended"
    )
    ledger_before = world.ledger.size()
    with item_statements_on_this_thread() as planning, statements_on_this_thread() as all_planning:
        row = await service.advance(request)
    assert row.state == "awaiting_approval"
    service.approve(request, approver="bjørn")
    with item_statements_on_this_thread() as erasing, statements_on_this_thread() as all_erasing:
        row = await service.advance(request)
    assert row.state == "completed", row.error
    assert world.users() == []
    assert planning == [] and erasing == []
    assert sum(all_planning.values()) == 0, all_planning
    assert sum(all_erasing.values()) == 0, all_erasing
    # Recorded all the same: planned, approved, executed, completed (in the ledger).
    assert world.ledger.size() >= ledger_before + 4


# The functions that parse or map a listing entry by entry: a customer's whole directory
# (5,000 contacts: 0.2-0.3 s per system) went through them on the loop.
ENTRY_BY_ENTRY = {"from_document", "user_record", "parse_page", "parse_contacts"}


@contextmanager
def calls_on_this_thread(names: set[str]) -> Iterator[Counter[str]]:
    """Calls of functions named `names` on the calling thread while the block runs
    (sys.setprofile sees this thread only)."""
    seen: Counter[str] = Counter()

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code.co_name in names:
            seen[frame.f_code.co_name] += 1

    sys.setprofile(profile)
    try:
        yield seen
    finally:
        sys.setprofile(None)


async def test_a_read_parses_and_maps_what_it_read_off_the_event_loop(
    world: SyncWorld, zisson_xml: ZissonBound
) -> None:
    await world.put_card([person(i) for i in range(CONTACTS)])
    await world.settle()
    for i in range(CONTACTS):
        zisson_xml.seed({"firstName": f"Åse{i}", "lastName": "Bjørnstad", "type": "user"})
    reads = [
        (world.firestore, world.card_customer),
        (world.zisson.connector, world.zisson.customer),  # the JSON API, in pages
        (zisson_xml.connector, zisson_xml.customer),  # the XML API, one document
    ]
    for connector, customer in reads:
        with calls_on_this_thread(ENTRY_BY_ENTRY) as on_loop:
            result = await connector.read(customer)
        assert len(result.records) == CONTACTS
        assert on_loop == Counter(), (connector.system, on_loop)
