"""HTTP/2 on the Graph simulator (Graph serves it to clients that offer it): answers
larger than a flow-control window, concurrent streams on one connection counted and
throttled as requests, and a dropped request as a reset stream."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from sandbox.graph_sim import GraphSimulator
from tests.fixtures.graph import GRAPH_APP, GRAPH_SECRET, fetch_token, graph_ssl_context

UPN = "sentralbord@kunde.no"


@pytest.fixture
def mailbox(graph_sim: GraphSimulator) -> GraphSimulator:
    graph_sim.add_app(GRAPH_APP, secret=GRAPH_SECRET)
    graph_sim.add_mailbox(UPN)
    return graph_sim


def _client(sim: GraphSimulator) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=sim.graph_url,
        http2=True,
        verify=graph_ssl_context(sim),
        headers={"Authorization": f"Bearer {fetch_token(sim)}"},
        timeout=10,
    )


async def test_a_large_page_and_concurrent_streams_over_one_connection(
    mailbox: GraphSimulator,
) -> None:
    for n in range(60):
        mailbox.add_message(UPN, "inbox", subject=f"m{n}", body="æøå " * 500, sender="a@b.no")
    async with _client(mailbox) as client:
        page = await client.get(f"/users/{UPN}/messages", params={"$top": "60"})
        assert page.http_version == "HTTP/2" and len(page.content) > 200_000  # > 3 windows
        assert len(page.json()["value"]) == 60
        answers = await asyncio.gather(
            *(client.get(f"/users/{UPN}/messages", params={"$top": "1"}) for _ in range(12))
        )
    assert {a.status_code for a in answers} <= {200, 429}  # Exchange's 4 in flight hold
    assert mailbox.counters["http2_connections"] == 1
    assert mailbox.counters["GET /users/{user}/messages"] == 13


async def test_a_dropped_request_is_a_failed_stream_and_the_connection_lives_on(
    mailbox: GraphSimulator,
) -> None:
    mailbox.fail_next(1, status="drop")
    async with _client(mailbox) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(f"/users/{UPN}/messages")
        again = await client.get(f"/users/{UPN}/messages")
    assert again.status_code == 200 and mailbox.counters["drops"] == 1
