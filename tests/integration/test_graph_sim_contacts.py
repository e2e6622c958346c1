"""Contacts on the Graph simulator: folders, CRUD, change keys and If-Match."""

from __future__ import annotations

import httpx
import pytest

from sandbox.graph_sim import GraphSimulator
from tests.fixtures.graph import GRAPH_APP, GRAPH_SECRET, fetch_token, graph_ssl_context

UPN = "sentralbord@kunde.no"
KARI = {
    "givenName": "Kari",
    "surname": "Nordmann",
    "jobTitle": "Resepsjonist",
    "department": "Drift",
    "emailAddresses": [{"address": "kari@firma.no", "name": "Kari Nordmann"}],
    "businessPhones": ["+47 22 33 44 55"],
    "mobilePhone": "+47 912 34 567",
    "homePhones": [],
    "personalNotes": "Foretrekker SMS",
}


@pytest.fixture
def mailbox(graph_sim: GraphSimulator) -> GraphSimulator:
    graph_sim.add_mailbox(UPN)
    return graph_sim


def test_contact_folders_list_and_create(
    mailbox: GraphSimulator, graph_client: httpx.Client
) -> None:
    seeded = mailbox.add_contact_folder(UPN, "Kunde 1")
    created = graph_client.post(f"/users/{UPN}/contactFolders", json={"displayName": "Kunde 2"})
    duplicate = graph_client.post(f"/users/{UPN}/contactFolders", json={"displayName": "kunde 2"})

    listed = graph_client.get(f"/users/{UPN}/contactFolders").json()["value"]

    assert created.status_code == 201
    assert duplicate.status_code == 409
    assert {f["displayName"]: f["id"] for f in listed} == {
        "Kunde 1": seeded,
        "Kunde 2": created.json()["id"],
    }


def test_create_read_update_delete(mailbox: GraphSimulator, graph_client: httpx.Client) -> None:
    folder = mailbox.add_contact_folder(UPN, "Kunde 1")
    base = f"/users/{UPN}/contactFolders/{folder}/contacts"

    created = graph_client.post(base, json=KARI)
    assert created.status_code == 201
    contact = created.json()
    assert contact["displayName"] == "Kari Nordmann"
    assert contact["@odata.etag"] == f'W/"{contact["changeKey"]}"'
    assert mailbox.contacts(UPN, folder)[0]["businessPhones"] == ["+47 22 33 44 55"]

    patched = graph_client.patch(
        f"{base}/{contact['id']}",
        json={"jobTitle": "Daglig leder"},
        headers={"If-Match": contact["@odata.etag"]},
    )
    assert patched.status_code == 200
    assert patched.json()["changeKey"] != contact["changeKey"]

    stale = graph_client.patch(
        f"{base}/{contact['id']}",
        json={"jobTitle": "Noe annet"},
        headers={"If-Match": contact["@odata.etag"]},
    )
    assert stale.status_code == 412
    assert stale.json()["error"]["code"] == "ErrorIrresolvableConflict"

    fetched = graph_client.get(
        f"/users/{UPN}/contacts/{contact['id']}", params={"$select": "jobTitle"}
    )
    assert fetched.json()["jobTitle"] == "Daglig leder"
    assert set(fetched.json()) == {"@odata.context", "@odata.etag", "id", "jobTitle"}

    assert graph_client.delete(f"{base}/{contact['id']}").status_code == 204
    assert graph_client.get(f"{base}/{contact['id']}").status_code == 404
    assert mailbox.contacts(UPN, folder) == []


def test_permanent_delete_purges_a_contact(
    mailbox: GraphSimulator, graph_client: httpx.Client
) -> None:
    folder = mailbox.add_contact_folder(UPN, "Kunde 1")
    kept = mailbox.add_contact(UPN, folder, {**KARI, "givenName": "Per"})
    contact = mailbox.add_contact(UPN, folder, KARI)

    purge = graph_client.post(f"/users/{UPN}/contacts/{contact}/permanentDelete")
    again = graph_client.post(
        f"/users/{UPN}/contactFolders/{folder}/contacts/{contact}/permanentDelete"
    )

    assert purge.status_code == 204
    assert again.status_code == 404
    assert graph_client.get(f"/users/{UPN}/contacts/{contact}").status_code == 404
    assert [c["id"] for c in mailbox.contacts(UPN, folder)] == [kept]
    assert mailbox.counters["contact_permanent_deletes"] == 1


def test_a_national_cloud_has_no_permanent_delete_for_contacts() -> None:
    with GraphSimulator(seed=0, contact_permanent_delete=False) as sim:
        sim.add_app(GRAPH_APP, secret=GRAPH_SECRET)
        sim.add_mailbox(UPN)
        folder = sim.add_contact_folder(UPN, "Kunde 1")
        contact = sim.add_contact(UPN, folder, KARI)
        with httpx.Client(
            base_url=sim.graph_url,
            verify=graph_ssl_context(sim),
            headers={"Authorization": f"Bearer {fetch_token(sim)}"},
        ) as client:
            refused = client.post(f"/users/{UPN}/contacts/{contact}/permanentDelete")
            deleted = client.delete(f"/users/{UPN}/contacts/{contact}")

    assert refused.status_code == 400
    assert "permanentDelete" in refused.json()["error"]["message"]
    assert deleted.status_code == 204
    assert sim.contacts(UPN, folder) == []


