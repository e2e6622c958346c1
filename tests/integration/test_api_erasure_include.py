"""Ambiguous items of an erasure through the admin API: shown with their evidence
(masked), included by an admin by id, recorded; on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from daemon.api.testing import DEMO_PERSON, ApiWorld, api_world
from daemon.erasure import item_id
from daemon.store import ErasureState, Store
from daemon.store.rows import NewErasureItem

Client = httpx.AsyncClient
SHARED = ({"kind": "phone", "position": 0, "strength": "shared"},)
PERSONAL = ({"kind": "email", "position": 0, "strength": "personal"}, *SHARED)


@pytest.fixture
async def world(store: Store, master_key: bytes, tmp_path: Path) -> AsyncIterator[ApiWorld]:
    yield api_world(store, master_key, tmp_path)


@pytest.fixture
async def client(world: ApiWorld) -> AsyncIterator[Client]:
    transport = httpx.ASGITransport(app=world.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://pdsync.test") as c:
        yield c


def planned(world: ApiWorld) -> str:
    """The demo's subject erasure as planned: one item to erase, two ambiguous."""
    request = world.demo.subject_erasure
    store = world.store
    store.add_erasure_items(
        request,
        [
            NewErasureItem(
                system="zisson", kind="contact", item_id="z-1", scope="acme", evidence=PERSONAL
            ),
            NewErasureItem(
                system="zisson",
                kind="contact",
                item_id="z-2",
                scope="acme",
                status="ambiguous",
                evidence=SHARED,
            ),
            NewErasureItem(
                system="firestore",
                kind="contact",
                item_id="f-2",
                scope="acme",
                status="ambiguous",
                evidence=SHARED,
            ),
        ],
        phase="plan",
    )
    store.update_erasure(
        request,
        state=ErasureState.PLANNED,
        plan={"zisson": {"contact": 1}},
        strengths=[
            {"kind": "email", "position": 0, "strength": "personal"},
            {"kind": "phone", "position": 0, "strength": "shared"},
        ],
    )
    return request


async def test_a_plans_ambiguous_items_are_shown_masked_and_included_by_id(
    world: ApiWorld, client: Client
) -> None:
    request = planned(world)
    shown = await client.get(f"/api/v1/erasures/{request}", headers=world.auth("aud"))
    assert shown.status_code == 200
    body = shown.json()
    assert body["ambiguous"] == {"firestore": {"contact": 1}, "zisson": {"contact": 1}}
    assert body["strengths"] == {"emails": ["personal"], "phones": ["shared"], "names": []}
    assert {i["id"] for i in body["items"]} == {
        item_id("zisson", "contact", "z-2"),
        item_id("firestore", "contact", "f-2"),
    }
    assert body["items"][0]["matched"] == [
        {"kind": "phone", "identifier": body["masked"]["phones"][0], "strength": "shared"}
    ]
    assert not any(value in shown.text for value in DEMO_PERSON.values())
    assert not any(i["held_by_others"] for i in body["items"])

    wanted = item_id("zisson", "contact", "z-2")
    refused = await client.post(
        f"/api/v1/erasures/{request}/include",
        headers=world.auth("bob"),
        json={"items": ["zisson:aaaaaaaa"]},
    )
    assert refused.status_code == 422 and "nothing included" in refused.json()["detail"]
    assert world.store.erasure_items(request, status="ambiguous")  # unchanged

    included = await client.post(
        f"/api/v1/erasures/{request}/include", headers=world.auth("bob"), json={"items": [wanted]}
    )
    assert included.status_code == 200, included.text
    body = included.json()
    assert body["plan"] == {"zisson": {"contact": 2}}
    assert body["ambiguous"] == {"firestore": {"contact": 1}}
    [item] = [i for i in body["items"] if i["id"] == wanted]
    assert (item["status"], item["included_by"]) == ("pending", "bob")
    entries = [e for e in world.store.ledger_entries() if e.kind == "erasure_included"]
    assert entries and entries[-1].payload["item_ids"] == [wanted]
    assert entries[-1].payload["by"] == "bob"


