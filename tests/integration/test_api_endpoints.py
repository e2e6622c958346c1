"""What the admin API does, endpoint by endpoint, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from daemon.api.app import create_app
from daemon.api.testing import DEMO_PERSON, ApiWorld, api_world
from daemon.certificate import verify_certificate
from daemon.store import Store
from daemon.store.schema import ledger_checkpoints, ledger_entries
from tests.fixtures.zisson import ZissonBound

Client = httpx.AsyncClient


@pytest.fixture
async def world(store: Store, master_key: bytes, tmp_path: Path) -> AsyncIterator[ApiWorld]:
    yield api_world(store, master_key, tmp_path)


@pytest.fixture
async def client(world: ApiWorld) -> AsyncIterator[Client]:
    transport = httpx.ASGITransport(app=world.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://pdsync.test") as c:
        yield c


def no_person(text: str) -> bool:
    return not any(value in text for value in DEMO_PERSON.values())


async def test_a_second_admin_approves_a_whole_customer_erasure(
    world: ApiWorld, client: Client
) -> None:
    path = f"/api/v1/erasures/{world.demo.customer_erasure}/approve"
    refused = await client.post(path, headers=world.auth("alice"))
    assert refused.status_code == 403 and refused.json()["error"] == "same_admin"

    approved = await client.post(path, headers=world.auth("bob"))
    assert approved.status_code == 200
    body = approved.json()
    assert (body["state"], body["approved_by"], body["requested_by"]) == (
        "executing",
        "bob",
        "alice",
    )
    again = await client.post(path, headers=world.auth("bob"))
    assert again.status_code == 409
    kinds = [e.kind for e in world.store.ledger_entries()]
    assert "erasure_approved" in kinds


async def test_an_admin_asks_for_and_cancels_an_erasure(world: ApiWorld, client: Client) -> None:
    made = await client.post(
        "/api/v1/erasures",
        headers=world.auth("alice"),
        json={
            "customer": "acme",
            "scope": "subject",
            "emails": [DEMO_PERSON["email"]],
            "phones": ["912 34 567"],
            "reason": "ticket 4712",
        },
    )
    assert made.status_code == 201, made.text
    body = made.json()
    assert (body["state"], body["requested_by"], body["scope"]) == ("received", "alice", "subject")
    assert body["masked"]["emails"] == ["k***@f***.no"] and no_person(made.text)
    assert world.store.erasure_identifiers(body["id"])  # kept, encrypted, until completion

    cancelled = await client.post(
        f"/api/v1/erasures/{body['id']}/cancel", headers=world.auth("bob")
    )
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    again = await client.post(f"/api/v1/erasures/{body['id']}/cancel", headers=world.auth("bob"))
    assert again.status_code == 409
    late = await client.post(
        f"/api/v1/erasures/{world.demo.certified_erasure}/cancel", headers=world.auth("bob")
    )
    assert late.status_code == 409


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"customer": "acme", "scope": "subject", "emails": ["kari.nordmann"]}, "bad_identifier"),
        ({"customer": "acme", "scope": "subject", "phones": ["12"]}, "bad_identifier"),
        ({"customer": "acme", "scope": "subject"}, "bad_identifier"),
        ({"customer": "acme", "scope": "customer", "names": ["Kari Nordmann"]}, "invalid_request"),
        ({"customer": "nobody", "scope": "customer"}, "unknown_customer"),
        ({"customer": "kari.nordmann@fjordkraft.no", "scope": "customer"}, "invalid_request"),
        ({"customer": "acme", "scope": "everything"}, "invalid_request"),
    ],
)
async def test_bad_erasure_requests_are_422_without_echoing_them(
    world: ApiWorld, client: Client, body: dict[str, object], error: str
) -> None:
    response = await client.post(
        "/api/v1/erasures", headers=world.auth("alice"), json={"reason": "t", **body}
    )
    assert response.status_code == 422 and response.json()["error"] == error
    assert "kari" not in response.text.lower() and "Nordmann" not in response.text


async def test_a_reason_with_personal_data_is_refused(world: ApiWorld, client: Client) -> None:
    response = await client.post(
        "/api/v1/erasures",
        headers=world.auth("alice"),
        json={
            "customer": "acme",
            "scope": "customer",
            "reason": f"asked by {DEMO_PERSON['email']}",
        },
    )
    assert response.status_code == 422 and response.json()["error"] == "personal_data"
    assert no_person(response.text)


async def test_an_erased_customer_is_gone(world: ApiWorld, client: Client) -> None:
    world.store.destroy_customer_key("fjord")
    response = await client.post(
        "/api/v1/erasures",
        headers=world.auth("alice"),
        json={"customer": "fjord", "scope": "customer", "reason": "again"},
    )
    assert response.status_code == 410


async def test_nothing_personal_reaches_an_auditor(world: ApiWorld, client: Client) -> None:
    demo = world.demo
    paths = [
        "/api/v1/customers",
        "/api/v1/runs",
        f"/api/v1/runs/{demo.failed_run}",
        "/api/v1/logs",
        "/api/v1/erasures",
        f"/api/v1/erasures/{demo.subject_erasure}",
        "/api/v1/disputes",
        "/api/v1/tasks",
        f"/api/v1/certificates/{demo.certified_erasure}",
        "/api/v1/audit",
        "/metrics",
        "/readyz",
        "/dashboard",
        "/dashboard/runs",
        "/dashboard/casework",
        "/dashboard/erasures",
        "/dashboard/incidents",
    ]
    for path in paths:
        response = await client.get(path, headers=world.auth("aud"))
        assert response.status_code == 200, path
        assert no_person(response.text), path
    # The instruction names the person: operators read it, on purpose.
    task = await client.get(f"/api/v1/tasks/{demo.task}", headers=world.auth("olga"))
    assert task.status_code == 200 and DEMO_PERSON["name"] in task.json()["instruction"]


async def test_an_operator_resolves_a_dispute(world: ApiWorld, client: Client) -> None:
    path = f"/api/v1/disputes/{world.demo.dispute}/resolve"
    wrong = await client.post(path, headers=world.auth("olga"), json={"winner": "outlook"})
    assert wrong.status_code == 422 and wrong.json()["error"] == "invalid_winner"
    resolved = await client.post(path, headers=world.auth("olga"), json={"winner": "zisson"})
    assert resolved.status_code == 200
    assert resolved.json() | {"opened_at": None, "resolved_at": None} == {
        "id": world.demo.dispute,
        "customer": "acme",
        "link_id": resolved.json()["link_id"],
        "field": "title",
        "systems": ["firestore", "zisson"],
        "review": False,  # a question of a field's value, not of who a record is
        "answers": {},
        "status": "resolved",
        "opened_at": None,
        "resolved_at": None,
        "winner": "zisson",
        "resolved_by": "olga",
        "carried_out": False,  # until the next sync
    }
    assert (
        await client.post(path, headers=world.auth("olga"), json={"winner": "zisson"})
    ).status_code == 409
    missing = await client.post(
        "/api/v1/disputes/999/resolve", headers=world.auth("olga"), json={"winner": "zisson"}
    )
    assert missing.status_code == 404
    assert [e.kind for e in world.store.ledger_entries()][-1] == "dispute.resolved"
    assert (await client.get("/api/v1/disputes", headers=world.auth("aud"))).json() == []


async def test_an_operator_completes_a_task(world: ApiWorld, client: Client) -> None:
    path = f"/api/v1/tasks/{world.demo.task}/done"
    leaky = await client.post(
        path, headers=world.auth("olga"), json={"note": f"called {DEMO_PERSON['phone']}"}
    )
    assert leaky.status_code == 422 and no_person(leaky.text)
    done = await client.post(path, headers=world.auth("olga"), json={"note": "changed in Zisson"})
    assert done.status_code == 200
    assert (done.json()["status"], done.json()["note"]) == ("done", "changed in Zisson (by olga)")
    assert (await client.post(path, headers=world.auth("olga"))).status_code == 409
    assert (
        await client.post("/api/v1/tasks/999/done", headers=world.auth("olga"))
    ).status_code == 404
    assert (await client.get("/api/v1/tasks/999", headers=world.auth("olga"))).status_code == 404


async def test_sync_now_returns_the_runs_it_started(world: ApiWorld, client: Client) -> None:
    started = await client.post("/api/v1/sync", headers=world.auth("olga"), json={})
    assert started.status_code == 202
    body = started.json()
    assert body["trigger"].startswith("api:olga:")
    assert [r["customer"] for r in body["runs"]] == ["acme", "fjord"]
    assert all(r["run_id"] for r in body["runs"])
    listed = await client.get(
        "/api/v1/runs", params={"trigger": body["trigger"]}, headers=world.auth("aud")
    )
    assert sorted(r["id"] for r in listed.json()) == sorted(r["run_id"] for r in body["runs"])

    waited = await client.post(
        "/api/v1/sync", headers=world.auth("bob"), json={"customer": "fjord", "wait": True}
    )
    assert waited.status_code == 200
    assert [(r["customer"], r["status"]) for r in waited.json()["runs"]] == [("fjord", "completed")]
    unknown = await client.post(
        "/api/v1/sync", headers=world.auth("olga"), json={"customer": "nobody"}
    )
    assert unknown.status_code == 422
    assert world.sync_service.calls == 3


async def test_without_services_the_endpoints_that_need_them_say_503(world: ApiWorld) -> None:
    app = create_app(world.settings, world.store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        sync = await c.post("/api/v1/sync", headers=world.auth("olga"), json={})
        erase = await c.post(
            "/api/v1/erasures",
            headers=world.auth("alice"),
            json={"customer": "acme", "scope": "customer", "reason": "r"},
        )
        verify = await c.get("/api/v1/ledger/verify", headers=world.auth("aud"))
    assert (sync.status_code, erase.status_code) == (503, 503)
    assert verify.status_code == 200 and verify.json()["ok"]  # the key comes from the config


async def test_certificates_download_as_issued_json_and_as_pdf(
    world: ApiWorld, client: Client
) -> None:
    request_id = world.demo.certified_erasure
    as_json = await client.get(f"/api/v1/certificates/{request_id}", headers=world.auth("aud"))
    assert as_json.status_code == 200
    assert request_id is not None
    stored = world.store.get_erasure(request_id).certificate
    assert stored is not None and as_json.content == stored.encode()
    trusted = next(iter(world.ledger.verifiers))
    assert verify_certificate(as_json.content, trusted_key_id=trusted) == []
    pdf = await client.get(
        f"/api/v1/certificates/{request_id}?format=pdf", headers=world.auth("aud")
    )
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert pdf.headers["content-disposition"].startswith("attachment;")
    pending = await client.get(
        f"/api/v1/certificates/{world.demo.subject_erasure}", headers=world.auth("aud")
    )
    assert pending.status_code == 404 and pending.json()["error"] == "no_certificate"
    bad = await client.get("/api/v1/certificates/not-an-id", headers=world.auth("aud"))
    assert bad.status_code == 422


async def test_ledger_verify_finds_a_changed_row(
    world: ApiWorld, client: Client, store_url: str
) -> None:
    ok = await client.post("/api/v1/ledger/verify", headers=world.auth("aud"))
    assert ok.json()["ok"] is True and ok.json()["checkpoints"] >= 1
    engine = sa.create_engine(store_url, poolclass=sa.NullPool)
    with engine.begin() as conn:
        conn.execute(
            sa.update(ledger_entries).where(ledger_entries.c.seq == 0).values(kind="edited")
        )
    engine.dispose()
    tampered = (await client.get("/api/v1/ledger/verify", headers=world.auth("aud"))).json()
    assert tampered["ok"] is False
    assert (
        tampered["findings"][0]["problem"] == "row_changed" and tampered["findings"][0]["seq"] == 0
    )


async def test_ledger_verify_finds_the_newest_rows_gone_against_the_witness(
    world: ApiWorld, store_url: str, tmp_path: Path
) -> None:
    from daemon.ledger import FileWitness

    world.ledger.record("sync.completed", customer_id="acme", run="r-last", changed=1)
    world.ledger.checkpoint()
    witness = FileWitness(tmp_path / "witness.jsonl")
    for checkpoint in world.store.checkpoints():
        witness.publish(checkpoint)
    ledger = world.settings.ledger.model_copy(update={"witness": str(witness.path)})
    settings = world.settings.model_copy(update={"ledger": ledger})
    app = create_app(settings, world.store, ledger=world.ledger)
    transport = httpx.ASGITransport(app=app)
    client = httpx.AsyncClient(transport=transport, base_url="http://pdsync.test")
    ok = await client.get("/api/v1/ledger/verify", headers=world.auth("aud"))
    assert ok.json()["ok"] is True, ok.json()
    newest = world.store.checkpoints()[-1].size
    engine = sa.create_engine(store_url, poolclass=sa.NullPool)
    with engine.begin() as conn:  # the newest row and the checkpoint that signed it
        conn.execute(sa.delete(ledger_entries).where(ledger_entries.c.seq == newest - 1))
        conn.execute(sa.delete(ledger_checkpoints).where(ledger_checkpoints.c.size == newest))
    engine.dispose()
    cut = (await client.get("/api/v1/ledger/verify", headers=world.auth("aud"))).json()
    assert cut["ok"] is False
    assert "tail_missing" in {f["problem"] for f in cut["findings"]}
    await client.aclose()


async def test_runs_and_logs_filter(world: ApiWorld, client: Client) -> None:
    demo = world.demo
    aud = world.auth("aud")
    failed = (await client.get("/api/v1/runs?status=failed", headers=aud)).json()
    assert [r["id"] for r in failed] == [demo.failed_run]
    fjord = (await client.get("/api/v1/runs?customer=fjord&since=1h", headers=aud)).json()
    assert [r["id"] for r in fjord] == [demo.other_run]
    assert (await client.get("/api/v1/runs?since=2h%20ago", headers=aud)).status_code == 422
    detail = (await client.get(f"/api/v1/runs/{demo.failed_run}", headers=aud)).json()
    assert [e["event"] for e in detail["events"]] == [
        "incident_erased_data_reappeared",
        "sync_failed",
    ]
    assert (
        await client.get(f"/api/v1/runs/{'0' * 8}-0000-0000-0000-{'0' * 12}", headers=aud)
    ).status_code == 404
    errors = (await client.get("/api/v1/logs?level=error&customer=acme", headers=aud)).json()
    assert {e["event"] for e in errors} == {"incident_erased_data_reappeared", "sync_failed"}
    one_run = (await client.get(f"/api/v1/logs?run={demo.other_run}", headers=aud)).json()
    assert [e["customer"] for e in one_run] == ["fjord"]


async def test_readiness_tells_a_failing_connector(world: ApiWorld, client: Client) -> None:
    ready = (await client.get("/readyz")).json()
    assert ready == {
        "status": "ready",
        "store": "ok",
        "connectors": {"firestore": "ok", "zisson": "ok"},
    }
    run = world.store.start_run("sync", customer_id="fjord", trigger="schedule")
    world.store.add_event(
        run, "sync_failed", level="error", system="zisson", detail={"error": "429"}
    )
    world.store.finish_run(run, "failed", {"error": "zisson: 429"})
    assert (await client.get("/readyz")).json()["connectors"] == {
        "firestore": "ok",
        "zisson": "failing",
    }
    world.store.close()
    down = await client.get("/readyz")
    assert down.status_code == 503 and down.json()["store"] == "unavailable"
    assert (await client.get("/healthz")).status_code == 200


async def test_metrics_count_each_connectors_requests_retries_and_429s(
    world: ApiWorld, zisson_json: ZissonBound
) -> None:
    zisson_json.sim.fail_next(2, status=429, retry_after=0.01)
    zisson_json.sim.fail_next(1, status=503, retry_after=0.01)
    await zisson_json.connector.read(zisson_json.customer)
    app = create_app(world.settings, world.store, connectors={"zisson": zisson_json.connector})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        text = (await c.get("/metrics")).text
    requests = zisson_json.connector.requests
    assert requests >= 4  # the three refused, and the one answered (plus the token)
    assert f'pdsync_connector_requests_total{{connector="zisson"}} {requests}.0' in text
    assert 'pdsync_connector_retries_total{connector="zisson"} 3.0' in text
    assert 'pdsync_connector_throttled_total{connector="zisson"} 2.0' in text


async def test_metrics_come_from_the_store(world: ApiWorld, client: Client) -> None:
    text = (await client.get("/metrics")).text
    for line in (
        'pdsync_erasures{state="awaiting_approval"} 1.0',
        'pdsync_erasures{state="completed"} 1.0',
        'pdsync_disputes_open{customer="acme"} 1.0',
        'pdsync_manual_tasks_open{customer="acme"} 1.0',
        'pdsync_quarantine_open{customer="acme"} 1.0',
        'pdsync_sync_last_changes{customer="fjord",system="firestore"} 2.0',
        'pdsync_sync_last_success{customer="acme"} 0.0',
        'pdsync_api_tokens_active{role="admin"} 2.0',
        'pdsync_incidents_24h{customer="acme",kind="erased_data_reappeared"} 1.0',
    ):
        assert line in text, line
    assert "pdsync_erasure_oldest_open_age_seconds " in text and "pdsync_ledger_entries " in text
    assert no_person(text)


async def test_errors_hold_no_data(world: ApiWorld, client: Client) -> None:
    aud = world.auth("aud")
    unknown = await client.get(f"/api/v1/{DEMO_PERSON['email']}", headers=aud)
    assert unknown.status_code == 404 and unknown.json() == {
        "error": "not_found",
        "detail": "not found",
    }
    wrong_method = await client.delete("/api/v1/runs", headers=aud)
    assert wrong_method.status_code == 405
    invalid = await client.get(f"/api/v1/logs?customer={DEMO_PERSON['email']}", headers=aud)
    assert invalid.status_code == 422 and no_person(invalid.text)
    garbage = await client.post(
        "/api/v1/sync",
        headers={**world.auth("olga"), "Content-Type": "application/json"},
        content=b'{"customer": "' + DEMO_PERSON["email"].encode() + b'"',
    )
    assert garbage.status_code == 422 and no_person(garbage.text)


async def test_the_docs_list_every_operation_and_its_roles(world: ApiWorld, client: Client) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    approve = spec["paths"]["/api/v1/erasures/{request_id}/approve"]["post"]
    assert approve["x-roles"] == "admin" and approve["security"] == [{"bearer": []}]
    assert "security" not in spec["paths"]["/healthz"]["get"]
    page = (await client.get("/docs")).text
    for path in spec["paths"]:
        assert f"<code>{path}</code>" in page
    assert "cdn" not in page.lower() and "<script" not in page


async def test_the_login_form_sets_an_httponly_cookie(world: ApiWorld, client: Client) -> None:
    form = (await client.get("/dashboard/login")).text
    found = re.search(r'name="csrf" value="([^"]+)"', form)
    assert found is not None
    csrf = found.group(1)
    bad = await client.post("/dashboard/login", data={"token": "pds_wrong", "csrf": csrf})
    assert bad.status_code == 401 and "Unknown or revoked token" in bad.text
    found = re.search(r'name="csrf" value="([^"]+)"', bad.text)  # the form again, anew
    assert found is not None
    good = await client.post(
        "/dashboard/login", data={"token": world.tokens["aud"], "csrf": found.group(1)}
    )
    assert good.status_code == 303 and good.headers["location"] == "/dashboard"
    cookie = good.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert world.store.list_api_calls(limit=1)[0].token_name == "aud"
    page = await client.get("/dashboard")  # the client keeps the cookie
    assert page.status_code == 200 and 'id="customers"' in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    out = await client.post("/dashboard/logout")
    assert out.status_code == 303
    assert (await client.get("/dashboard")).status_code == 303


async def test_a_huge_body_is_refused_unread(world: ApiWorld, client: Client) -> None:
    huge = {"customer": "acme", "scope": "customer", "reason": "x" * 100_000}
    response = await client.post("/api/v1/erasures", headers=world.auth("alice"), json=huge)
    assert response.status_code == 413
    assert world.store.list_api_calls(limit=1)[0].status == 413
