"""Hostile contacts from Outlook (issue 10, item 5): planted through the Graph simulator's
seed API and read by the connector over real HTTPS, and, for what the simulator cannot
serve (lone surrogates, ids `.` and `..`, deep nesting, a page over the cap), served by a
small HTTP server here and read through the connector's own httpx client and parsing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from connectors.base import ContractError, HttpConnectorBase
from connectors.outlook import wire
from connectors.outlook.mapping import read_result
from daemon.domain import Rejected
from tests.fixtures.loopback import QuietHandler, serving
from tests.integration import test_outlook_harness as harness
from tests.integration.test_outlook_harness import OutlookWorld

outlook = harness.outlook
outlook_connect = harness.outlook_connect

SECRETS = ("Kari", "Nordmann", "Sjef", "2J", "AAAAAAAAAA", "Dot")


def assert_named(rejected: Rejected, field: str) -> None:
    assert rejected.reason.startswith(f"{field}:"), rejected.reason
    assert not any(secret in rejected.reason for secret in SECRETS)
    rejected.raw.encode("utf-8")


async def test_hostile_contacts_are_rejected_one_by_one_and_the_rest_is_read(
    outlook: OutlookWorld,
) -> None:
    await outlook.connector.read(outlook.customer)  # makes the customer's folder
    folder = outlook.folder_id()
    good = [
        outlook.sim.add_contact(outlook.mailbox, folder, {"givenName": f"Åse{n}", "surname": "Ø"})
        for n in range(3)
    ]
    hostile: list[tuple[dict[str, Any], str]] = [
        ({"givenName": "Kari\x9b2J"}, "givenName"),
        ({"givenName": "Kari", "jobTitle": "\x1b[31mSjef"}, "jobTitle"),
        ({"givenName": "Kari", "surname": "A" * 5000}, "surname"),
        ({"givenName": "Kari", "personalNotes": "Nordmann\x00"}, "personalNotes"),
        ({"givenName": "Kari", "businessPhones": ["22 33 44 55"] * 150}, "businessPhones"),
        (
            {"givenName": "Kari", "emailAddresses": [{"address": "kari\x07@fjord.no"}]},
            "emailAddresses[0].address",
        ),
    ]
    planted = {
        outlook.sim.add_contact(outlook.mailbox, folder, body): field for body, field in hostile
    }

    result = await outlook.connector.read(outlook.customer)

    assert sorted(r.external_id for r in result.records) == sorted(good)
    assert {r.external_id for r in result.rejected} == set(planted)
    for rejected in result.rejected:
        assert rejected.external_id is not None
        assert_named(rejected, planted[rejected.external_id])


# --- what the simulator cannot serve: a small server of our own ------------------------

PAGE: dict[str, bytes] = {}


class _Handler(QuietHandler):
    def do_GET(self) -> None:
        body = PAGE[self.path]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def graph_like() -> Iterator[str]:
    with serving(_Handler) as url:
        yield url


class _GraphLike(HttpConnectorBase):
    system = "outlook"


async def get(base_url: str, path: str, *, cap: int = 1024 * 1024) -> object:
    client = _GraphLike(base_url=base_url, max_response_bytes=cap)
    try:
        response = await client.send(client.http.build_request("GET", path), what="list contacts")
        return wire.response_json(response, "list contacts")
    finally:
        await client.aclose()


async def test_hostile_graph_json_over_http_is_rejected_per_contact(graph_like: str) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    PAGE["/contacts"] = (
        '{"value": ['
        '{"id": "AAMk-good=", "givenName": "\\u00c5se"},'
        '{"id": "AAMk-sur=", "givenName": "Kari\\ud800"},'
        '{"id": "AAMk-byte=", "surname": "Nordm\xffann"},'
        '{"id": "..", "givenName": "Dot"},'
        '{"id": ".", "givenName": "Dot"},'
        '{"id": "AAMk-deep=", "department": ' + deep + "}"
        "]}"
    ).encode("latin-1")

    body = await get(graph_like, "/contacts")

    assert isinstance(body, dict)
    result = read_result(body["value"], cursor=None)
    assert [r.given_name for r in result.records] == ["Åse"]
    reasons = [(r.external_id, r.reason.split(":")[0]) for r in result.rejected]
    assert reasons == [
        ("AAMk-sur=", "givenName"),
        ("AAMk-byte=", "surname"),
        (None, "id"),
        (None, "id"),
        ("AAMk-deep=", "department"),
    ]
    for rejected in result.rejected:
        assert_named(rejected, rejected.reason.split(":")[0])


async def test_a_graph_page_over_the_cap_is_refused_whole(graph_like: str) -> None:
    PAGE["/big"] = json.dumps({"value": [{"id": "AAMk=", "givenName": "K" * 200_000}]}).encode()
    with pytest.raises(ContractError, match="outlook: an answer exceeded the cap of 65536 bytes"):
        await get(graph_like, "/big", cap=64 * 1024)
