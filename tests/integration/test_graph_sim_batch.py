"""JSON batching on the Graph simulator: limits, per-item results, dependsOn, throttling."""

from __future__ import annotations

import httpx
import pytest

from sandbox.graph_sim import GraphSimulator
from tests.fixtures.graph import GRAPH_APP, GRAPH_SECRET, fetch_token, graph_ssl_context

UPN = "sentralbord@kunde.no"
IMMUTABLE = {"Prefer": 'IdType="ImmutableId"'}


def purge_requests(ids: list[str]) -> list[dict[str, object]]:
    return [
        {
            "id": str(n),
            "method": "POST",
            "url": f"/users/{UPN}/messages/{message_id}/permanentDelete",
            "headers": IMMUTABLE,
        }
        for n, message_id in enumerate(ids, 1)
    ]


@pytest.fixture
def mailbox(graph_sim: GraphSimulator) -> GraphSimulator:
    graph_sim.add_mailbox(UPN)
    return graph_sim


def test_a_batch_of_permanent_deletes(mailbox: GraphSimulator, graph_client: httpx.Client) -> None:
    ids = [mailbox.add_message(UPN, "inbox", subject=f"m{n}", sender="a@b.no") for n in range(20)]
    missing = purge_requests(["AAkALgAAnope="])[0] | {"id": "missing"}

    response = graph_client.post("/$batch", json={"requests": [*purge_requests(ids[:19]), missing]})

    assert response.status_code == 200
    by_id = {r["id"]: r for r in response.json()["responses"]}
    assert len(by_id) == 20
    assert all(by_id[str(n)]["status"] == 204 for n in range(1, 20))
    assert "body" not in by_id["1"]
    assert by_id["missing"]["status"] == 404
    assert by_id["missing"]["body"]["error"]["code"] == "ErrorItemNotFound"
    assert [m["id"] for m in mailbox.messages(UPN)] == [ids[19]]
    counters = mailbox.counters
    assert counters["batches"] == 1 and counters["batch_items"] == 20
    assert counters["permanent_deletes"] == 19
    assert counters["max_in_flight"] <= 4


def test_more_than_twenty_requests_is_a_bad_request(
    mailbox: GraphSimulator, graph_client: httpx.Client
) -> None:
    requests = [{"id": str(n), "method": "GET", "url": f"/users/{UPN}"} for n in range(21)]

    response = graph_client.post("/$batch", json={"requests": requests})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadRequest"
    assert mailbox.counters["batch_items"] == 0


def test_items_run_with_their_own_headers_and_bodies(
    mailbox: GraphSimulator, graph_client: httpx.Client
) -> None:
    folder = mailbox.add_contact_folder(UPN, "Kunde 1")
    message_id = mailbox.add_message(UPN, "inbox", subject="x", sender="a@b.no")
    response = graph_client.post(
        "/$batch",
        json={
            "requests": [
                {
                    "id": "create",
                    "method": "POST",
                    "url": f"users/{UPN}/contactFolders/{folder}/contacts",
                    "headers": {"Content-Type": "application/json"},
                    "body": {"givenName": "Kari"},
                },
                {
                    "id": "read",
                    "method": "GET",
                    "url": f"/users/{UPN}/messages/{message_id}?$select=subject",
                    "headers": IMMUTABLE,
                },
                {"id": "regular", "method": "GET", "url": f"/users/{UPN}/messages?$select=id"},
            ]
        },
        headers=IMMUTABLE,  # the batch's own Prefer does not reach the items
    )

    by_id = {r["id"]: r for r in response.json()["responses"]}
    assert by_id["create"]["status"] == 201
    assert by_id["create"]["body"]["displayName"] == "Kari"
    assert by_id["read"]["body"]["id"] == message_id
    assert by_id["regular"]["body"]["value"][0]["id"] != message_id
    no_type = graph_client.post(
        "/$batch",
        json={"requests": [{"id": "1", "method": "POST", "url": "/x", "body": {"a": 1}}]},
    )
    assert no_type.status_code == 400


def test_depends_on_orders_items_and_fails_dependents(
    mailbox: GraphSimulator, graph_client: httpx.Client
) -> None:
    message_id = mailbox.add_message(UPN, "inbox", subject="x", sender="a@b.no")
    first = f"/users/{UPN}/messages/{message_id}"
    response = graph_client.post(
        "/$batch",
        json={
            "requests": [
                {"id": "3", "method": "GET", "url": first, "dependsOn": ["2"]},
                {
                    "id": "2",
                    "method": "POST",
                    "url": first + "/permanentDelete",
                    "dependsOn": ["1"],
                },
                {"id": "1", "method": "GET", "url": first},
                {"id": "4", "method": "GET", "url": f"/users/{UPN}/messages/nope"},
                {"id": "5", "method": "GET", "url": first, "dependsOn": ["4"]},
            ]
        },
    )

    results = response.json()["responses"]
    order = [r["id"] for r in results]
    status = {r["id"]: r["status"] for r in results}
    assert order.index("1") < order.index("2") < order.index("3")
    assert status == {"1": 200, "2": 204, "3": 404, "4": 404, "5": 424}


def test_throttled_items_get_their_own_429_and_retry_after() -> None:
    with GraphSimulator(request_budget=5, budget_window_seconds=600, time_scale=60) as sim:
        sim.add_app(GRAPH_APP, secret=GRAPH_SECRET)
        sim.add_mailbox(UPN)
        ids = [sim.add_message(UPN, "inbox", subject=f"m{n}", sender="a@b.no") for n in range(8)]
        with httpx.Client(
            base_url=sim.graph_url,
            verify=graph_ssl_context(sim),
            headers={"Authorization": f"Bearer {fetch_token(sim)}"},
        ) as client:
            response = client.post("/$batch", json={"requests": purge_requests(ids)})

        results = response.json()["responses"]
        throttled = [r for r in results if r["status"] == 429]
        assert response.status_code == 200
        assert sum(r["status"] == 204 for r in results) == 5 and len(throttled) == 3
        for item in throttled:
            assert item["body"]["error"]["code"] == "ApplicationThrottled"
            assert 1 <= int(item["headers"]["Retry-After"]) <= 10  # a 10 s window at scale 60
        assert len(sim.purged(UPN)) == 5
        assert sim.counters["throttled_budget"] == 3 and sim.counters["429"] == 3


def test_a_lost_item_answer_is_a_504_after_the_write(
    mailbox: GraphSimulator, graph_client: httpx.Client
) -> None:
    message_id = mailbox.add_message(UPN, "inbox", subject="x", sender="a@b.no")
    mailbox.fail_next(1, status="drop")

    response = graph_client.post("/$batch", json={"requests": purge_requests([message_id])})

    assert response.status_code == 200
    assert response.json()["responses"][0]["status"] == 504
    assert [m["id"] for m in mailbox.purged(UPN)] == [message_id]  # done all the same
