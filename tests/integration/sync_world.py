"""A customer bound to the real Firestore emulator and the Zisson simulator, with a store,
for sync tests. Each system is inspected and edited through its own API, not pdsync's."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from google.cloud import firestore

from connectors.base import Connector
from connectors.firestore import FirestoreConnector
from connectors.firestore.settings import FirestoreBinding
from connectors.secrets import SecretRef
from connectors.zisson import ZissonSettings
from connectors.zisson.write_api import user_body
from daemon.config import (
    CustomerConfig,
    ErasureConfig,
    LedgerConfig,
    Settings,
    StoreConfig,
    SyncConfig,
    SystemsConfig,
)
from daemon.domain import ContactRecord, Customer
from daemon.erasure import ErasureService
from daemon.ledger import Ledger, generate_key_file
from daemon.proof import certifier_for, open_ledger
from daemon.store import Store
from daemon.sync import SyncReport, SyncService
from daemon.token_vault import StoreTokenVault
from daemon.wiring import erasers_for
from sandbox.configfile import CustomerEntry, render
from tests.fixtures.firestore import FirestoreEnv
from tests.fixtures.zisson import ZissonBound, ZissonConnect

CUSTOMER = "kunde-01"


@dataclass(kw_only=True)
class SyncWorld:
    settings: Settings
    store: Store
    service: SyncService
    firestore: FirestoreConnector
    client: firestore.Client
    zisson: ZissonBound
    env: FirestoreEnv
    master_key_file: Path
    signing_key_file: Path
    ledger: Ledger

    @property
    def connectors(self) -> dict[str, Connector]:
        return {"firestore": self.firestore, "zisson": self.zisson.connector}

    def erasure(self) -> ErasureService:
        return ErasureService(
            self.settings,
            self.store,
            erasers_for(self.connectors),
            recorder=self.ledger,
            certify=certifier_for(self.settings, self.ledger),
        )

    @property
    def customer(self) -> CustomerConfig:
        return self.settings.customers[0]

    @property
    def card_customer(self) -> Customer:
        return self.customer.to_customer()

    async def sync(self) -> SyncReport:
        return await self.service.sync(self.customer, trigger="test")

    async def settle(self, limit: int = 6) -> int:
        """Sync until a run plans nothing; returns how many runs it took."""
        for run in range(1, limit + 1):
            report = await self.sync()
            assert report.status == "completed", report.error
            assert report.plan is not None
            if not report.plan.ops and not report.plan.members and not report.plan.disputes:
                return run
        raise AssertionError(f"no quiet run in {limit} runs")

    # -- the customer card, through Google's client ---------------------------------------

    def contacts_ref(self) -> firestore.CollectionReference:
        return self.client.collection("customers").document(CUSTOMER).collection("contacts")

    def card(self) -> dict[str, dict[str, Any]]:
        return {d.id: d.to_dict() or {} for d in self.contacts_ref().stream()}

    async def put_card(self, records: Sequence[ContactRecord]) -> list[ContactRecord]:
        return await self.firestore.put_contacts(self.card_customer, records)

    # -- Zisson, through the simulator ----------------------------------------------------

    def users(self) -> list[dict[str, Any]]:
        return self.zisson.users()

    def put_user(self, record: ContactRecord) -> str:
        return self.zisson.seed(user_body(record))

    def config_file(self, path: Path, **overrides: Any) -> Path:
        """This world as a config file, for a daemon in another process."""
        path.write_text(
            render(
                store_url=self.settings.store.url,
                master_key_file=self.master_key_file,
                firestore_project=self.env.project,
                firestore_host=self.env.host,
                zisson_url=self.zisson.sim.url,
                customers=[
                    CustomerEntry(
                        id=CUSTOMER,
                        name="Fjord Ærlig AS",
                        firestore_id=CUSTOMER,
                        zisson=self.zisson.binding,
                    )
                ],
                signing_key_file=self.signing_key_file,
                **overrides,
            ),
            encoding="utf-8",
        )
        return path


def make_world(
    tmp_path: Path,
    env: FirestoreEnv,
    zisson: ZissonBound,
    client: firestore.Client,
    *,
    store_url: str | None = None,
    sync: SyncConfig | None = None,
    erasure: ErasureConfig | None = None,
) -> SyncWorld:
    key_file = tmp_path / "master.key"
    key_file.write_text(secrets.token_hex(32))
    signing_key_file = tmp_path / "ledger.pem"
    generate_key_file(signing_key_file)
    settings = Settings(
        ledger=LedgerConfig(signing_key=SecretRef(file=signing_key_file)),
        erasure=erasure or ErasureConfig(),
        store=StoreConfig(
            url=store_url or f"sqlite:///{tmp_path / 'pdsync.db'}",
            master_key=SecretRef(file=key_file),
        ),
        sync=sync or SyncConfig(),
        systems=SystemsConfig(
            firestore=env.settings(),
            zisson=ZissonSettings(base_url=zisson.sim.url, write_mode="api"),
        ),
        customers=[
            CustomerConfig(
                id=CUSTOMER,
                name="Fjord Ærlig AS",
                firestore=FirestoreBinding(customer_id=CUSTOMER),
                zisson=zisson.binding,
            )
        ],
    )
    store = Store.open(settings.store.url, master_key=settings.store.master_key_bytes())
    # As the daemon and the CLI have it (wiring.open_connectors), so that a daemon or CLI
    # started from config_file spends the same refresh-token chain. Before first use: a
    # session keeps the vault it was made with.
    zisson.connector.vault = StoreTokenVault(store)
    ledger = open_ledger(settings, store)
    assert ledger is not None
    fs = FirestoreConnector(env.settings())
    service = SyncService(
        settings, store, {"firestore": fs, "zisson": zisson.connector}, ledger=ledger
    )
    return SyncWorld(
        settings=settings,
        store=store,
        service=service,
        firestore=fs,
        client=client,
        zisson=zisson,
        env=env,
        master_key_file=key_file,
        signing_key_file=signing_key_file,
        ledger=ledger,
    )


@contextlib.asynccontextmanager
async def opened(
    tmp_path: Path,
    env: FirestoreEnv,
    zisson: ZissonBound,
    client: firestore.Client,
    **options: Any,
) -> AsyncIterator[SyncWorld]:
    """`make_world`, closed again after the block."""
    world = make_world(tmp_path, env, zisson, client, **options)
    try:
        yield world
    finally:
        world.store.close()
        await world.firestore.aclose()


@pytest.fixture
async def world(
    tmp_path: Path,
    firestore_env: FirestoreEnv,
    zisson_connect: ZissonConnect,
    firestore_client: firestore.Client,
) -> AsyncIterator[SyncWorld]:
    """The default world: Zisson's JSON API with writes through the API."""
    zisson = zisson_connect("json", write_mode="api")
    async with opened(tmp_path, firestore_env, zisson, firestore_client) as w:
        yield w
