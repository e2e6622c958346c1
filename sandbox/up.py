"""`pdsync sandbox up`: the outside world on loopback, seeded, with a config to match.

Starts the Zisson and Graph simulators and Google's Firestore emulator on free loopback
ports, seeds them with deterministic Norwegian data (sandbox/seed.py; in Outlook one
service mailbox holds every customer's mail, a folder per customer), and writes into
DATA_DIR:

- `pdsync.toml`: a daemon config pointing at them (Zisson in `api` write mode; the
  SQLite store, master key and Zisson secrets under DATA_DIR; every customer bound to
  the one service mailbox);
- `seed.json`: everything seeded, with the ids each system gave it, and per customer the
  `roles` tests look for (the switchboard number, the namesakes, ...; see
  `sandbox.seed.seed_json`);
- `ready`: once everything answers (removed again on the way down).

The simulators and the emulator start empty every time, so the store of the run before
would only see deletions: it is moved, with the master key that opens it and a config
naming both, to DATA_DIR/previous/ (replacing the one kept there before), where
`pdsync runs`, `log`, `ledger verify` and `certificate` can still read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

from connectors.firestore.connector import FirestoreConnector
from connectors.firestore.settings import FirestoreBinding, FirestoreSettings
from connectors.outlook.settings import OutlookBinding, OutlookSettings
from connectors.secrets import SecretRef
from connectors.zisson.settings import ZissonBinding
from connectors.zisson.write_api import user_body
from daemon.domain import ContactRecord, Customer, PhoneType
from daemon.ledger import generate_key_file
from sandbox.configfile import CustomerEntry, render
from sandbox.firestore_emulator import EmulatorError, EmulatorUnavailable, FirestoreEmulator
from sandbox.graph.appcert import make_app_certificate
from sandbox.graph_sim import GraphSimulator
from sandbox.seed import SeedCustomer, generate, seed_json
from sandbox.zisson_sim import ZissonSimulator

log = structlog.get_logger("pdsync.sandbox")
PROJECT = "pdsync-sandbox"


class SandboxError(Exception):
    """The sandbox cannot start; the message says what is missing."""


SERVICE_MAILBOX = "sentralbord@we4you.no"
GRAPH_APP = "5f1c2a9e-0b7d-4c53-9e57-7d7f1e0c0a11"


@dataclass(kw_only=True)
class Sandbox:
    data_dir: Path
    zisson: ZissonSimulator
    emulator: FirestoreEmulator
    graph: GraphSimulator
    customers: list[SeedCustomer]
    # Per customer, the id of its contact folder in the service mailbox.
    contact_folders: dict[str, str] = field(default_factory=dict)
    # Per customer, its Zisson account (customer guid) in the simulator.
    zisson_accounts: dict[str, str] = field(default_factory=dict)
    # Where the store of the run before was moved (None: there was none).
    previous: Path | None = None

    @property
    def config_path(self) -> Path:
        return self.data_dir / "pdsync.toml"

    @property
    def firestore_settings(self) -> FirestoreSettings:
        return FirestoreSettings(project=PROJECT, emulator_host=self.emulator.host)


def _secret_file(path: Path, value: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")
    return path


def _outlook_binding(customer: SeedCustomer) -> OutlookBinding:
    return OutlookBinding(
        mailbox=SERVICE_MAILBOX,
        contact_folder=f"Kunde {customer.id}",
        mail_folders=(f"Kunde {customer.id}",),
        domains=customer.domains,
        retention_days={"inbox": 365},
    )


def _surname_first(record: ContactRecord) -> str:
    return f"{record.family_name}, {record.given_name}"


def _own_number(record: ContactRecord) -> str:
    """The number a message would give for reaching the person: a mobile where there is
    one, else the first (often the switchboard)."""
    mobile = next((p.number for p in record.phones if p.type is PhoneType.MOBILE), "")
    return mobile or (record.phones[0].number if record.phones else "")


def _seed_mail(
    box: Sandbox, customer: SeedCustomer, folder: str, rng: random.Random, now: datetime
) -> None:
    """A customer's mail, all from or to its domain: messages to and from its people
    naming them (by "Given Surname" and by "Surname, Given") and their numbers, mail from
    its switchboard address giving the switchboard number, mail to a role address, and
    some inbox mail past retention."""
    graph = box.graph
    cards = [c.card for c in customer.contacts]
    people = [c for c in cards if c.emails][: max(4, len(cards) // 2)]
    for i, person in enumerate(people):
        phone = _own_number(person)
        name = person.display_name
        # Every third message names the person surname first, as a directory lists them.
        called = _surname_first(person) if i % 3 == 2 and person.family_name else name
        graph.add_message(
            SERVICE_MAILBOX,
            folder,
            subject=f"Beskjed til {called}",
            body=f"Hei {called}, ring tilbake på {phone}. Hilsen sentralbordet.",
            sender=SERVICE_MAILBOX,
            to=person.emails,
            to_names=(called,),
            received=now - timedelta(days=rng.randint(1, 300)),
        )
        graph.add_message(
            SERVICE_MAILBOX,
            "inbox",
            subject="Fravær i dag",
            body=f"Jeg er borte i dag, sett over til {phone}. Mvh {name}",
            sender=person.emails[0],
            sender_name=name,
            to=(SERVICE_MAILBOX,),
            received=now - timedelta(days=400 + i if i % 5 == 0 else rng.randint(1, 300)),
        )
    roles = customer.roles
    by_id = {c.external_id: c for c in cards}
    switchboard = by_id.get(roles.get("switchboard_department", ""))
    if switchboard is not None:
        number = switchboard.phones[0].number
        graph.add_message(
            SERVICE_MAILBOX,
            "inbox",
            subject="Telefontider i påsken",
            body=(
                f"Sentralbordet vårt på {number} er stengt skjærtorsdag. Sett over til "
                f"vakttelefonen, ellers ta beskjed. Mvh {customer.name}"
            ),
            sender=switchboard.emails[0],
            sender_name=customer.name,
            to=(SERVICE_MAILBOX,),
            received=now - timedelta(days=rng.randint(1, 300)),
        )
    accountant = by_id.get(roles.get("role_address_holder", ""))
    if accountant is not None:
        graph.add_message(
            SERVICE_MAILBOX,
            folder,
            subject="Spørsmål om faktura 4711",
            body=(
                f"En leverandør ringte om faktura 4711 og ber {_surname_first(accountant)} "
                f"ringe tilbake på {_own_number(accountant)}."
            ),
            sender=SERVICE_MAILBOX,
            to=accountant.emails,
            to_names=("Faktura",),
            received=now - timedelta(days=rng.randint(1, 300)),
        )
    namesakes = [by_id[i] for i in roles.get("namesakes", []) if i in by_id]
    for namesake in namesakes[:1]:
        # The name alone does not say which of the two is meant; the address does.
        graph.add_message(
            SERVICE_MAILBOX,
            folder,
            subject=f"Beskjed til {_surname_first(namesake)}",
            body=f"{_surname_first(namesake)}: ring sentralbordet, det gjelder en leveranse.",
            sender=SERVICE_MAILBOX,
            to=namesake.emails,
            to_names=(_surname_first(namesake),),
            received=now - timedelta(days=rng.randint(1, 300)),
        )


def _at_own_domain(customer: SeedCustomer) -> ContactRecord | None:
    """A person of the customer whose first e-mail is at one of its domains."""
    for contact in customer.contacts:
        card = contact.card
        if (
            card.kind == "person"
            and card.emails
            and card.emails[0].rsplit("@", 1)[-1].casefold() in customer.domains
        ):
            return card
    return None


def _seed_mail_between(box: Sandbox, rng: random.Random, now: datetime) -> None:
    """Mail between two customers in the shared inbox (each customer's person writes to
    the next customer's, copying the switchboard): both customers' data, so that one's
    whole erasure leaves it alone unless an admin includes it (`erase customer --plan`
    lists it as another customer's too)."""
    customers = box.customers
    if len(customers) < 2:
        return
    for i, customer in enumerate(customers):
        other = customers[(i + 1) % len(customers)]
        writer, reader = _at_own_domain(customer), _at_own_domain(other)
        if writer is None or reader is None:
            continue
        box.graph.add_message(
            SERVICE_MAILBOX,
            "inbox",
            subject="Møte neste uke",
            body=f"Hei {reader.given_name}, passer torsdag? Mvh {writer.display_name}",
            sender=writer.emails[0],
            sender_name=writer.display_name,
            to=reader.emails[:1],
            cc=(SERVICE_MAILBOX,),
            received=now - timedelta(days=rng.randint(1, 200)),
        )


def _seed_outlook(box: Sandbox, seed: int) -> OutlookSettings:
    """The app registration (certificate), the one service mailbox every customer's mail
    is in (a folder per customer, and the shared inbox), and each customer's mail."""
    graph = box.graph
    cert_pem, key_pem, _ = make_app_certificate("pdsync-sandbox")
    graph.add_app(GRAPH_APP, certificate_pem=cert_pem)
    credential = _secret_file(
        box.data_dir.resolve() / "secrets" / "outlook-app.pem", (key_pem + cert_pem).decode()
    )
    graph.add_mailbox(SERVICE_MAILBOX)
    rng = random.Random(seed)
    now = datetime.now(UTC)
    for customer in box.customers:
        folder = graph.add_folder(SERVICE_MAILBOX, f"Kunde {customer.id}")
        box.contact_folders[customer.id] = graph.add_contact_folder(
            SERVICE_MAILBOX, f"Kunde {customer.id}"
        )
        _seed_mail(box, customer, folder, rng, now)
    _seed_mail_between(box, rng, now)
    return OutlookSettings(
        tenant_id=graph.tenant_id,
        client_id=GRAPH_APP,
        authority_host=graph.url,
        graph_url=graph.graph_url,
        certificate_file=credential,
        ca_bundle=graph.ca_file,
        page_size=1000,  # full scans (a whole customer's mail) in as few requests as possible
    )


def _keep_previous(data_dir: Path) -> Path | None:
    """Move the last run's store, its master key and a config naming both to
    DATA_DIR/previous/; None when there was no store."""
    stores = sorted(data_dir.glob("pdsync.db*"))
    if not stores:
        return None
    data = data_dir.resolve()
    previous = data / "previous"
    shutil.rmtree(previous, ignore_errors=True)
    previous.mkdir(mode=0o700)
    for path in stores:
        path.rename(previous / path.name)
    key = data / "secrets" / "master.key"
    if key.exists():
        key.rename(previous / "master.key")
    config = data / "pdsync.toml"
    if config.exists():
        text = config.read_text(encoding="utf-8")
        text = text.replace(str(data / "pdsync.db"), str(previous / "pdsync.db"))
        text = text.replace(str(key), str(previous / "master.key"))
        (previous / "pdsync.toml").write_text(
            "# The store of the previous sandbox run, kept to be read (runs, log, ledger,\n"
            "# certificates); the systems it names are gone.\n" + text,
            encoding="utf-8",
        )
    return previous


def _config_text(
    box: Sandbox,
    bindings: dict[str, ZissonBinding],
    outlook: OutlookSettings,
    api_listen: str | None,
) -> str:
    data = box.data_dir.resolve()
    text = "# Written by `pdsync sandbox up`: the daemon against the local sandbox.\n" + render(
        store_url=f"sqlite:///{data / 'pdsync.db'}",
        master_key_file=data / "secrets" / "master.key",
        signing_key_file=data / "secrets" / "ledger-signing.pem",
        firestore_project=PROJECT,
        firestore_host=box.emulator.host,
        zisson_url=box.zisson.url,
        customers=[
            CustomerEntry(
                id=c.id,
                name=c.name,
                firestore_id=c.id,
                zisson=bindings[c.id],
                outlook=_outlook_binding(c),
            )
            for c in box.customers
        ],
        outlook=outlook,
        api_listen=api_listen,
    )
    # The ledger's witness: each checkpoint also appended here, outside the store (on a
    # real install: other storage, or an HTTP endpoint). Named after the store so that a
    # restart moves it to previous/ with the store it witnesses.
    witness = json.dumps(str(data / "pdsync.db-witness.jsonl"))
    return text.replace("[ledger]\n", f"[ledger]\nwitness = {witness}\n", 1)


async def _seed_firestore(box: Sandbox) -> None:
    connector = FirestoreConnector(box.firestore_settings)
    try:
        for customer in box.customers:
            bound = Customer(
                id=customer.id,
                name=customer.name,
                bindings={"firestore": FirestoreBinding(customer_id=customer.id)},
            )
            await connector.write_card(
                bound,
                {
                    "name": customer.name,
                    "instructions": customer.instructions,
                    "domains": list(customer.domains),
                },
            )
            stored = await connector.put_contacts(bound, [c.card for c in customer.contacts])
            for contact, record in zip(customer.contacts, stored, strict=True):
                contact.card = record
    finally:
        await connector.aclose()


def _seed_zisson(box: Sandbox, seed: int) -> dict[str, ZissonBinding]:
    bindings: dict[str, ZissonBinding] = {}
    secrets_dir = box.data_dir.resolve() / "secrets"
    for customer in box.customers:
        guid = str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{seed}.{customer.id}.zisson.sandbox"))
        password = secrets.token_urlsafe(18)
        token = secrets.token_urlsafe(24)
        user_id, username = f"pdsync-{customer.id}", f"api-{customer.id}"
        box.zisson_accounts[customer.id] = guid
        box.zisson.add_account(
            guid, username=username, password=password, user_id=user_id, refresh_token=token
        )
        if customer.zisson_api == "xml":
            password_file = _secret_file(secrets_dir / f"zisson-{customer.id}.password", password)
            bindings[customer.id] = ZissonBinding(
                api="xml", username=username, password=SecretRef(file=password_file)
            )
        else:
            token_file = _secret_file(secrets_dir / f"zisson-{customer.id}.token", token)
            bindings[customer.id] = ZissonBinding(
                api="json", user_id=user_id, customer_guid=guid, refresh_token_file=token_file
            )
        for contact in customer.contacts:
            if contact.zisson is not None:
                user_id = box.zisson.put_user(guid, user_body(contact.zisson))
                contact.zisson = replace(contact.zisson, external_id=user_id)
    return bindings


@contextlib.contextmanager
def running(
    data_dir: Path,
    *,
    seed: int = 1,
    customers: int = 3,
    contacts: int = 40,
    api_listen: str | None = None,
) -> Iterator[Sandbox]:
    """The sandbox, up and seeded, for the duration of the `with` block.

    `api_listen` (HOST:PORT) goes into the config as `[api] listen`: the daemon started
    on it serves the admin API and the dashboard there."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "ready").unlink(missing_ok=True)
    previous = _keep_previous(data_dir)
    emulator = FirestoreEmulator(log_path=data_dir / "firestore-emulator.log")
    zisson = ZissonSimulator(seed=seed)
    graph = GraphSimulator(seed=seed)
    try:
        emulator.start()
    except EmulatorUnavailable as exc:
        raise SandboxError(
            f"Google's Firestore emulator is needed and missing: {exc}. Install the Debian "
            "package google-cloud-cli-firestore-emulator and Java 17."
        ) from None
    except EmulatorError as exc:
        raise SandboxError(f"the Firestore emulator did not start: {exc}") from None
    try:
        zisson.start()
        graph.start()
        box = Sandbox(
            data_dir=data_dir,
            zisson=zisson,
            emulator=emulator,
            graph=graph,
            customers=generate(seed=seed, customers=customers, contacts=contacts),
            previous=previous,
        )
        _secret_file(data_dir / "secrets" / "master.key", secrets.token_hex(32))
        signing_key = data_dir / "secrets" / "ledger-signing.pem"
        if not signing_key.exists():
            generate_key_file(signing_key)
        asyncio.run(_seed_firestore(box))
        bindings = _seed_zisson(box, seed)
        outlook = _seed_outlook(box, seed)
        box.config_path.write_text(
            _config_text(box, bindings, outlook, api_listen), encoding="utf-8"
        )
        (data_dir / "seed.json").write_text(
            json.dumps(seed_json(box.customers, seed=seed), ensure_ascii=False, indent=1),
            encoding="utf-8",
        )
        (data_dir / "ready").write_text(
            json.dumps(
                {
                    "zisson": zisson.url,
                    "firestore": emulator.host,
                    "graph": graph.url,
                    "config": str(box.config_path),
                }
            ),
            encoding="utf-8",
        )
        log.info(
            "sandbox_ready",
            zisson=zisson.url,
            firestore=emulator.host,
            graph=graph.url,
            customers=customers,
            contacts_per_customer=contacts,
            config=str(box.config_path),
        )
        yield box
    finally:
        (data_dir / "ready").unlink(missing_ok=True)
        graph.stop()
        zisson.stop()
        emulator.stop()


def run_foreground(data_dir: Path, *, seed: int, customers: int, contacts: int) -> None:
    """Run the sandbox until SIGINT or SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with running(data_dir, seed=seed, customers=customers, contacts=contacts):
        stop.wait()