def test_a_hand_edit_invalidates_the_etag_the_client_holds(
    mailbox: GraphSimulator, graph_client: httpx.Client
) -> None:
    folder = mailbox.add_contact_folder(UPN, "Kunde 1")
    contact_id = mailbox.add_contact(UPN, folder, KARI)
    etag = graph_client.get(f"/users/{UPN}/contacts/{contact_id}").json()["@odata.etag"]

    mailbox.patch_contact(UPN, contact_id, {"mobilePhone": "+47 999 99 999"})
    response = graph_client.patch(
        f"/users/{UPN}/contacts/{contact_id}", json={"surname": "X"}, headers={"If-Match": etag}
    )

    assert response.status_code == 412


def test_unknown_properties_are_refused(
    mailbox: GraphSimulator, graph_client: httpx.Client
) -> None:
    folder = mailbox.add_contact_folder(UPN, "Kunde 1")
    response = graph_client.post(
        f"/users/{UPN}/contactFolders/{folder}/contacts", json={"givenName": "Kari", "phone": "1"}
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "RequestBodyRead"


def test_filter_on_contacts(mailbox: GraphSimulator, graph_client: httpx.Client) -> None:
    folder = mailbox.add_contact_folder(UPN, "Kunde 1")
    mailbox.add_contact(UPN, folder, KARI)
    mailbox.add_contact(
        UPN, folder, {"givenName": "Ola", "emailAddresses": [{"address": "ola@x.no"}]}
    )

    found = graph_client.get(
        f"/users/{UPN}/contactFolders/{folder}/contacts",
        params={"$filter": "emailAddresses/any(a: a/address eq 'KARI@firma.no')"},
    ).json()["value"]

    assert [c["givenName"] for c in found] == ["Kari"]


def test_a_national_cloud_has_no_permanent_delete_for_messages_either() -> None:
    with GraphSimulator(seed=0, national_cloud=True) as sim:
        sim.add_app(GRAPH_APP, secret=GRAPH_SECRET)
        sim.add_mailbox(UPN)
        message = sim.add_message(UPN, "inbox", subject="s", sender="a@b.no")
        with httpx.Client(
            base_url=sim.graph_url,
            verify=graph_ssl_context(sim),
            headers={"Authorization": f"Bearer {fetch_token(sim)}"},
        ) as client:
            refused = client.post(f"/users/{UPN}/messages/{message}/permanentDelete")
            ladder = [client.delete(f"/users/{UPN}/messages/{message}").status_code for _ in "1234"]

    assert refused.status_code == 400
    assert "permanentDelete" in refused.json()["error"]["message"]
    # Deleted Items, Recoverable Items/Deletions, then Purges: out of Graph's reach.
    assert ladder == [204, 204, 204, 404]
    assert [m["id"] for m in sim.purged(UPN)] == [message]


PROPERTY = "String {6f1c3e1a-8d1b-4c55-9a0e-3f1f5d3f1c11} Name pdsync-link"


def test_extended_properties_are_created_filtered_and_expanded(
    mailbox: GraphSimulator, graph_client: httpx.Client
) -> None:
    folder = mailbox.add_contact_folder(UPN, "Kunde 1")
    contacts = f"/users/{UPN}/contactFolders/{folder}/contacts"
    made = graph_client.post(
        contacts, json={**KARI, "singleValueExtendedProperties": [{"id": PROPERTY, "value": "l-1"}]}
    )
    other = graph_client.post(
        contacts, json={**KARI, "singleValueExtendedProperties": [{"id": PROPERTY, "value": "l-2"}]}
    )
    plain = graph_client.post(contacts, json=KARI)
    assert {r.status_code for r in (made, other, plain)} == {201}
    assert "singleValueExtendedProperties" not in made.json()  # only when expanded

    found = graph_client.get(
        contacts,
        params={
            "$filter": f"singleValueExtendedProperties/Any(ep: ep/id eq '{PROPERTY}' "
            "and ep/value eq 'l-1')",
            "$select": "displayName",
        },
    ).json()["value"]
    assert [c["id"] for c in found] == [made.json()["id"]]
    assert "singleValueExtendedProperties" not in found[0]

    expand = f"singleValueExtendedProperties($filter=id eq '{PROPERTY}')"
    listed = graph_client.get(contacts, params={"$expand": expand, "$select": "id"}).json()
    values = {
        c["id"]: [p["value"] for p in c.get("singleValueExtendedProperties", [])]
        for c in listed["value"]
    }
    assert values == {
        made.json()["id"]: ["l-1"],
        other.json()["id"]: ["l-2"],
        plain.json()["id"]: [],
    }
    one = graph_client.get(f"/users/{UPN}/contacts/{made.json()['id']}", params={"$expand": expand})
    assert one.json()["singleValueExtendedProperties"] == [{"id": PROPERTY, "value": "l-1"}]

    bad = graph_client.post(
        contacts, json={"singleValueExtendedProperties": [{"id": "pdsync-link", "value": "x"}]}
    )
    assert bad.status_code == 400
    assert graph_client.get(contacts, params={"$expand": "categories"}).status_code == 400
