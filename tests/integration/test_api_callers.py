"""Hostile callers of the API: failed authentication is rate-limited per client and
counted in /metrics, never stored; the audit log is pruned on the daemon's schedule;
/readyz tells nothing about customers. On SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from daemon.api.app import create_app
from daemon.api.ratelimit import FailureLimiter
from daemon.api.settings import ApiConfig
from daemon.api.testing import DEMO_CUSTOMERS, ApiWorld, api_world
from daemon.service import _schedule, expire_api_records
from daemon.store import Store
from daemon.store.schema import api_audit

BAD = {"Authorization": "Bearer pds_" + "x" * 43}


@pytest.fixture
async def world(store: Store, master_key: bytes, tmp_path: Path) -> AsyncIterator[ApiWorld]:
    yield api_world(store, master_key, tmp_path)


def client_at(app: object, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 40000))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://pdsync.test")


def audit_rows(store: Store) -> int:
    return len(store.list_api_calls(limit=100_000))


def metric(text: str, name: str) -> float:
    """The sum of a metric's samples (over its labels)."""
    found = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((name + " ", name + "{"))
    ]
    assert found, f"{name} is not in /metrics"
    return sum(found)


async def test_failed_logins_are_rate_limited_per_client_and_counted_not_stored(
    world: ApiWorld,
) -> None:
    app = create_app(world.settings, world.store, config=ApiConfig(auth_failures_burst=3))
    before = audit_rows(world.store)
    async with client_at(app, "203.0.113.7") as attacker, client_at(app, "198.51.100.1") as ops:
        statuses = [(await attacker.get("/api/v1/runs", headers=BAD)).status_code for _ in range(2)]
        form = (await attacker.get("/dashboard/login")).text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form)
        assert csrf is not None
        wrong = {"token": "pds_" + "y" * 43, "csrf": csrf.group(1)}
        statuses.append((await attacker.post("/dashboard/login", data=wrong)).status_code)
        assert statuses == [401, 401, 401]
        guessing = await attacker.get("/api/v1/runs", headers=BAD)
        assert guessing.status_code == 429
        assert int(guessing.headers["retry-after"]) >= 1
        login = await attacker.post("/dashboard/login", data={"token": world.tokens["aud"]})
        assert login.status_code == 429  # not even a right guess gets in while limited
        # Another client is not held up by the attacker.
        assert (await ops.get("/api/v1/runs", headers=world.auth("aud"))).status_code == 200
        text = (await ops.get("/metrics")).text
    assert metric(text, "pdsync_api_auth_failures_total") == 3
    assert 'pdsync_api_auth_failures_total{kind="login"} 1.0' in text
    assert metric(text, "pdsync_api_auth_rate_limited_total") == 2
    # Only the auditor's call is on record: nothing a caller without a token did.
    assert audit_rows(world.store) == before + 1
    assert world.store.list_api_calls(limit=1)[0].token_name == "aud"


async def test_an_ipv6_guesser_cannot_take_a_new_address_for_each_guess(world: ApiWorld) -> None:
    """A host holds a whole /64 of IPv6 addresses: its guesses count together however
    many of them it uses; a client of another /64, or of IPv4, is not held up by it."""
    app = create_app(world.settings, world.store, config=ApiConfig(auth_failures_burst=3))
    statuses = []
    for i in range(5):
        async with client_at(app, f"2001:db8:1:2::{i + 1:x}") as guesser:
            statuses.append((await guesser.get("/api/v1/runs", headers=BAD)).status_code)
    assert statuses == [401, 401, 401, 429, 429]
    async with client_at(app, "2001:db8:1:3::1") as neighbour:
        assert (await neighbour.get("/api/v1/runs", headers=BAD)).status_code == 401
    # An IPv4 address is one client however it is written.
    async with client_at(app, "::ffff:192.0.2.9") as mapped, client_at(app, "192.0.2.9") as v4:
        callers = (mapped, v4, mapped, v4)
        statuses = [(await c.get("/api/v1/runs", headers=BAD)).status_code for c in callers]
    assert statuses == [401, 401, 401, 429]


def test_the_limiter_stays_small_when_addresses_rotate() -> None:
    limiter = FailureLimiter(burst=2, per_minute=1, max_clients=100)
    for i in range(5000):
        limiter.failed(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert len(limiter) == 100
    limiter.failed("192.0.2.1")
    limiter.failed("192.0.2.1")
    wait = limiter.retry_after("192.0.2.1")
    assert wait is not None and 0 < wait <= 60
    assert limiter.retry_after("192.0.2.2") is None


async def test_audit_records_past_retention_are_pruned_on_the_schedule(world: ApiWorld) -> None:
    store = world.store
    old = datetime.now(UTC) - timedelta(days=91)
    with store._engine.begin() as conn:
        conn.execute(
            sa.insert(api_audit).values(
                ts=old,
                token_name="aud",
                role="auditor",
                method="GET",
                route="/x",
                status=200,
                duration_ms=1,
            )
        )
    store.record_api_call(
        token_id=None,
        token_name="aud",
        role="auditor",
        method="GET",
        route="/y",
        status=200,
        duration_ms=1,
    )
    assert world.settings.api.audit_retention_days == 90  # the stated default
    schedule = _schedule(world.settings, store, set())
    assert "api-records" in schedule.job_ids
    await expire_api_records(store, world.settings, world.ledger)
    assert [r.route for r in store.list_api_calls(limit=100) if r.route in ("/x", "/y")] == ["/y"]
    assert "api.records_expired" in [e.kind for e in store.ledger_entries()]


async def test_readiness_names_no_customer(world: ApiWorld) -> None:
    for customer in DEMO_CUSTOMERS:
        run = world.store.start_run("sync", customer_id=customer, trigger="schedule")
        world.store.add_event(run, "sync_failed", level="error", system="zisson")
        world.store.finish_run(run, "failed", {"error": "zisson: 429"})
    async with client_at(world.app, "203.0.113.9") as anyone:
        ready = await anyone.get("/readyz")
    assert ready.status_code == 200 and ready.json()["connectors"]["zisson"] == "failing"
    assert not any(customer in ready.text for customer in DEMO_CUSTOMERS)
