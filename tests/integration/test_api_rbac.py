"""Every endpoint × every role, no token, and a revoked token: 401 and 403 exactly where
daemon/api/access.py says, never any data in a refusal, and an audit record of each call
made with a valid token (and none of the others: anyone could make those).

Runs on SQLite and PostgreSQL (the store fixture).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from daemon.api import access
from daemon.api.ratelimit import FailureLimiter
from daemon.api.testing import DEMO_PERSON, REVOKED, WORLD_TOKENS, ApiWorld, api_world
from daemon.store import Role, Store

# None: no Authorization header at all.
CALLERS: list[str | None] = [*WORLD_TOKENS, REVOKED, None]


@dataclass(frozen=True)
class Call:
    method: str
    template: str
    path: Callable[[ApiWorld], str]
    json: Any = None
    form: str | None = None


def fixed(path: str) -> Callable[[ApiWorld], str]:
    return lambda _world: path


CALLS = [
    Call("GET", "/healthz", fixed("/healthz")),
    Call("GET", "/readyz", fixed("/readyz")),
    Call("GET", "/openapi.json", fixed("/openapi.json")),
    Call("GET", "/docs", fixed("/docs")),
    Call("GET", "/metrics", fixed("/metrics")),
    Call("GET", "/dashboard/login", fixed("/dashboard/login")),
    Call("POST", "/dashboard/login", fixed("/dashboard/login"), form="token=pds_nothing"),
    Call("POST", "/dashboard/logout", fixed("/dashboard/logout")),
    Call("GET", "/dashboard/style.css", fixed("/dashboard/style.css")),
    Call("GET", "/dashboard", fixed("/dashboard")),
    Call("GET", "/dashboard/runs", fixed("/dashboard/runs")),
    Call("GET", "/dashboard/casework", fixed("/dashboard/casework")),
    Call("GET", "/dashboard/erasures", fixed("/dashboard/erasures")),
    Call("GET", "/dashboard/incidents", fixed("/dashboard/incidents")),
    Call(
        "GET",
        "/dashboard/customers/{customer_id}",
        fixed("/dashboard/customers/acme"),
    ),
    Call("GET", "/api/v1/customers", fixed("/api/v1/customers")),
    Call(
        "GET",
        "/api/v1/customers/{customer_id}/report",
        fixed("/api/v1/customers/acme/report"),
    ),
    Call("GET", "/api/v1/runs", fixed("/api/v1/runs?customer=acme&since=1h")),
    Call("GET", "/api/v1/runs/{run_id}", lambda w: f"/api/v1/runs/{w.demo.failed_run}"),
    Call("GET", "/api/v1/logs", fixed("/api/v1/logs?level=warning")),
    Call("GET", "/api/v1/erasures", fixed("/api/v1/erasures")),
    Call(
        "GET",
        "/api/v1/erasures/{request_id}",
        lambda w: f"/api/v1/erasures/{w.demo.subject_erasure}",
    ),
    Call("GET", "/api/v1/disputes", fixed("/api/v1/disputes")),
    Call("GET", "/api/v1/tasks", fixed("/api/v1/tasks")),
    Call(
        "GET",
        "/api/v1/certificates/{request_id}",
        lambda w: f"/api/v1/certificates/{w.demo.certified_erasure}",
    ),
    Call("GET", "/api/v1/ledger/verify", fixed("/api/v1/ledger/verify")),
    Call("POST", "/api/v1/ledger/verify", fixed("/api/v1/ledger/verify")),
    Call("GET", "/api/v1/audit", fixed("/api/v1/audit?limit=5")),
    Call("GET", "/api/v1/tasks/{task_id}", lambda w: f"/api/v1/tasks/{w.demo.task}"),
    Call(
        "POST",
        "/api/v1/tasks/{task_id}/done",
        lambda w: f"/api/v1/tasks/{w.demo.task}/done",
        json={"note": "fixed in Zisson"},
    ),
    Call(
        "POST",
        "/api/v1/disputes/{dispute_id}/resolve",
        lambda w: f"/api/v1/disputes/{w.demo.dispute}/resolve",
        json={"winner": "firestore"},
    ),
    Call("POST", "/api/v1/sync", fixed("/api/v1/sync"), json={"customer": "acme"}),
    Call(
        "POST",
        "/api/v1/erasures",
        fixed("/api/v1/erasures"),
        json={
            "customer": "acme",
            "scope": "subject",
            "emails": [DEMO_PERSON["email"]],
            "reason": "ticket 4712",
        },
    ),
    Call(
        "POST",
        "/api/v1/erasures/{request_id}/approve",
        lambda w: f"/api/v1/erasures/{w.demo.customer_erasure}/approve",
    ),
    Call(
        "POST",
        "/api/v1/erasures/{request_id}/cancel",
        lambda w: f"/api/v1/erasures/{w.demo.certified_erasure}/cancel",
    ),
    Call(
        "POST",
        "/api/v1/erasures/{request_id}/include",
        lambda w: f"/api/v1/erasures/{w.demo.subject_erasure}/include",
        json={"items": ["zisson:k3f7q2ma"]},
    ),
]


def test_the_matrix_covers_every_endpoint() -> None:
    assert sorted((c.method, c.template) for c in CALLS) == sorted(access.ACCESS)


@pytest.fixture
async def world(store: Store, master_key: bytes, tmp_path: Path) -> AsyncIterator[ApiWorld]:
    yield api_world(store, master_key, tmp_path)


def secrets_of(world: ApiWorld) -> list[str]:
    """What a refusal must never contain: ids, customers, a person's data, tokens."""
    demo = world.demo
    ids = [demo.ok_run, demo.failed_run, demo.subject_erasure, demo.customer_erasure]
    return [*ids, "acme", "fjord", *DEMO_PERSON.values(), *world.tokens.values()]


