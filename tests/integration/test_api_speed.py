"""API reads do not queue behind writes: credentials verified once per TTL, audit records
written in batches (none lost on a clean stop), revocation still takes effect."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
import pytest
import sqlalchemy as sa

from daemon.api.auth import CREDENTIAL_TTL_SECONDS, CredentialCache
from daemon.api.context import Principal
from daemon.api.testing import ApiWorld, api_world
from daemon.store import Role, Store
from tests.fixtures.store import OpenStore


@pytest.fixture
async def world(store: Store, master_key: bytes, tmp_path: Path) -> AsyncIterator[ApiWorld]:
    yield api_world(store, master_key, tmp_path)


@pytest.fixture
async def client(world: ApiWorld) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=world.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://pdsync.test") as c:
        yield c


@contextmanager
def writer_holding_the_lock(store_url: str) -> Iterator[None]:
    """Another process in the middle of a long write: SQLite's write lock, or on
    PostgreSQL the token rows (which an audit write marks as used)."""
    url = sa.make_url(store_url)
    if url.get_backend_name() == "sqlite":
        conn = sqlite3.connect(url.database or "", isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    with psycopg.connect(url.set(drivername="postgresql").render_as_string(False)) as pg:
        pg.execute("SELECT id FROM api_tokens FOR UPDATE").fetchall()
        try:
            yield
        finally:
            pg.rollback()


async def test_reads_answer_while_another_writer_holds_the_store(
    world: ApiWorld, client: httpx.AsyncClient, store_url: str
) -> None:
    headers = world.auth("aud")
    assert (await client.get("/api/v1/runs", headers=headers)).status_code == 200
    with writer_holding_the_lock(store_url):
        slowest = 0.0
        for _ in range(10):
            started = time.monotonic()
            response = await asyncio.wait_for(client.get("/api/v1/runs", headers=headers), 5)
            slowest = max(slowest, time.monotonic() - started)
            assert response.status_code == 200
        # Before: each waited for the writer (up to the 15 s busy timeout) to audit.
        assert slowest < 1.0
    calls = await asyncio.to_thread(world.store.list_api_calls, token_name="aud", limit=100)
    assert [c.route for c in calls].count("/api/v1/runs") == 11


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)  # the same on both backends
async def test_a_token_revoked_here_is_refused_at_once_and_elsewhere_within_the_ttl(
    world: ApiWorld, client: httpx.AsyncClient, open_store: OpenStore
) -> None:
    assert (await client.get("/api/v1/runs", headers=world.auth("olga"))).status_code == 200
    world.store.revoke_token("olga", by="test")
    assert (await client.get("/api/v1/runs", headers=world.auth("olga"))).status_code == 401

    assert (await client.get("/api/v1/runs", headers=world.auth("aud"))).status_code == 200
    cli = open_store()  # `pdsync tokens revoke` in another process
    assert cli.revoke_token("aud", by="test")
    await asyncio.sleep(CREDENTIAL_TTL_SECONDS + 0.2)
    assert (await client.get("/api/v1/runs", headers=world.auth("aud"))).status_code == 401


def test_the_credential_cache_forgets_after_its_ttl_and_when_credentials_change() -> None:
    cache = CredentialCache(ttl=0.2, size=2)
    who = Principal(token_id=1, name="aud", role=Role.AUDITOR)
    cache.put("bearer", "pds_a", 0, who)
    assert cache.get("bearer", "pds_a", 0) == who
    assert cache.get("session", "pds_a", 0) is None  # kinds apart
    assert cache.get("bearer", "pds_a", 1) is None  # something was revoked meanwhile
    cache.put("bearer", "pds_a", 1, who)
    time.sleep(0.25)
    assert cache.get("bearer", "pds_a", 1) is None
    for value in ("pds_b", "pds_c", "pds_d"):
        cache.put("bearer", value, 1, who)
    assert cache.get("bearer", "pds_b", 1) is None  # the oldest went: bounded
    assert cache.get("bearer", "pds_d", 1) == who


def test_queued_audit_records_are_written_in_batches_and_none_lost_on_a_clean_stop(
    store_url: str, master_key: bytes
) -> None:
    store = Store.open(store_url, master_key=master_key)
    store.create_token("reader", "auditor", created_by="t")
    [token] = store.list_tokens()
    writers = [
        threading.Thread(
            target=lambda: [
                store.queue_api_call(
                    token_id=token.id,
                    token_name="reader",
                    role="auditor",
                    method="GET",
                    route="/api/v1/runs",
                    status=200,
                    duration_ms=3,
                )
                for _ in range(250)
            ]
        )
        for _ in range(4)
    ]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    store.close()  # a clean stop: what is queued is written
    again = Store.open(store_url, master_key=master_key)
    try:
        assert len(again.list_api_calls(limit=5000)) == 1000
        [used] = again.list_tokens()
        assert used.last_used_at is not None
    finally:
        again.close()
