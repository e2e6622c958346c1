"""Microsoft's own Graph client (msgraph-sdk) against the Graph simulator.

The simulator was written from the same reading of the docs as the connector; here
Microsoft's SDK, which Microsoft generates from Graph's own metadata, drives it: message
lists with $filter, $search and paging, mail folders down to Recoverable Items,
contacts created and updated with If-Match, extended properties, delta in both URL
forms with @removed, $batch with relative URLs, permanentDelete, and a 429 whose
Retry-After the SDK honours. Any failure here is a simulator bug.

The SDK's token comes from the simulator's Entra endpoint through a small
TokenCredential (client credentials, as fetch_token); its httpx client speaks HTTP/2 and
trusts only the simulator's CA, as tests/fixtures/graph.py does.
"""

from __future__ import annotations

import asyncio
import json
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from azure.core.credentials import AccessToken

from sandbox.graph_sim import GraphSimulator
from tests.fixtures.graph import (
    GRAPH_APP,
    GRAPH_SCOPE,
    GRAPH_SECRET,
    fetch_token,
    graph_ssl_context,
)

with warnings.catch_warnings():
    # kiota_abstractions warns about its own deprecated class when it is imported.
    warnings.simplefilter("ignore", DeprecationWarning)
    from kiota_abstractions.api_error import APIError
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from kiota_abstractions.headers_collection import HeadersCollection
    from kiota_abstractions.method import Method
    from kiota_abstractions.request_information import RequestInformation
    from kiota_authentication_azure.azure_identity_authentication_provider import (
        AzureIdentityAuthenticationProvider,
    )
    from msgraph import GraphRequestAdapter, GraphServiceClient
    from msgraph.generated.models.contact import Contact
    from msgraph.generated.models.email_address import EmailAddress
    from msgraph.generated.models.single_value_legacy_extended_property import (
        SingleValueLegacyExtendedProperty,
    )
    from msgraph.generated.users.item.contact_folders.item.contacts.contacts_request_builder import (  # noqa: E501
        ContactsRequestBuilder,
    )
    from msgraph.generated.users.item.messages.messages_request_builder import (
        MessagesRequestBuilder,
    )
    from msgraph_core import GraphClientFactory

# The SDK's generated query-parameter classes warn that they are deprecated (its own
# matter, not ours); nothing else is let through.
pytestmark = pytest.mark.filterwarnings("ignore:This class is deprecated:DeprecationWarning")

UPN = "sentralbord@kunde.no"
PROPERTY = "String {6f1c3e1a-8d1b-4c55-9a0e-3f1f5d3f1c11} Name pdsync-link"


class SimulatorCredential:
    """An AsyncTokenCredential: a client-credentials token from the simulator's Entra."""

    def __init__(self, sim: GraphSimulator) -> None:
        self.sim = sim
        self._token: AccessToken | None = None

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        assert scopes == (GRAPH_SCOPE,)
        if self._token is None or self._token.expires_on < time.time() + 60:
            token = await asyncio.to_thread(fetch_token, self.sim)
            self._token = AccessToken(token, int(time.time()) + 3000)
        return self._token

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> SimulatorCredential:
        return self

    async def __aexit__(self, *args: object) -> None:
        pass


@dataclass
class Sdk:
    sim: GraphSimulator
    graph: GraphServiceClient
    http: httpx.AsyncClient

    @property
    def user(self) -> Any:
        return self.graph.users.by_user_id(UPN)


@pytest.fixture
def mailbox(graph_sim: GraphSimulator) -> Iterator[GraphSimulator]:
    graph_sim.add_app(GRAPH_APP, secret=GRAPH_SECRET)
    graph_sim.add_mailbox(UPN)
    yield graph_sim


@pytest_asyncio.fixture
async def sdk(mailbox: GraphSimulator) -> AsyncIterator[Sdk]:
    auth = AzureIdentityAuthenticationProvider(
        SimulatorCredential(mailbox),  # type: ignore[arg-type]
        scopes=[GRAPH_SCOPE],
        allowed_hosts=["127.0.0.1"],
    )
    # HTTP/2, as the SDK's own default client. The SDK wraps the client's transport in
    # its middleware and does not close it.
    transport = httpx.AsyncHTTPTransport(verify=graph_ssl_context(mailbox), http2=True)
    http = GraphClientFactory.create_with_default_middleware(
        client=httpx.AsyncClient(transport=transport, timeout=10)
    )
    adapter = GraphRequestAdapter(auth, client=http)
    adapter.base_url = mailbox.graph_url
    yield Sdk(mailbox, GraphServiceClient(request_adapter=adapter), http)
    await http.aclose()
    await transport.aclose()


