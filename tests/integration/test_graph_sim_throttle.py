"""Throttling and faults on the Graph simulator: concurrency, budget, time scale, faults."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from sandbox.graph_sim import GraphSimulator
from tests.fixtures.graph import GRAPH_APP, GRAPH_SECRET, fetch_token, graph_ssl_context

UPN = "sentralbord@kunde.no"


def _client(sim: GraphSimulator) -> httpx.Client:
    return httpx.Client(
        base_url=sim.graph_url,
        verify=graph_ssl_context(sim),
        headers={"Authorization": f"Bearer {fetch_token(sim)}"},
    )


def test_a_fifth_concurrent_request_on_a_mailbox_gets_mailbox_concurrency(
    graph_sim: GraphSimulator,
) -> None:
    graph_sim.add_app(GRAPH_APP, secret=GRAPH_SECRET)
    graph_sim.add_mailbox(UPN)
    graph_sim.add_mailbox("annen@kunde.no")
    urls = [f"/users/{UPN}/mailFolders/inbox"] * 7 + ["/users/annen@kunde.no/mailFolders/inbox"]
    clients = [_client(graph_sim) for _ in urls]
    for client in clients:  # connect first, so all eight arrive together
        client.get(f"/users/{UPN}/mailFolders/inbox")
    graph_sim.reset_counters()
    graph_sim.set_faults(latency_ms=400)  # service time, spent holding a slot
    start = threading.Barrier(len(urls))

    def call(client: httpx.Client, url: str) -> httpx.Response:
        start.wait()
        return client.get(url)

    with ThreadPoolExecutor(len(urls)) as pool:
        responses = list(pool.map(call, clients, urls))
    for client in clients:
        client.close()

    statuses = Counter(r.status_code for r in responses[:7])
    assert statuses == {200: 4, 429: 3}
    assert responses[7].status_code == 200  # another mailbox has slots of its own
    for refused in (r for r in responses if r.status_code == 429):
        assert refused.json()["error"]["code"] == "ApplicationThrottled"
        assert "MailboxConcurrency" in refused.json()["error"]["message"]
        assert int(refused.headers["Retry-After"]) >= 1
    counters = graph_sim.counters
    assert counters["concurrency_violations"] == counters["throttled_concurrency"] == 3
    assert counters["max_in_flight"] == 4


def test_occupancy_and_timeline_show_how_busy_a_mailbox_was(
    graph_sim: GraphSimulator,
) -> None:
    graph_sim.add_app(GRAPH_APP, secret=GRAPH_SECRET)
    graph_sim.add_mailbox(UPN)
    clients = [_client(graph_sim) for _ in range(2)]
    for client in clients:
        client.get(f"/users/{UPN}/mailFolders/inbox")
    graph_sim.reset_counters()
    assert graph_sim.timeline() == [] and graph_sim.occupancy() == {}
    graph_sim.set_faults(latency_ms=100)
    start = threading.Barrier(2)

    def call(client: httpx.Client) -> int:
        start.wait()
        return client.get(f"/users/{UPN}/mailFolders/inbox").status_code

    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(call, clients)) == [200, 200]
    time.sleep(0.2)  # idle afterwards
    for client in clients:
        client.close()

    timeline = graph_sim.timeline()
    assert len(timeline) == 2
    assert all(answered - admitted >= 0.1 for _, admitted, answered in timeline)
    [levels] = graph_sim.occupancy().values()
    assert levels.get(3, 0.0) == levels.get(4, 0.0) == 0.0
    assert levels[0] >= 0.15  # the idle time after the two requests
    assert levels[1] + levels[2] >= 0.1


def test_the_request_budget_frees_up_as_the_scaled_window_passes() -> None:
    # 600 s windows at time scale 600: a 1 s window, so Retry-After is 1.
    with GraphSimulator(request_budget=3, budget_window_seconds=600, time_scale=600) as sim:
        sim.add_app(GRAPH_APP, secret=GRAPH_SECRET)
        sim.add_mailbox(UPN)
        sim.add_mailbox("annen@kunde.no")
        with _client(sim) as client:
            ok = [client.get(f"/users/{UPN}/mailFolders/inbox").status_code for _ in range(3)]
            refused = client.get(f"/users/{UPN}/mailFolders/inbox")
            other_mailbox = client.get("/users/annen@kunde.no/mailFolders/inbox")
            time.sleep(float(refused.headers["Retry-After"]))
            after_wait = client.get(f"/users/{UPN}/mailFolders/inbox")

    assert ok == [200, 200, 200]
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    assert refused.json()["error"]["code"] == "ApplicationThrottled"
    assert other_mailbox.status_code == 200
    assert after_wait.status_code == 200
    assert sim.counters["throttled_budget"] == 1


def test_set_time_scale_changes_the_window_and_retry_after() -> None:
    with GraphSimulator(request_budget=1, budget_window_seconds=600) as sim:
        sim.add_app(GRAPH_APP, secret=GRAPH_SECRET)
        sim.add_mailbox(UPN)
        with _client(sim) as client:
            client.get(f"/users/{UPN}/mailFolders/inbox")
            unscaled = client.get(f"/users/{UPN}/mailFolders/inbox").headers["Retry-After"]
            sim.set_time_scale(60)
            scaled = client.get(f"/users/{UPN}/mailFolders/inbox").headers["Retry-After"]

    assert 595 <= int(unscaled) <= 600
    assert 1 <= int(scaled) <= 10


def test_injected_faults_are_seeded_and_counted(graph_sim: GraphSimulator) -> None:
    graph_sim.add_app(GRAPH_APP, secret=GRAPH_SECRET)
    graph_sim.add_mailbox(UPN)

    def run(seed: int) -> list[int | str]:
        graph_sim.set_faults(error_rate=0.2, rate_429=0.2, drop_rate=0.1, retry_after=0, seed=seed)
        outcomes: list[int | str] = []
        with _client(graph_sim) as client:  # token requests are never faulted
            for _ in range(60):
                try:
                    outcomes.append(client.get(f"/users/{UPN}/mailFolders/inbox").status_code)
                except httpx.TransportError:
                    outcomes.append("drop")
        return outcomes

    first, second = run(7), run(7)

    assert first == second
    counts = Counter(first)
    assert counts[200] and counts[429] and counts["drop"]
    assert sum(n for status, n in counts.items() if isinstance(status, int) and status >= 500)
    counters = graph_sim.counters
    assert counters["drops"] == 2 * counts["drop"]
    assert counters["429"] == 2 * counts[429]


def test_a_dropped_write_is_done_before_the_answer_is_lost(graph_sim: GraphSimulator) -> None:
    graph_sim.add_app(GRAPH_APP, secret=GRAPH_SECRET)
    graph_sim.add_mailbox(UPN)
    message_id = graph_sim.add_message(UPN, "inbox", subject="x", sender="a@b.no")
    with _client(graph_sim) as client:
        graph_sim.fail_next(1, status="drop")
        with pytest.raises(httpx.TransportError):
            client.post(f"/users/{UPN}/messages/{message_id}/permanentDelete")
        retried = client.post(f"/users/{UPN}/messages/{message_id}/permanentDelete")

    assert retried.status_code == 404  # already gone: the retry must count as success
    assert len(graph_sim.purged(UPN)) == 1


def test_sim_endpoints_are_never_faulted_and_show_state(graph_sim: GraphSimulator) -> None:
    graph_sim.set_faults(error_rate=1.0)
    with httpx.Client(base_url=graph_sim.url, verify=graph_ssl_context(graph_sim)) as admin:
        assert admin.post("/_sim/mailboxes", json={"upn": UPN}).status_code == 204
        added = admin.post(
            f"/_sim/mailboxes/{UPN}/messages",
            json={
                "folder": "inbox",
                "subject": "hei",
                "sender": "a@b.no",
                "received": "2024-05-01T08:00:00Z",
            },
        )
        state = admin.get("/_sim/state").json()
        listed = admin.get(f"/_sim/mailboxes/{UPN}/messages").json()
        assert admin.post("/_sim/faults", json={"error_rate": 0}).status_code == 200

    assert added.status_code == 201
    assert state["mailboxes"][UPN]["messages"] == {"inbox": 1}
    assert state["faults"]["error_rate"] == 1.0
    assert [m["id"] for m in listed] == [added.json()["id"]]
    assert listed[0]["receivedDateTime"] == "2024-05-01T08:00:00Z"
