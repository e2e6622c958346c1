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

from daemon.api import changes, routes_ops
from daemon.api.auth import CREDENTIAL_TTL_SECONDS, CredentialCache
from daemon.api.context import Principal
from daemon.api.testing import REVOKED, ApiWorld, api_world
from daemon.store import Role, RunRow, RunStatus, Store
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


async def test_the_run_listing_is_kept_only_while_nothing_was_committed_anywhere(
    world: ApiWorld,
    client: httpx.AsyncClient,
    open_store: OpenStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    headers = world.auth("aud")
    rendered = 0
    list_runs = world.store.list_runs

    def counted(**kwargs: object) -> list[RunRow]:
        nonlocal rendered
        rendered += 1
        return list_runs(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(world.store, "list_runs", counted)

    async def ids(**params: str) -> list[str]:
        response = await client.get("/api/v1/runs", headers=headers, params=params)
        assert response.status_code == 200
        return [run["id"] for run in response.json()]

    first = await ids()
    # Kept while the store is unchanged. Commits elsewhere change the marker too (the
    # audit writer's batches; on PostgreSQL any transaction of the cluster), so of a
    # few repeats at least one must be served without the store.
    repeats = []
    for _ in range(50):
        before = rendered
        assert await ids() == first
        repeats.append(rendered - before)
        if repeats[-1] == 0:
            break
    assert 0 in repeats, repeats
    before = rendered
    await ids(customer="acme")  # another query, kept apart
    assert rendered == before + 1

    # Another process starts a run, then finishes it: each shows in the very next request.
    other = open_store()
    run_id = other.start_run("sync", customer_id="fjord", trigger="elsewhere")
    assert (await ids())[0] == run_id
    other.finish_run(run_id, RunStatus.FAILED, {"applied": {}, "error": "zisson: 401"})
    response = await client.get("/api/v1/runs", headers=headers)
    assert response.json()[0]["status"] == "failed"
    # So does one written through this process's own Store.
    mine = world.store.start_run("retention", customer_id="acme", trigger="here")
    assert (await ids())[0] == mine
    # `since` is relative to now: never kept.
    before = rendered
    await ids(since="1h")
    await ids(since="1h")
    assert rendered == before + 2


async def test_the_run_listing_is_what_the_response_model_makes_of_the_store(
    world: ApiWorld, client: httpx.AsyncClient
) -> None:
    for params in ({}, {"customer": "acme", "limit": "1"}, {"status": "failed"}):
        response = await client.get("/api/v1/runs", headers=world.auth("aud"), params=params)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        expected = routes_ops.runs_page(
            world.store,
            customer=params.get("customer"),
            status=RunStatus(params["status"]) if "status" in params else None,
            limit=int(params.get("limit", 50)),
        )
        assert response.json() == [run.model_dump(mode="json") for run in expected]
        assert expected  # the seeded store has runs of each kind asked for


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_the_run_listing_answers_uncached_when_the_store_cannot_say_it_is_unchanged(
    world: ApiWorld, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = world.auth("aud")
    assert (await client.get("/api/v1/runs", headers=headers)).status_code == 200
    rendered = 0
    list_runs = world.store.list_runs

    def counted(**kwargs: object) -> list[RunRow]:
        nonlocal rendered
        rendered += 1
        return list_runs(**kwargs)  # type: ignore[arg-type]

    def busy(*args: object, **kwargs: object) -> sqlite3.Connection:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(world.store, "list_runs", counted)
    await world.app.state.ctx.reads.close()  # its marker connection must be opened again
    monkeypatch.setattr(changes.sqlite3, "connect", busy)
    for _ in range(3):
        response = await client.get("/api/v1/runs", headers=headers)
        assert response.status_code == 200 and len(response.json()) == 3
    assert rendered == 3
    monkeypatch.undo()
    mine = world.store.start_run("sync", customer_id="acme", trigger="after")
    response = await client.get("/api/v1/runs", headers=headers)
    assert response.json()[0]["id"] == mine


async def test_concurrent_readers_all_see_a_run_written_before_they_asked(
    world: ApiWorld, client: httpx.AsyncClient, open_store: OpenStore
) -> None:
    headers = world.auth("aud")
    other = open_store()
    for round_ in range(3):
        assert (await client.get("/api/v1/runs", headers=headers)).status_code == 200
        run_id = other.start_run("sync", customer_id="acme", trigger=f"round-{round_}")
        answers = await asyncio.gather(
            *(client.get("/api/v1/runs", headers=headers) for _ in range(20))
        )
        assert {a.status_code for a in answers} == {200}
        assert {a.json()[0]["id"] for a in answers} == {run_id}


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
async def test_the_run_listing_stays_right_when_the_marker_connection_is_cut(
    world: ApiWorld, client: httpx.AsyncClient, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = world.auth("aud")
    monkeypatch.setattr(changes, "RECONNECT_SECONDS", 0.2)
    assert (await client.get("/api/v1/runs", headers=headers)).status_code == 200
    admin = sa.create_engine(store_url, poolclass=sa.NullPool)
    try:
        with admin.begin() as conn:
            cut = conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = 'pdsync-api' AND datname = current_database()"
                )
            ).all()
        assert cut == [(True,)]
    finally:
        admin.dispose()
    for trigger in ("while-cut", "after-reconnect"):
        run_id = world.store.start_run("sync", customer_id="acme", trigger=trigger)
        response = await client.get("/api/v1/runs", headers=headers)
        assert response.status_code == 200 and response.json()[0]["id"] == run_id
        await asyncio.sleep(0.3)
    response = await client.get("/api/v1/runs", headers=headers)
    assert response.json()[0]["id"] == run_id


async def test_concurrent_requests_with_one_credential_share_one_lookup(
    world: ApiWorld, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    looked_up: list[str] = []
    authenticate = world.store.authenticate_token

    def counted(token: str) -> object:
        looked_up.append(token)
        time.sleep(0.05)  # long enough for the others to come while it is asked
        return authenticate(token)

    monkeypatch.setattr(world.store, "authenticate_token", counted)
    answers = await asyncio.gather(
        *(client.get("/api/v1/runs", headers=world.auth("aud")) for _ in range(20)),
        *(client.get("/api/v1/runs", headers=world.auth(REVOKED)) for _ in range(3)),
    )
    assert [a.status_code for a in answers] == [200] * 20 + [401] * 3
    assert sorted(looked_up) == sorted([world.tokens["aud"], world.tokens[REVOKED]])
    # Revoked through this process while a lookup is under way: nobody after the
    # revocation gets that lookup's answer.
    looked_up.clear()
    world.store.revoke_token("aud", by="test")
    answers = await asyncio.gather(
        *(client.get("/api/v1/runs", headers=world.auth("aud")) for _ in range(5))
    )
    assert {a.status_code for a in answers} == {401}
    assert looked_up == [world.tokens["aud"]]