async def test_every_endpoint_by_every_caller(world: ApiWorld) -> None:
    # Some 80 failed authentications from one address: more than the limiter allows.
    world.app.state.ctx.limiter = FailureLimiter(burst=10_000, per_minute=1)
    transport = httpx.ASGITransport(app=world.app)
    seen: list[tuple[str, str, str | None, int]] = []
    async with httpx.AsyncClient(transport=transport, base_url="http://pdsync.test") as client:
        for call in CALLS:
            allowed = access.allowed_roles((call.method, call.template), metrics_public=True)
            for caller in CALLERS:
                headers = world.auth(caller)
                content = None
                if call.form is not None:
                    form = (await client.get("/dashboard/login")).text
                    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
                    assert csrf is not None
                    headers["Content-Type"] = "application/x-www-form-urlencoded"
                    content = f"{call.form}&csrf={csrf.group(1)}"
                before = store_last_id(world.store)
                response = await client.request(
                    call.method,
                    call.path(world),
                    headers=headers,
                    json=call.json,
                    content=content,
                )
                status = response.status_code
                seen.append((call.method, call.template, caller, status))
                where = f"{call.method} {call.template} as {caller}: {status} {response.text[:200]}"
                assert status < 500, where
                valid = caller in WORLD_TOKENS
                role = Role(WORLD_TOKENS[caller]) if caller in WORLD_TOKENS else None
                if allowed is None:
                    assert status != 403, where
                elif not valid and call.method == "GET" and call.template.startswith("/dashboard"):
                    assert status == 303, where
                    assert response.headers["location"] == "/dashboard/login"
                elif not valid:
                    assert status == 401, where
                    assert response.headers["www-authenticate"] == "Bearer"
                elif role not in allowed:
                    assert status == 403, where
                elif caller == "alice" and call.template.endswith("/approve"):
                    # The right role, the wrong person: alice asked for the erasure.
                    assert (status, response.json()["error"]) == (403, "same_admin"), where
                else:
                    assert status not in (401, 403), where
                if status in (401, 403, 303):
                    if response.headers.get("content-type") == "application/json":
                        assert set(response.json()) == {"error", "detail"}, where
                    assert not [s for s in secrets_of(world) if s in response.text], where
                await assert_audited(world.store, call, caller, status, before)
    assert len(seen) == len(CALLS) * len(CALLERS)


def store_last_id(store: Store) -> int:
    last = store.list_api_calls(limit=1)
    return last[0].id if last else 0


async def assert_audited(
    store: Store, call: Call, caller: str | None, status: int, before: int
) -> None:
    name = caller if caller in WORLD_TOKENS else None
    if call.template in access.NOT_AUDITED or name is None:
        assert store_last_id(store) == before, f"{call} by {caller} was recorded"
        return
    last = store.list_api_calls(limit=1)[0]
    expected = (name, call.method, call.template, status)
    assert (last.token_name, last.method, last.route, last.status) == expected
    assert last.role == WORLD_TOKENS[name]


async def test_metrics_can_require_a_token(world: ApiWorld) -> None:
    from daemon.api.app import create_app
    from daemon.api.settings import ApiConfig

    app = create_app(world.settings, world.store, config=ApiConfig(metrics_public=False))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://pdsync.test"
    ) as client:
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.get("/metrics", headers=world.auth("aud"))).status_code == 200
        spec = (await client.get("/openapi.json")).json()
    assert spec["paths"]["/metrics"]["get"]["x-roles"] == "admin, operator, auditor"


async def test_a_cookie_is_a_credential_for_reading_only(world: ApiWorld) -> None:
    bob = next(t for t in world.store.list_tokens(include_revoked=False) if t.name == "bob")
    session = world.store.create_session(bob.id, lifetime=timedelta(hours=1))
    cookie = {"Cookie": f"pdsync_session={session}"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=world.app), base_url="http://pdsync.test"
    ) as client:
        assert (await client.get("/api/v1/erasures", headers=cookie)).status_code == 200
        refused = await client.post(
            "/api/v1/erasures",
            headers=cookie,
            json={"customer": "acme", "scope": "customer", "reason": "contract ended"},
        )
    assert refused.status_code == 401  # no state changes through a cookie: no CSRF
    assert len(world.store.list_erasures()) == 3
