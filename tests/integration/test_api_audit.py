"""The audit log of the API: every call, named by token, without what was sent; and the
token store behind it. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from daemon.api.testing import DEMO_PERSON, ApiWorld, api_world
from daemon.store import Role, Store, TokenNameTaken
from daemon.store.schema import api_audit, api_tokens
from tests.fixtures.store import raw_bytes


def stored(store: Store, store_url: str, table: sa.Table) -> bytes:
    """Everything the database holds for `table`: the files for SQLite, the rows for
    PostgreSQL."""
    if store.dialect == "sqlite":
        return raw_bytes(store, store_url, table, "id")
    engine = sa.create_engine(store_url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            return repr(conn.execute(sa.select(table)).all()).encode()
    finally:
        engine.dispose()


@pytest.fixture
async def world(store: Store, master_key: bytes, tmp_path: Path) -> AsyncIterator[ApiWorld]:
    yield api_world(store, master_key, tmp_path)


@pytest.fixture
async def client(world: ApiWorld) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=world.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://pdsync.test") as c:
        yield c


async def test_a_call_is_recorded_by_route_template_not_by_what_was_sent(
    world: ApiWorld, client: httpx.AsyncClient, store_url: str
) -> None:
    email = DEMO_PERSON["email"]
    await client.get(f"/api/v1/logs?customer=acme&since={email}", headers=world.auth("aud"))
    await client.get(f"/api/v1/erasures/{email}", headers=world.auth("aud"))
    await client.get(f"/api/v1/no/such/{email}", headers=world.auth("aud"))
    await client.post(
        "/api/v1/erasures",
        headers=world.auth("alice"),
        json={"customer": "acme", "scope": "subject", "emails": [email], "reason": "t 1"},
    )
    rows = world.store.list_api_calls(limit=4)
    assert [(r.token_name, r.role, r.method, r.route, r.status) for r in reversed(rows)] == [
        ("aud", "auditor", "GET", "/api/v1/logs", 422),
        ("aud", "auditor", "GET", "/api/v1/erasures/{request_id}", 422),
        ("aud", "auditor", "GET", "<unmatched>", 404),
        ("alice", "admin", "POST", "/api/v1/erasures", 201),
    ]
    assert email.encode() not in stored(world.store, store_url, api_audit)


async def test_refusals_to_token_holders_are_recorded_and_anonymous_calls_are_not(
    world: ApiWorld, client: httpx.AsyncClient
) -> None:
    before = len(world.store.list_api_calls(limit=1000))
    await client.get("/healthz")
    await client.get("/readyz")
    await client.get("/metrics")
    await client.get("/api/v1/runs")
    await client.get("/api/v1/runs", headers={"Authorization": "Bearer pds_" + "x" * 43})
    await client.get("/api/v1/runs", headers=world.auth("old"))
    await client.post("/api/v1/sync", headers=world.auth("aud"), json={})
    rows = world.store.list_api_calls(limit=1000)
    assert len(rows) == before + 1
    assert (rows[0].token_name, rows[0].route, rows[0].status) == ("aud", "/api/v1/sync", 403)


async def test_the_audit_log_is_readable_by_auditors_and_tokens_show_last_use(
    world: ApiWorld, client: httpx.AsyncClient
) -> None:
    assert {t.name: t.last_used_at for t in world.store.list_tokens()}["olga"] is None
    await client.get("/api/v1/tasks", headers=world.auth("olga"))
    listed = await client.get("/api/v1/audit?token=olga", headers=world.auth("aud"))
    assert [(a["token_name"], a["route"]) for a in listed.json()] == [("olga", "/api/v1/tasks")]
    assert {t.name: t.last_used_at for t in world.store.list_tokens()}["olga"] is not None


def test_tokens_are_stored_as_keyed_hashes(store: Store, store_url: str) -> None:
    token = store.create_token("ops-bot", Role.OPERATOR, created_by="alice")
    assert token.startswith("pds_") and len(token) == 47
    row = store.authenticate_token(token)
    assert row is not None and (row.name, row.role, row.created_by) == (
        "ops-bot",
        "operator",
        "alice",
    )
    assert token.encode() not in stored(store, store_url, api_tokens)
    assert store.authenticate_token(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert store.authenticate_token("not a token") is None

    with pytest.raises(TokenNameTaken):
        store.create_token("ops-bot", Role.ADMIN, created_by="alice")
    with pytest.raises(ValueError):
        store.create_token("Kari@x.no", Role.ADMIN, created_by="alice")
    assert store.revoke_token("ops-bot", by="bob")
    assert store.authenticate_token(token) is None
    assert not store.revoke_token("ops-bot", by="bob")
    again = store.create_token("ops-bot", Role.AUDITOR, created_by="alice")  # the name is free
    assert [(t.name, t.role, t.active) for t in store.list_tokens()] == [
        ("ops-bot", "operator", False),
        ("ops-bot", "auditor", True),
    ]
    assert store.authenticate_token(again) is not None


def test_the_pepper_is_the_stores_own(open_store: object, store: Store) -> None:
    token = store.create_token("reader", Role.AUDITOR, created_by="t")
    other = open_store()  # type: ignore[operator]  # another process on the same database
    assert other.authenticate_token(token) is not None


def test_old_audit_records_can_be_pruned(store: Store) -> None:
    from datetime import UTC, datetime, timedelta

    store.record_api_call(
        token_id=None,
        token_name=None,
        role=None,
        method="GET",
        route="/x",
        status=401,
        duration_ms=1,
    )
    assert store.prune_api_calls(before=datetime.now(UTC) - timedelta(days=1)) == 0
    assert store.prune_api_calls(before=datetime.now(UTC) + timedelta(seconds=1)) == 1