def _headers(**values: str) -> HeadersCollection:
    headers = HeadersCollection()
    for name, value in values.items():
        headers.add(name.replace("_", "-"), value)
    return headers


async def test_messages_filter_search_and_paging(sdk: Sdk) -> None:
    for n in range(14):
        sdk.sim.add_message(UPN, "inbox", subject=f"Melding {n}", sender=f"a{n % 2}@kunde.no")
    messages = sdk.user.messages
    page = await messages.get()
    seen = [m.subject for m in page.value]
    while page.odata_next_link:
        assert "$skip=" in page.odata_next_link
        page = await messages.with_url(page.odata_next_link).get()
        seen += [m.subject for m in page.value]
    assert sorted(seen) == sorted(f"Melding {n}" for n in range(14))

    query = MessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters
    filtered = await messages.get(
        RequestConfiguration(
            query_parameters=query(
                filter="from/emailAddress/address eq 'a1@kunde.no'", select=["subject"], top=50
            )
        )
    )
    assert len(filtered.value) == 7 and filtered.value[0].body is None  # $select kept
    found = await messages.get(
        RequestConfiguration(query_parameters=query(search='"Melding 7"', select=["subject"]))
    )
    assert [m.subject for m in found.value] == ["Melding 7"]


async def test_mail_folders_down_to_recoverable_items(sdk: Sdk) -> None:
    sdk.sim.add_message(UPN, "recoverableitemsdeletions", subject="gone", sender="a@b.no")
    folders = await sdk.user.mail_folders.get()
    inbox = await sdk.user.mail_folders.by_mail_folder_id("inbox").get()
    assert inbox.id in {f.id for f in folders.value}
    deletions = sdk.user.mail_folders.by_mail_folder_id("recoverableitemsdeletions")
    assert (await deletions.get()).display_name == "Deletions"
    assert [m.subject for m in (await deletions.messages.get()).value] == ["gone"]


async def test_contacts_create_and_update_with_if_match(sdk: Sdk) -> None:
    folder = sdk.sim.add_contact_folder(UPN, "Kunde 1")
    contacts = sdk.user.contact_folders.by_contact_folder_id(folder).contacts
    made = await contacts.post(
        Contact(
            given_name="Kari",
            surname="Nordmann",
            email_addresses=[EmailAddress(address="kari@firma.no", name="Kari")],
        )
    )
    assert made.display_name == "Kari Nordmann" and made.change_key
    etag = made.additional_data["@odata.etag"]
    one = sdk.user.contacts.by_contact_id(made.id)
    updated = await one.patch(
        Contact(job_title="Daglig leder"), RequestConfiguration(headers=_headers(If_Match=etag))
    )
    assert updated.job_title == "Daglig leder" and updated.change_key != made.change_key
    with pytest.raises(APIError) as stale:
        await one.patch(
            Contact(job_title="x"), RequestConfiguration(headers=_headers(If_Match=etag))
        )
    assert stale.value.response_status_code == 412
    assert (await one.get()).job_title == "Daglig leder"


async def test_extended_properties_create_filter_and_expand(sdk: Sdk) -> None:
    folder = sdk.sim.add_contact_folder(UPN, "Kunde 1")
    contacts = sdk.user.contact_folders.by_contact_folder_id(folder).contacts
    marked = await contacts.post(
        Contact(
            given_name="Merket",
            single_value_extended_properties=[
                SingleValueLegacyExtendedProperty(id=PROPERTY, value="link-1")
            ],
        )
    )
    await contacts.post(Contact(given_name="Umerket"))
    query = ContactsRequestBuilder.ContactsRequestBuilderGetQueryParameters
    found = await contacts.get(
        RequestConfiguration(
            query_parameters=query(
                filter=f"singleValueExtendedProperties/Any(ep: ep/id eq '{PROPERTY}' "
                "and ep/value eq 'link-1')",
                expand=[f"singleValueExtendedProperties($filter=id eq '{PROPERTY}')"],
            )
        )
    )
    (only,) = found.value
    assert only.id == marked.id
    assert [(p.id, p.value) for p in only.single_value_extended_properties] == [
        (PROPERTY, "link-1")
    ]


