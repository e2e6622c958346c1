"""A first sync of many contacts writes its store records a chunk at a time: a chunk's
journal entries in one transaction before the system is asked, its outcomes (links,
journal, events) in one after. Crash safety under this is the kill tests' job
(test_sync_chaos.py, tests/e2e/test_sigterm.py)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa

from daemon.store.schema import op_journal
from daemon.sync import APPLY_CHUNK, SyncService
from tests.integration import sync_world
from tests.integration.sync_world import SyncWorld
from tests.integration.test_sync import person

pytestmark = pytest.mark.emulator

CONTACTS = APPLY_CHUNK + 100  # two chunks


# The default world (Zisson's JSON API, writes through it), shared from sync_world.
world = sync_world.world


async def test_a_first_sync_of_many_contacts_commits_per_chunk_not_per_change(
    world: SyncWorld,
) -> None:
    await world.put_card([person(i) for i in range(CONTACTS)])
    commits = Counter[str]()

    def count(conn: Any) -> None:
        commits["all"] += 1

    # Without the ledger: its entries are appended one by one (daemon/ledger).
    service = SyncService(world.settings, world.store, world.connectors)
    engine = world.store._engine
    sa.event.listen(engine, "commit", count)
    try:
        report = await service.sync(world.customer, trigger="test")
    finally:
        sa.event.remove(engine, "commit", count)

    assert report.status == "completed"
    assert report.applied["zisson.create.applied"] == CONTACTS
    # Was three or more per change (journal begun, finished, link, event); reads count.
    assert commits["all"] <= 40
    users = world.users()
    assert len(users) == CONTACTS
    assert len({u["emails"][0] for u in users}) == CONTACTS  # none twice
    state = world.store.load_state(world.customer.id)
    linked = [link for link in state.links.values() if set(link.members) == {"firestore", "zisson"}]
    assert len(linked) == CONTACTS
    with world.store._engine.connect() as conn:
        journal = Counter(
            conn.execute(sa.select(op_journal.c.status).where(op_journal.c.run_id == report.run_id))
            .scalars()
            .all()
        )
    assert journal == {"done": CONTACTS}
    events = world.store.run_events(run_id=report.run_id, limit=10_000)
    assert sum(1 for e in events if e.event == "created" and e.system == "zisson") == CONTACTS
    assert await world.settle() <= 2  # nothing left to do afterwards
