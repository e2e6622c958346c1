"""Test doubles for the API, shipped with it (like httpx's MockTransport): settings for
two customers with no reachable systems, a sync service that only records runs, and a
store seeded with one of everything the dashboard shows.

    settings = demo_settings(url, master_key_file, signing_key_file=pem)
    with Store.open(url, master_key=key) as store:
        demo = seed_demo(store, settings, signer=load_signer(pem))
        app = create_app(settings, store, sync_service=RecordingSyncService(store))

The seeded task instruction and erasure identifiers hold personal data on purpose
(DEMO_PERSON), so that tests can check it never comes out where it should not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi import FastAPI

from connectors.firestore.settings import FirestoreBinding, FirestoreSettings
from connectors.secrets import SecretRef
from connectors.zisson.settings import ZissonBinding, ZissonSettings
from daemon.config import (
    CustomerConfig,
    LedgerConfig,
    Settings,
    StoreConfig,
    SystemsConfig,
)
from daemon.domain import Subject
from daemon.erasure import masked
from daemon.ledger import Ledger, Signer
from daemon.proof import Certifier
from daemon.store import ErasureState, RunStatus, Store

DEMO_CUSTOMERS = ("acme", "fjord")
# Personal data that the seeded store holds (encrypted): it must never be in a response
# for an auditor, in a log line, in an error or on the dashboard.
DEMO_PERSON = {
    "email": "kari.nordmann@fjordkraft.no",
    "phone": "+4791234567",
    "name": "Kari Nordmann",
}


def demo_settings(
    store_url: str, master_key_file: Path, *, signing_key_file: Path | None = None
) -> Settings:
    """Settings with DEMO_CUSTOMERS bound to Firestore and Zisson on a closed port."""
    return Settings(
        store=StoreConfig(url=store_url, master_key=SecretRef(file=master_key_file)),
        ledger=LedgerConfig(
            signing_key=SecretRef(file=signing_key_file) if signing_key_file else None
        ),
        systems=SystemsConfig(
            firestore=FirestoreSettings(project="demo", emulator_host="127.0.0.1:9"),
            zisson=ZissonSettings(base_url="http://127.0.0.1:9"),
        ),
        customers=[
            CustomerConfig(
                id=customer,
                name=f"{customer.title()} AS",
                firestore=FirestoreBinding(customer_id=customer),
                zisson=ZissonBinding(
                    api="xml", username=customer, password=SecretRef(env="PDSYNC_DEMO_PASSWORD")
                ),
            )
            for customer in DEMO_CUSTOMERS
        ],
    )


@dataclass(kw_only=True)
class RecordingSyncService:
    """A SyncRunner that records a completed run with nothing changed, and no systems."""

    store: Store
    calls: int = 0

    async def sync(self, customer_config: CustomerConfig, *, trigger: str) -> str:
        self.calls += 1
        run_id = self.store.start_run("sync", customer_id=customer_config.id, trigger=trigger)
        self.store.add_event(run_id, "sync_started", detail={"systems": 0})
        self.store.finish_run(run_id, RunStatus.COMPLETED, {"applied": {}})
        return run_id


@dataclass(frozen=True, kw_only=True)
class Demo:
    """Ids of what seed_demo made."""

    ok_run: str  # acme, completed, with changes
    failed_run: str  # acme, failed on zisson, with an incident
    other_run: str  # fjord, completed
    dispute: int  # acme, open
    task: int  # acme, open; its instruction names DEMO_PERSON
    subject_erasure: str  # acme, received, requested by "alice"
    customer_erasure: str  # fjord, awaiting approval, requested by "alice"
    certified_erasure: str | None  # acme, completed with a certificate (needs a signer)


def seed_demo(store: Store, settings: Settings, *, signer: Signer | None = None) -> Demo:
    """One of everything: runs (ok, failed, another customer's), events, an incident, a
    dispute, a manual task, a quarantined record and erasures in three states (the
    completed one, with its certificate, only when a ledger `signer` is given)."""
    ok_run = store.start_run("sync", customer_id="acme", trigger="schedule")
    store.add_event(ok_run, "updated", system="zisson", detail={"link": "l-1", "fields": ["title"]})
    store.finish_run(
        ok_run,
        RunStatus.COMPLETED,
        {"applied": {"zisson.update.applied": 3, "firestore.create.applied": 1}},
    )
    failed_run = store.start_run("sync", customer_id="acme", trigger="schedule")
    store.add_event(
        failed_run, "incident_erased_data_reappeared", level="error", detail={"link": "l-2"}
    )
    store.add_event(
        failed_run,
        "sync_failed",
        level="error",
        system="zisson",
        detail={"error": "zisson: 401 from the API", "kind": "FatalError"},
    )
    store.finish_run(failed_run, RunStatus.FAILED, {"applied": {}, "error": "zisson: 401"})
    other_run = store.start_run("sync", customer_id="fjord", trigger="schedule")
    store.add_event(
        other_run, "unparseable_phone", level="warning", system="zisson", detail={"count": 2}
    )
    store.finish_run(other_run, RunStatus.COMPLETED, {"applied": {"firestore.update.applied": 2}})

    link = store.create_link("acme")
    dispute = store.open_dispute("acme", link, "title", {"firestore": "f" * 16, "zisson": "e" * 16})
    task = store.open_task(
        "acme",
        "zisson",
        link,
        "update",
        "op-1",
        f"Set the title of {DEMO_PERSON['name']} ({DEMO_PERSON['phone']}) to 'Daglig leder'",
    )
    store.quarantine("acme", "zisson", "z-9", "phones: not a number", '{"Number": "x"}')

    person = Subject(emails=(DEMO_PERSON["email"],), phones=(DEMO_PERSON["phone"],))
    deadline = timedelta(hours=settings.erasure.deadline_hours)

    def request(customer: str, scope: str, subject: Subject | None) -> str:
        identifiers = subject or Subject()
        return store.create_erasure(
            customer,
            scope=scope,
            identifiers=json.dumps(
                {
                    "emails": identifiers.emails,
                    "phones": identifiers.phones,
                    "names": identifiers.names,
                }
            ),
            masked=masked(subject),
            requested_by="alice",
            reason="ticket 4711",
            deadline=deadline,
        )

    subject_erasure = request("acme", "subject", person)
    customer_erasure = request("fjord", "customer", None)
    store.update_erasure(
        customer_erasure,
        state=ErasureState.AWAITING_APPROVAL,
        plan={"firestore": {"contact": 4, "card": 1}, "zisson": {"contact": 4}},
    )
    certified = None
    if signer is not None:
        certified = request("acme", "subject", person)
        now = datetime.now(UTC)
        store.add_erasure_items(certified, [("zisson", "contact", "z-1", "acme")], phase="plan")
        store.mark_erasure_items(certified, [("zisson", "contact", "z-1")], "done")
        outcome = {
            "zisson": {
                "outcome": "executed",
                "counts": {"contact": 1},
                "verified_absent": True,
                "remaining": 0,
                "verified_at": now.isoformat(),
            },
        }
        store.update_erasure(
            certified,
            state=ErasureState.COMPLETED,
            outcome=outcome,
            plan={"zisson": {"contact": 1}},
            completed_at=now,
        )
        store.forget_erasure_identifiers(certified)
        certify = Certifier(Ledger(store, signer), signer)
        store.update_erasure(certified, certificate=certify(store.get_erasure(certified), []))
    return Demo(
        ok_run=ok_run,
        failed_run=failed_run,
        other_run=other_run,
        dispute=dispute,
        task=task,
        subject_erasure=subject_erasure,
        customer_erasure=customer_erasure,
        certified_erasure=certified,
    )


# Token names of api_world: two admins (alice asked for the seeded erasures, so only bob
# may approve them), an operator, an auditor, and a revoked admin.
WORLD_TOKENS = {"alice": "admin", "bob": "admin", "olga": "operator", "aud": "auditor"}
REVOKED = "old"


@dataclass(kw_only=True)
class ApiWorld:
    """A seeded store, its settings, tokens by name, and the app over it."""

    settings: Settings
    store: Store
    ledger: Ledger
    demo: Demo
    tokens: dict[str, str]  # name -> token, WORLD_TOKENS and REVOKED
    sync_service: RecordingSyncService
    app: FastAPI

    def auth(self, name: str | None) -> dict[str, str]:
        """Headers for the token of `name` (none for None)."""
        return {} if name is None else {"Authorization": f"Bearer {self.tokens[name]}"}


def api_world(store: Store, master_key: bytes, directory: Path) -> ApiWorld:
    """Everything an API test needs, over `store` opened with `master_key` (key files go
    into `directory`)."""
    from daemon.api.app import create_app
    from daemon.erasure import ErasureService
    from daemon.ledger import generate_key_file

    master_key_file = directory / "master.key"
    master_key_file.write_text(master_key.hex())
    signing_key_file = directory / "ledger.pem"
    signer = generate_key_file(signing_key_file)
    settings = demo_settings(store.url, master_key_file, signing_key_file=signing_key_file)
    demo = seed_demo(store, settings, signer=signer)
    tokens = {
        name: store.create_token(name, role, created_by="test")
        for name, role in WORLD_TOKENS.items()
    }
    tokens[REVOKED] = store.create_token(REVOKED, "admin", created_by="test")
    store.revoke_token(REVOKED, by="test")
    ledger = Ledger(store, signer)
    sync_service = RecordingSyncService(store=store)
    erasures = ErasureService(
        settings, store, {}, recorder=ledger, certify=Certifier(ledger, signer)
    )
    app = create_app(
        settings, store, sync_service=sync_service, erasure_service=erasures, ledger=ledger
    )
    return ApiWorld(
        settings=settings,
        store=store,
        ledger=ledger,
        demo=demo,
        tokens=tokens,
        sync_service=sync_service,
        app=app,
    )
