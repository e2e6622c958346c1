"""Mail on the Graph simulator: folders, paging, $select/$filter/$orderby, ids, deletes."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest

from sandbox.graph_sim import GraphSimulator

UPN = "sentralbord@kunde.no"
IMMUTABLE = {"Prefer": 'IdType="ImmutableId"'}


def collect(
    client: httpx.Client, url: str, params: dict[str, str] | None = None, **headers: str
) -> list[dict[str, Any]]:
    """Every item of a collection, following @odata.nextLink verbatim."""
    items: list[dict[str, Any]] = []
    response = client.get(url, params=params, headers=headers)
    while True:
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["value"]
        if "@odata.nextLink" not in page:
            return items
        response = client.get(page["@odata.nextLink"], headers=headers)


@pytest.fixture
def mailbox(graph_sim: GraphSimulator) -> GraphSimulator:
    graph_sim.add_mailbox(UPN)
    return graph_sim


def test_well_known_folders_and_child_folders(
    mailbox: GraphSimulator, graph_client: httpx.Client
) -> None:
    customer = mailbox.add_folder(UPN, "Kunde Ærlig AS")
    sub = mailbox.add_folder(UPN, "2024", parent=customer)

    top = collect(graph_client, f"/users/{UPN}/mailFolders", {"$top": "3"})
    inbox = graph_client.get(f"/users/{UPN}/mailFolders/Inbox").json()
    children = collect(graph_client, f"/users/{UPN}/mailFolders/{customer}/childFolders")
    deletions = graph_client.get(f"/users/{UPN}/mailFolders/recoverableitemsdeletions")
    purges = graph_client.get(f"/users/{UPN}/mailFolders/recoverableitemspurges")

    names = {f["displayName"] for f in top}
    assert {"Innboks", "Slettede elementer", "Kunde Ærlig AS"} <= names
    assert "Deletions" not in names and "Purges" not in names  # Recoverable Items is hidden
    assert inbox["displayName"] == "Innboks"
    assert [c["id"] for c in children] == [sub]
    assert deletions.status_code == 200
    assert purges.status_code == 404


def test_paging_follows_next_links_with_the_default_page_of_ten(
    mailbox: GraphSimulator, graph_client: httpx.Client
) -> None:
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    for n in range(25):
        mailbox.add_message(
            UPN,
            "inbox",
            subject=f"Melding {n}",
            sender="a@b.no",
            received=start + dt.timedelta(hours=n),
        )

    first = graph_client.get(f"/users/{UPN}/mailFolders/inbox/messages").json()
    everything = collect(graph_client, f"/users/{UPN}/messages", {"$select": "subject"})

    assert len(first["value"]) == 10
    assert "$skip=10" in first["@odata.nextLink"]  # as Graph's message lists page
    assert [m["subject"] for m in everything] == [f"Melding {n}" for n in reversed(range(25))]
    ordered = collect(
        graph_client,
        f"/users/{UPN}/messages",
        {"$select": "subject", "$orderby": "receivedDateTime desc", "$top": "7"},
    )
    assert ordered == everything
    assert set(everything[0]) == {"@odata.etag", "id", "subject"}
    assert graph_client.get(f"/users/{UPN}/messages", params={"$top": "1001"}).status_code == 400
    unknown = graph_client.get(f"/users/{UPN}/messages", params={"$select": "subjekt"})
    assert unknown.status_code == 400


def test_filter_on_sender_and_received_time(
    mailbox: GraphSimulator, graph_client: httpx.Client
) -> None:
    jan, feb, mar = (dt.datetime(2024, m, 1, tzinfo=dt.UTC) for m in (1, 2, 3))
    mailbox.add_message(UPN, "inbox", subject="a", sender="Kari.Nordmann@firma.no", received=jan)
    mailbox.add_message(UPN, "inbox", subject="b", sender="kari.nordmann@firma.no", received=mar)
    mailbox.add_message(
        UPN, "inbox", subject="c", sender="kari.nordmann@firma.no.evil", received=feb
    )
    mailbox.add_message(
        UPN,
        "archive",
        subject="d",
        sender="ola@firma.no",
        received=feb,
        to=["kari.nordmann@firma.no"],
    )

    def subjects(expression: str, **params: str) -> list[str]:
        found = collect(graph_client, f"/users/{UPN}/messages", {"$filter": expression, **params})
        return sorted(m["subject"] for m in found)

    assert subjects("from/emailAddress/address eq 'kari.nordmann@firma.no'") == ["a", "b"]
    assert subjects("receivedDateTime lt 2024-02-15T00:00:00Z") == ["a", "c", "d"]
    assert subjects(
        "receivedDateTime ge 2024-02-01T00:00:00Z and from/emailAddress/address eq "
        "'kari.nordmann@firma.no'"
    ) == ["b"]
    assert subjects("toRecipients/any(r: r/emailAddress/address eq 'kari.nordmann@firma.no')") == [
        "d"
    ]
    assert subjects(
        "receivedDateTime ge 2024-01-01T00:00:00Z", **{"$orderby": "receivedDateTime desc"}
    ) == ["a", "b", "c", "d"]
    quoted = graph_client.get(
        f"/users/{UPN}/messages", params={"$filter": "receivedDateTime lt '2024-02-15'"}
    )
    assert quoted.status_code == 400
    inefficient = graph_client.get(
        f"/users/{UPN}/messages",
        params={"$filter": "subject eq 'a'", "$orderby": "receivedDateTime desc"},
    )
    assert inefficient.json()["error"]["code"] == "InefficientFilter"


def test_regular_ids_change_on_a_move_and_immutable_ids_do_not(
    mailbox: GraphSimulator, graph_client: httpx.Client
) -> None:
    immutable_id = mailbox.add_message(UPN, "inbox", subject="Flytt meg", sender="a@b.no")
    regular = graph_client.get(f"/users/{UPN}/mailFolders/inbox/messages").json()["value"][0]
    listed_immutable = graph_client.get(
        f"/users/{UPN}/mailFolders/inbox/messages", headers=IMMUTABLE
    ).json()["value"][0]
    assert listed_immutable["id"] == immutable_id != regular["id"]

    deleted = graph_client.delete(f"/users/{UPN}/messages/{regular['id']}")
    assert deleted.status_code == 204

    assert graph_client.get(f"/users/{UPN}/messages/{regular['id']}").status_code == 404
    in_trash = graph_client.get(f"/users/{UPN}/mailFolders/deleteditems/messages").json()["value"]
    assert [m["subject"] for m in in_trash] == ["Flytt meg"]
    assert in_trash[0]["id"] != regular["id"]  # a new regular id after the move
    by_immutable = graph_client.get(f"/users/{UPN}/messages/{immutable_id}", headers=IMMUTABLE)
    assert by_immutable.json()["id"] == immutable_id
    assert by_immutable.json()["parentFolderId"] == in_trash[0]["parentFolderId"]
    assert mailbox.counters["deletes"] == 1


def test_delete_walks_exchanges_ladder_and_permanent_delete_purges(
    mailbox: GraphSimulator, graph_client: httpx.Client
) -> None:
    soft = mailbox.add_message(UPN, "inbox", subject="myk", sender="a@b.no")
    hard = mailbox.add_message(UPN, "inbox", subject="hard", body="22 33 44 55", sender="a@b.no")

    for _ in range(2):  # Inbox -> Deleted Items -> Recoverable Items/Deletions
        assert graph_client.delete(f"/users/{UPN}/messages/{soft}").status_code == 204
    purge = graph_client.post(f"/users/{UPN}/messages/{hard}/permanentDelete")

    assert purge.status_code == 204 and purge.content == b""
    assert [m["subject"] for m in mailbox.messages(UPN, "recoverableitemsdeletions")] == ["myk"]
    assert [m["subject"] for m in mailbox.messages(UPN)] == ["myk"]
    assert [(m["id"], m["body"]["content"]) for m in mailbox.purged(UPN)] == [(hard, "22 33 44 55")]
    assert graph_client.get(f"/users/{UPN}/messages/{hard}").status_code == 404
    again = graph_client.post(f"/users/{UPN}/messages/{hard}/permanentDelete")
    assert again.status_code == 404 and again.json()["error"]["code"] == "ErrorItemNotFound"
    assert collect(graph_client, f"/users/{UPN}/messages") == []  # Deletions is not listed
    assert mailbox.counters["permanent_deletes"] == 1


def test_bodies_are_html_unless_text_is_preferred(
    mailbox: GraphSimulator, graph_client: httpx.Client
) -> None:
    message_id = mailbox.add_message(
        UPN, "inbox", subject="Hei", body="Ring Åse på 22 33 44 55\n<ikke html>", sender="a@b.no"
    )
    url = f"/users/{UPN}/messages/{message_id}"

    as_html = graph_client.get(url).json()["body"]
    as_text = graph_client.get(url, headers={"Prefer": 'outlook.body-content-type="text"'})

    assert as_html["contentType"] == "html" and "&lt;ikke html&gt;" in as_html["content"]
    assert as_text.json()["body"] == {
        "contentType": "text",
        "content": "Ring Åse på 22 33 44 55\n<ikke html>",
    }
    assert "outlook.body-content-type" in as_text.headers["Preference-Applied"]


def test_move_returns_the_message_in_its_new_folder(
    mailbox: GraphSimulator, graph_client: httpx.Client
) -> None:
    folder = mailbox.add_folder(UPN, "Arkiv kunde")
    message_id = mailbox.add_message(UPN, "inbox", subject="x", sender="a@b.no")

    moved = graph_client.post(
        f"/users/{UPN}/messages/{message_id}/move",
        json={"destinationId": folder},
        headers=IMMUTABLE,
    )

    assert moved.status_code == 201
    assert moved.json()["id"] == message_id and moved.json()["parentFolderId"] == folder


def test_unknown_users_segments_and_app_only_me(
    mailbox: GraphSimulator, graph_client: httpx.Client
) -> None:
    assert graph_client.get("/users/ingen@kunde.no/messages").json()["error"]["code"] == (
        "ErrorInvalidUser"
    )
    assert graph_client.get(f"/users/{UPN}/mailFolders/nope").status_code == 404
    assert graph_client.get(f"/users/{UPN}/calendars").status_code == 400
    assert graph_client.get("/me/messages").status_code == 400
