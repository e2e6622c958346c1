"""Outlook connectors bound to the Graph simulator, shared by the test_outlook_* modules.

- `outlook_connect`: a factory `connect(sim, *, credential="certificate", **settings)`
  that registers an app on `sim` (certificate or secret), adds a mailbox and returns an
  `OutlookWorld`: the connector, a customer bound to that mailbox, and helpers to look
  at the mailbox from the simulator's side. Connectors it made are closed afterwards.
  The customer's domain is kunde-a.no and, the mailbox being its own, its mail folder
  the inbox (a subject's mail is only ever looked for in the customer's scope; `binding`
  changes either).
- `outlook`: one `OutlookWorld` on the default `graph_sim`.

The modules import these fixtures by name (tests/fixtures/ is another engineer's).
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import pytest
import pytest_asyncio

from connectors.base import RetryPolicy
from connectors.outlook import OutlookBinding, OutlookConnector, OutlookSettings
from connectors.outlook.directory import LINK_PROPERTY
from daemon.domain import Customer, ItemRef
from sandbox.graph_sim import GraphSimulator
from tests.fixtures.graph import make_app_certificate

# Quick retries: the simulator answers in milliseconds, and Retry-After still wins.
FAST_RETRIES = RetryPolicy(attempts=8, max_delay=30.0, base_wait=0.005, max_wait=0.05)
_counter = itertools.count(1)


@dataclass
class OutlookWorld:
    sim: GraphSimulator
    connector: OutlookConnector
    customer: Customer
    binding: OutlookBinding
    client_id: str

    @property
    def mailbox(self) -> str:
        return self.binding.mailbox

    def message(self, folder: str = "inbox", **fields: Any) -> str:
        fields.setdefault("sender", "resepsjon@we4you.no")
        return self.sim.add_message(self.mailbox, folder, **fields)

    def remaining(self) -> set[str]:
        """Ids of every message still in the mailbox (Recoverable Items/Deletions too)."""
        return {m["id"] for m in self.sim.messages(self.mailbox)}

    def purged(self) -> set[str]:
        return {m["id"] for m in self.sim.purged(self.mailbox)}

    def folder_id(self) -> str:
        folders = self.sim.state()["mailboxes"][self.mailbox]["contact_folders"]
        (found,) = [i for i, name in folders.items() if name == self.binding.contact_folder]
        return str(found)

    def contacts(self) -> list[dict[str, Any]]:
        return self.sim.contacts(self.mailbox, self.folder_id())

    def links(self) -> list[str]:
        """The link ids the folder's contacts carry in pdsync's extended property."""
        return sorted(
            self.sim.contact_properties(self.mailbox, c["id"]).get(LINK_PROPERTY, "")
            for c in self.contacts()
        )

    @staticmethod
    def ids(refs: list[ItemRef]) -> set[str]:
        return {ref.id for ref in refs}


class Connect(Protocol):
    def __call__(
        self,
        sim: GraphSimulator,
        *,
        credential: Literal["certificate", "secret"] = "certificate",
        binding: dict[str, Any] | None = None,
        **settings: Any,
    ) -> OutlookWorld: ...


@pytest_asyncio.fixture
async def outlook_connect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Connect]:
    made: list[OutlookConnector] = []

    def connect(
        sim: GraphSimulator,
        *,
        credential: Literal["certificate", "secret"] = "certificate",
        binding: dict[str, Any] | None = None,
        **settings: Any,
    ) -> OutlookWorld:
        n = next(_counter)
        client_id = str(uuid.uuid4())
        values: dict[str, Any] = {
            "tenant_id": sim.tenant_id,
            "client_id": client_id,
            "authority_host": sim.url,
            "graph_url": sim.graph_url,
            "ca_bundle": sim.ca_file,
        }
        if credential == "certificate":
            cert, key, _ = make_app_certificate()
            sim.add_app(client_id, certificate_pem=cert)
            path = tmp_path / f"app-{n}.pem"
            path.write_bytes(key + cert)
            values["certificate_file"] = path
        else:
            variable = f"PDSYNC_TEST_OUTLOOK_SECRET_{n}"
            monkeypatch.setenv(variable, f"secret-{n}-æøå")
            sim.add_app(client_id, secret=os.environ[variable])
            values["client_secret"] = {"env": variable}
        mailbox = f"svc{n}@we4you.no"
        sim.add_mailbox(mailbox)
        bound = OutlookBinding.model_validate(
            {
                "mailbox": mailbox,
                "contact_folder": "Kunde A – kontakter",
                "domains": ["kunde-a.no"],
                "mail_folders": ["inbox"],
                **(binding or {}),
            }
        )
        connector = OutlookConnector(
            OutlookSettings.model_validate({**values, **settings}), retry_policy=FAST_RETRIES
        )
        made.append(connector)
        customer = Customer(id=f"kunde-{n}", name="Kunde A", bindings={"outlook": bound})
        return OutlookWorld(sim, connector, customer, bound, client_id)

    yield connect
    for connector in made:
        await connector.aclose()


@pytest.fixture
def outlook(graph_sim: GraphSimulator, outlook_connect: Connect) -> OutlookWorld:
    return outlook_connect(graph_sim)


async def test_the_harness_binds_a_fresh_mailbox(outlook: OutlookWorld) -> None:
    assert (await outlook.connector.read(outlook.customer)).records == ()
    assert outlook.contacts() == []  # the folder was made on first use
    assert outlook.remaining() == set()