@pytest.mark.parametrize("form", ["delta()", "delta"])
async def test_contact_delta_in_both_forms_with_removed(sdk: Sdk, form: str) -> None:
    folder = sdk.sim.add_contact_folder(UPN, "Kunde 1")
    kari = sdk.sim.add_contact(UPN, folder, {"givenName": "Kari"})
    ola = sdk.sim.add_contact(UPN, folder, {"givenName": "Ola"})
    delta = sdk.user.contact_folders.by_contact_folder_id(folder).contacts.delta
    if form == "delta":  # the short form, as a stored link would carry it
        delta = delta.with_url(
            f"{sdk.sim.graph_url}/users/{UPN}/contactFolders/{folder}/contacts/delta"
        )
    first = await delta.get()
    assert {c.id for c in first.value} == {kari, ola}
    assert f"/contacts/{form}?" in first.odata_delta_link

    sdk.sim.delete_contact(UPN, ola)
    sdk.sim.patch_contact(UPN, kari, {"jobTitle": "Sjef"})
    later = await delta.with_url(first.odata_delta_link).get()
    removed = [c.id for c in later.value if "@removed" in (c.additional_data or {})]
    assert removed == [ola]
    assert [c.job_title for c in later.value if c.id == kari] == ["Sjef"]


async def test_message_delta_pages_by_top(sdk: Sdk) -> None:
    for n in range(5):
        sdk.sim.add_message(UPN, "inbox", subject=f"m{n}", sender="a@b.no")
    delta = sdk.user.mail_folders.by_mail_folder_id("inbox").messages.delta
    page = await delta.get(
        RequestConfiguration(query_parameters=delta.DeltaRequestBuilderGetQueryParameters(top=2))
    )
    sizes = [len(page.value)]
    while page.odata_next_link:
        page = await delta.with_url(page.odata_next_link).get()
        sizes.append(len(page.value))
    assert sizes == [2, 2, 1] and page.odata_delta_link


async def test_batch_with_relative_urls_and_permanent_delete(sdk: Sdk) -> None:
    # msgraph-core 1.5.2's BatchRequestContent imports `deprecated`, a package it does
    # not declare (not installed here); the $batch goes through the SDK's request
    # adapter instead (its auth, retry and redirect middleware), as JSON.
    ids = [sdk.sim.add_message(UPN, "inbox", subject=f"m{n}", sender="a@b.no") for n in range(3)]
    requests = [
        {"id": str(n), "method": "POST", "url": f"/users/{UPN}/messages/{i}/permanentDelete"}
        for n, i in enumerate(ids)
    ]
    info = RequestInformation(Method.POST, "{+baseurl}/$batch")
    info.path_parameters = {"baseurl": sdk.sim.graph_url}
    info.headers.try_add("Content-Type", "application/json")
    info.set_stream_content(json.dumps({"requests": requests}).encode(), "application/json")
    raw = await sdk.graph.request_adapter.send_primitive_async(info, "bytes", None)
    answer = json.loads(raw)
    assert {r["id"]: r["status"] for r in answer["responses"]} == {"0": 204, "1": 204, "2": 204}
    assert sdk.sim.messages(UPN) == []
    assert {m["id"] for m in sdk.sim.purged(UPN)} == set(ids)

    kept = sdk.sim.add_message(UPN, "inbox", subject="single", sender="a@b.no")
    await sdk.user.messages.by_message_id(kept).permanent_delete.post()
    assert sdk.sim.counters["permanent_deletes"] == 4


async def test_a_429_retry_after_is_honoured(sdk: Sdk) -> None:
    sdk.sim.add_message(UPN, "inbox", subject="m", sender="a@b.no")
    sdk.sim.fail_next(1, status=429, retry_after=1)
    started = time.monotonic()
    page = await sdk.user.messages.get()
    assert [m.subject for m in page.value] == ["m"]
    assert sdk.sim.counters["429"] == 1
    assert time.monotonic() - started >= 0.9  # waited as the simulator asked
