"""$search on the Graph simulator: KQL as Exchange matches it, over HTTP."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest

from sandbox.graph_sim import GraphSimulator
from tests.fixtures.graph import GRAPH_APP, GRAPH_SECRET, fetch_token, graph_ssl_context

UPN = "sentralbord@kunde.no"


@pytest.fixture
def seeded(graph_sim: GraphSimulator) -> GraphSimulator:
    graph_sim.add_mailbox(UPN)
    start = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
    mails = [
        ("kari", "Kari Nordmann", "kari.nordmann@firma.no", "Beskjed", "Ring Kari på 22 33 44 55"),
        ("karianne", "Karianne Nordmannsen", "karianne@firma.no", "Beskjed", "Nummer 22 33 44 56"),
        ("compact", "Per", "per@firma.no", "Nummer", "Tlf 22334455"),
        ("prefixed", "Per", "per@firma.no", "Nummer", "Tlf +47 22 33 44 55 hele dagen"),
        ("ola", "Ola", "ola@annen.no", "Møte om Åse", "Hilsen Ola"),
    ]
    for n, (tag, name, address, subject, body) in enumerate(mails):
        graph_sim.add_message(
            UPN,
            "inbox" if n % 2 else "archive",
            subject=f"{subject} [{tag}]",
            body=body,
            sender=address,
            sender_name=name,
            to=["sentralbord@kunde.no"] if tag != "ola" else ["kari.nordmann@firma.no"],
            received=start + dt.timedelta(days=n),
        )
    return graph_sim


def tags(client: httpx.Client, query: str, **params: str) -> list[str]:
    response = client.get(f"/users/{UPN}/messages", params={"$search": query, **params})
    assert response.status_code == 200, response.text
    return [m["subject"].rsplit("[", 1)[1].rstrip("]") for m in response.json()["value"]]


def test_phone_numbers_match_as_word_sequences(
    seeded: GraphSimulator, graph_client: httpx.Client
) -> None:
    assert tags(graph_client, '"body:\\"22 33 44 55\\""') == ["prefixed", "kari"]
    assert tags(graph_client, '"\\"22 33 44 55\\""') == ["prefixed", "kari"]
    assert tags(graph_client, '"22334455"') == ["compact"]
    assert tags(graph_client, '"body:\\"22 33 44 57\\""') == []


def test_names_and_addresses_match_whole_words(
    seeded: GraphSimulator, graph_client: httpx.Client
) -> None:
    assert tags(graph_client, '"participants:kari.nordmann@firma.no"') == ["ola", "kari"]
    assert tags(graph_client, '"from:kari.nordmann@firma.no"') == ["kari"]
    assert tags(graph_client, '"participants:Kari"') == ["ola", "kari"]  # the To of Ola's mail
    # Ola wrote to kari.nordmann@firma.no: the phrase is a run of words in that address.
    assert tags(graph_client, '"participants:\\"Kari Nordmann\\""') == ["ola", "kari"]
    assert tags(graph_client, '"participants:\\"Nordmann Kari\\""') == []
    assert tags(graph_client, '"participants:\\"Kari Nordmannsen\\""') == []
    assert tags(graph_client, '"from:karianne"') == ["karianne"]
    assert tags(graph_client, '"subject:åse"') == ["ola"]


def test_bare_words_search_from_subject_and_body_but_not_recipients(
    seeded: GraphSimulator, graph_client: httpx.Client
) -> None:
    assert tags(graph_client, '"sentralbord"') == []  # only ever a recipient
    assert tags(graph_client, '"nummer"') == ["prefixed", "compact", "karianne"]


def test_boolean_operators(seeded: GraphSimulator, graph_client: httpx.Client) -> None:
    assert tags(graph_client, '"from:per@firma.no AND body:47"') == ["prefixed"]
    assert tags(graph_client, '"from:ola@annen.no OR body:22334455"') == ["ola", "compact"]
    assert tags(graph_client, '"nummer NOT from:per"') == ["karianne"]
    assert tags(graph_client, '"(from:ola OR from:kari) hilsen"') == ["ola"]


def test_search_refuses_orderby_and_filter(
    seeded: GraphSimulator, graph_client: httpx.Client
) -> None:
    url = f"/users/{UPN}/messages"
    ordered = graph_client.get(url, params={"$search": '"kari"', "$orderby": "receivedDateTime"})
    filtered = graph_client.get(url, params={"$search": '"kari"', "$filter": "isRead eq false"})

    assert ordered.status_code == filtered.status_code == 400
    assert ordered.json()["error"]["code"] == "SearchWithOrderBy"
    assert filtered.json()["error"]["code"] == "SearchWithFilter"


def test_search_in_a_folder_and_paging(seeded: GraphSimulator, graph_client: httpx.Client) -> None:
    in_inbox = graph_client.get(
        f"/users/{UPN}/mailFolders/inbox/messages", params={"$search": '"nummer"'}
    ).json()
    first = graph_client.get(f"/users/{UPN}/messages", params={"$search": '"nummer"', "$top": "2"})
    second = graph_client.get(first.json()["@odata.nextLink"])

    assert [m["subject"] for m in in_inbox["value"]] == ["Nummer [prefixed]", "Beskjed [karianne]"]
    assert len(first.json()["value"]) == 2 and len(second.json()["value"]) == 1
    assert "@odata.nextLink" not in second.json()


def test_results_are_capped() -> None:
    with GraphSimulator(search_cap=25) as sim:
        sim.add_app(GRAPH_APP, secret=GRAPH_SECRET)
        sim.add_mailbox(UPN)
        for n in range(40):
            sim.add_message(UPN, "inbox", subject=f"Faktura {n}", sender="a@b.no")
        token = fetch_token(sim)
        with httpx.Client(
            base_url=sim.graph_url,
            verify=graph_ssl_context(sim),
            headers={"Authorization": f"Bearer {token}"},
        ) as client:
            found, url = 0, f"/users/{UPN}/messages?$search=%22faktura%22&$top=10"
            while url:
                page = client.get(url).json()
                found += len(page["value"])
                url = page.get("@odata.nextLink", "")

    assert found == 25
