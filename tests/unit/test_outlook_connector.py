"""OutlookConnector's contract surface, without the network."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from connectors.base import Capability, Connector, FatalError
from connectors.outlook import OutlookBinding, OutlookConnector, OutlookSettings
from daemon.domain import ContactRecord, Customer, ItemRef, OpStatus, Subject


def nothing(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"no request expected, got {request.method} {request.url.path}")


@pytest.fixture
async def connector() -> AsyncIterator[OutlookConnector]:
    settings = OutlookSettings.model_validate(
        {"tenant_id": "t", "client_id": "c", "client_secret": {"env": "UNUSED"}}
    )
    made = OutlookConnector(settings, transport=httpx.MockTransport(nothing))
    yield made
    await made.aclose()


def customer(binding: object) -> Customer:
    return Customer(id="kunde-1", name="Kunde", bindings={"outlook": binding})


async def test_it_is_a_connector_with_declared_capabilities(connector: OutlookConnector) -> None:
    assert isinstance(connector, Connector)
    assert connector.system == "outlook"
    assert connector.capabilities == {
        Capability.DIRECTORY,
        Capability.ERASABLE,
        Capability.RETENTION,
    }
    view = connector.for_customer(customer({}))
    assert view is connector
    record = ContactRecord(system="x", external_id="1", given_name="Åse", family_name="Berg")
    assert connector.project(record).display_name == "Åse Berg"


async def test_bindings_from_config_are_validated_naming_the_field(
    connector: OutlookConnector,
) -> None:
    binding = connector.binding(
        customer({"mailbox": "svc@we4you.no", "contact_folder": "K", "domains": ["kunde.no"]})
    )
    assert isinstance(binding, OutlookBinding)
    with pytest.raises(FatalError, match=r"invalid: mailbox: .*user principal name"):
        connector.binding(customer({"mailbox": "svc", "contact_folder": "K", "domains": []}))
    with pytest.raises(FatalError, match="has no binding for 'outlook'"):
        connector.binding(Customer(id="x", name="x"))


async def test_refs_of_another_system_or_mailbox_are_refused_unsent(
    connector: OutlookConnector,
) -> None:
    bound = customer({"mailbox": "svc@we4you.no", "contact_folder": "K", "domains": []})
    refs = [
        ItemRef(system="firestore", kind="message", id="1", scope="svc@we4you.no"),
        ItemRef(system="outlook", kind="message", id="2", scope="other@we4you.no"),
        ItemRef(system="outlook", kind="calendar", id="3", scope="svc@we4you.no"),
    ]
    statuses = await connector.erase(bound, refs)
    assert [status for _, status in statuses] == [OpStatus.FAILED] * 3
    assert connector.requests == 0


async def test_an_empty_or_vague_subject_is_refused_before_any_request(
    connector: OutlookConnector,
) -> None:
    bound = customer({"mailbox": "svc@we4you.no", "contact_folder": "K", "domains": []})
    with pytest.raises(FatalError, match="no identifiers"):
        await connector.locate(bound, Subject())
    with pytest.raises(FatalError, match=r"phones\[0\]: too few digits") as caught:
        await connector.locate(bound, Subject(phones=("112",)))
    assert "112" not in str(caught.value)
    assert connector.requests == 0


async def test_residuals_are_honest(connector: OutlookConnector) -> None:
    residuals = connector.residuals()
    assert {r.system for r in residuals} == {"outlook"}
    whats = " | ".join(r.what for r in residuals)
    assert "Recoverable Items (Purges)" in whats and "Holds" in whats
    purges = residuals[0]
    assert "14 days" in purges.retention and "30 days" in purges.retention
