"""Delta queries on the Graph simulator: rounds, @removed, $select, $top, both URL
forms, and the documented answers to an expired token."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from sandbox.graph_sim import GraphSimulator

UPN = "sentralbord@kunde.no"
IMMUTABLE = 'IdType="ImmutableId"'


def round_of(
    client: httpx.Client, url: str, *, page: int = 2, prefer: str = IMMUTABLE
) -> tuple[list[dict[str, Any]], str, int]:
    """One delta round from `url`: (items, deltaLink, pages)."""
    headers = {"Prefer": f"{prefer}, odata.maxpagesize={page}"}
    items: list[dict[str, Any]] = []
    pages = 0
    while True:
        response = client.get(url, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        items += body["value"]
        pages += 1
        if "@odata.deltaLink" in body:
            return items, body["@odata.deltaLink"], pages
        url = body["@odata.nextLink"]


@pytest.fixture
def mailbox(graph_sim: GraphSimulator) -> GraphSimulator:
    graph_sim.add_mailbox(UPN)
    return graph_sim


def test_message_delta_reports_new_changed_and_removed(
    mailbox: GraphSimulator, graph_client: httpx.Client
) -> None:
    ids = [mailbox.add_message(UPN, "inbox", subject=f"m{n}", sender="a@b.no") for n in range(5)]
    start = f"/users/{UPN}/mailFolders/inbox/messages/delta?$select=subject"

    first, delta_link, pages = round_of(graph_client, start)
    assert sorted(m["id"] for m in first) == sorted(ids) and pages == 3
    assert set(first[0]) == {"@odata.type", "@odata.etag", "id", "subject"}  # $select kept

    graph_client.delete(f"/users/{UPN}/messages/{ids[0]}")  # moved out: removed here
    graph_client.post(f"/users/{UPN}/messages/{ids[1]}/permanentDelete")
    new = mailbox.add_message(UPN, "inbox", subject="ny", sender="a@b.no")

    second, second_link, _ = round_of(graph_client, delta_link)
    removed = sorted(m["id"] for m in second if "@removed" in m)
    assert removed == sorted(ids[:2])
    assert all(m["@removed"] == {"reason": "deleted"} for m in second if "@removed" in m)
    assert [m["subject"] for m in second if "@removed" not in m] == ["ny"]
    assert [m["id"] for m in second if "@removed" not in m] == [new]

    third, _, _ = round_of(graph_client, second_link)
    assert third == []
    trash, _, _ = round_of(graph_client, f"/users/{UPN}/mailFolders/deleteditems/messages/delta")
    assert [m["id"] for m in trash] == [ids[0]]  # arrived there, same ImmutableId


def test_removed_items_carry_the_id_the_client_knew(
    mailbox: GraphSimulator, graph_client: httpx.Client
) -> None:
    mailbox.add_message(UPN, "inbox", subject="x", sender="a@b.no")
    start = f"/users/{UPN}/mailFolders/inbox/messages/delta"
    first, delta_link, _ = round_of(graph_client, start, prefer="return=minimal")
    regular_id = first[0]["id"]

    graph_client.delete(f"/users/{UPN}/messages/{regular_id}")
    second, _, _ = round_of(graph_client, delta_link, prefer="return=minimal")

    assert second == [
        {
            "@odata.type": "#microsoft.graph.message",
            "id": regular_id,
            "@removed": {"reason": "deleted"},
        }
    ]


@pytest.mark.parametrize(
    ("status", "code"),
    [(410, "resyncRequired"), (404, "syncStateNotFound"), (400, "syncStateInvalid")],
)
def test_expired_tokens_fail_as_documented_and_a_fresh_round_recovers(
    mailbox: GraphSimulator, graph_client: httpx.Client, status: int, code: str
) -> None:
    for n in range(3):
        mailbox.add_message(UPN, "inbox", subject=f"m{n}", sender="a@b.no")
    start = f"/users/{UPN}/mailFolders/inbox/messages/delta"
    _, delta_link, _ = round_of(graph_client, start)
    halfway = graph_client.get(start, headers={"Prefer": "odata.maxpagesize=1"}).json()

    mailbox.expire_delta_tokens(status)
    gone = graph_client.get(delta_link)
    gone_midway = graph_client.get(halfway["@odata.nextLink"])

    for response in (gone, gone_midway):
        assert response.status_code == status
        assert response.json()["error"]["code"] == code
        # 410 names the initial query to start over from; the 40X codes do not.
        location = response.headers.get("Location")
        assert location == (
            graph_client.base_url.join(start[1:]).__str__() if status == 410 else None
        )
    again, _, _ = round_of(graph_client, start)
    assert len(again) == 3


@pytest.mark.parametrize("form", ["delta", "delta()"])
def test_top_on_delta_sets_the_page_and_is_kept_in_the_links(
    mailbox: GraphSimulator, graph_client: httpx.Client, form: str
) -> None:
    for n in range(7):
        mailbox.add_message(UPN, "inbox", subject=f"m{n}", sender="a@b.no")
    url: str | None = f"/users/{UPN}/mailFolders/inbox/messages/{form}?$top=3"
    sizes = []
    while url is not None:
        body = graph_client.get(url).json()
        sizes.append(len(body["value"]))
        url = body.get("@odata.nextLink")
        assert url is None or f"/messages/{form}?" in url  # the form asked for is kept
    assert sizes == [3, 3, 1]


def test_change_type_filter_is_kept_in_the_tokens(
    mailbox: GraphSimulator, graph_client: httpx.Client
) -> None:
    old = mailbox.add_message(UPN, "inbox", subject="gammel", sender="a@b.no")
    start = f"/users/{UPN}/mailFolders/inbox/messages/delta?changeType=created"
    _, delta_link, _ = round_of(graph_client, start)

    graph_client.delete(f"/users/{UPN}/messages/{old}")
    mailbox.add_message(UPN, "inbox", subject="ny", sender="a@b.no")
    second, _, _ = round_of(graph_client, delta_link)

    assert [m["subject"] for m in second] == ["ny"]


def test_contact_delta_sees_edits_by_hand(
    mailbox: GraphSimulator, graph_client: httpx.Client
) -> None:
    folder = mailbox.add_contact_folder(UPN, "Kunde 1")
    kari = mailbox.add_contact(UPN, folder, {"givenName": "Kari", "surname": "Nordmann"})
    ola = mailbox.add_contact(UPN, folder, {"givenName": "Ola", "surname": "Nordmann"})
    start = f"/users/{UPN}/contactFolders/{folder}/contacts/delta"

    first, delta_link, _ = round_of(graph_client, start)
    assert {c["displayName"] for c in first} == {"Kari Nordmann", "Ola Nordmann"}

    mailbox.patch_contact(UPN, kari, {"jobTitle": "Daglig leder"})
    mailbox.delete_contact(UPN, ola)
    second, delta_link, _ = round_of(graph_client, delta_link)

    assert [(c["id"], c["jobTitle"]) for c in second if "@removed" not in c] == [
        (kari, "Daglig leder")
    ]
    assert [c["id"] for c in second if "@removed" in c] == [ola]
    mailbox.expire_delta_tokens()
    assert graph_client.get(delta_link).status_code == 410