async def test_a_whole_customers_mail_another_customer_holds_too_is_shown_and_included(
    world: ApiWorld, client: Client
) -> None:
    request = world.demo.customer_erasure  # awaiting a second admin
    world.store.add_erasure_items(
        request,
        [
            NewErasureItem(
                system="outlook", kind="message", item_id="m-1", scope="svc", status="ambiguous"
            )
        ],
        phase="plan",
    )
    wanted = item_id("outlook", "message", "m-1")
    shown = await client.get(f"/api/v1/erasures/{request}", headers=world.auth("aud"))
    assert shown.status_code == 200
    [item] = shown.json()["items"]
    assert (item["id"], item["held_by_others"], item["matched"]) == (wanted, True, [])
    assert shown.json()["ambiguous"] == {"outlook": {"message": 1}}

    included = await client.post(
        f"/api/v1/erasures/{request}/include", headers=world.auth("bob"), json={"items": [wanted]}
    )
    assert included.status_code == 200, included.text
    [item] = included.json()["items"]
    assert (item["status"], item["included_by"]) == ("pending", "bob")
    assert included.json()["ambiguous"] == {}


async def test_includes_before_the_plan_are_kept_and_too_late_is_409(
    world: ApiWorld, client: Client
) -> None:
    request = world.demo.subject_erasure  # received: no plan yet
    wanted = item_id("zisson", "contact", "z-7")
    kept = await client.post(
        f"/api/v1/erasures/{request}/include", headers=world.auth("alice"), json={"items": [wanted]}
    )
    assert kept.status_code == 200 and kept.json()["includes"] == [wanted]
    assert [i["item"] for i in world.store.get_erasure(request).includes] == [wanted]

    world.store.update_erasure(request, state=ErasureState.EXECUTING)
    late = await client.post(
        f"/api/v1/erasures/{request}/include", headers=world.auth("alice"), json={"items": [wanted]}
    )
    assert late.status_code == 409 and late.json()["error"] == "wrong_state"

    whole = await client.post(
        f"/api/v1/erasures/{world.demo.customer_erasure}/include",
        headers=world.auth("bob"),
        json={"items": [wanted]},
    )
    # A whole-customer erasure's plan has its own ambiguous items (another customer's
    # too): an id that is none of them is refused, naming it.
    assert whole.status_code == 422 and f"no item of its plan is {wanted}" in whole.json()["detail"]
    for bad in ([], ["zisson"], ["ZISSON:AAAAAAAA"]):
        malformed = await client.post(
            f"/api/v1/erasures/{world.demo.subject_erasure}/include",
            headers=world.auth("bob"),
            json={"items": bad},
        )
        assert malformed.status_code == 422


async def test_an_erasure_asked_for_with_includes_keeps_them_for_its_plan(
    world: ApiWorld, client: Client
) -> None:
    wanted = item_id("zisson", "contact", "z-7")
    made = await client.post(
        "/api/v1/erasures",
        headers=world.auth("alice"),
        json={
            "customer": "acme",
            "scope": "subject",
            "phones": [DEMO_PERSON["phone"]],
            "reason": "ticket 4713",
            "include": [wanted],
        },
    )
    assert made.status_code == 201, made.text
    assert made.json()["includes"] == [wanted] and made.json()["items"] == []
    kinds = [e.kind for e in world.store.ledger_entries()]
    assert "erasure_include_requested" in kinds
    whole = await client.post(
        "/api/v1/erasures",
        headers=world.auth("alice"),
        json={"customer": "acme", "scope": "customer", "reason": "x", "include": [wanted]},
    )
    # Kept for its plan, as a subject erasure's (the plan cancels it if it lacks the id).
    assert whole.status_code == 201, whole.text
    assert whole.json()["includes"] == [wanted]
