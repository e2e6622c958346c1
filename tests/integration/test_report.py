"""The processing report (O7, O8): per system and subprocessor what is held of a customer,
how much, since when and under which rules, from the store after real syncs against the
Firestore emulator and the Zisson simulator; through the CLI and the API; naming no
person."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pypdf
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner, Result

from daemon import config, normalize
from daemon.api.app import create_app
from daemon.certificate import ResidualWindow, issue_certificate, render_pdf
from daemon.cli import app as cli
from daemon.ledger import Ledger, MemoryLedgerStore, Signer
from daemon.report import build_report, render_text
from daemon.store import ErasureState, Store
from daemon.store.schema import links, store_meta
from tests.integration.sync_world import CUSTOMER, SyncWorld
from tests.integration.test_sync import NAMES, person
from tests.unit.test_certificate import make_facts

pytestmark = [pytest.mark.emulator, pytest.mark.usefixtures("cli_logging_restored")]
EXAMPLE = Path(__file__).parents[2] / "config" / "example.toml"


# The world of the erasure tests: Firestore emulator, Zisson simulator (JSON API), SQLite.


def names_no_person(text: str) -> bool:
    people = [f"person{i}@fjord.no" for i in range(6)] + [f"9{i:07d}" for i in range(6)]
    people += [family for _, family in NAMES]
    return not any(p in text for p in people)


async def test_the_report_counts_what_is_held_where_and_names_no_person(
    world: SyncWorld, tmp_path: Path
) -> None:
    started = datetime.now(UTC)
    await world.put_card([person(i) for i in range(6)])
    await world.settle()
    path = world.config_file(tmp_path / "pdsync.toml")

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, [*args, "--config", str(path)])

    result = await asyncio.to_thread(invoke, "report", CUSTOMER, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    systems = {s["system"]: s for s in report["systems"]}
    assert sorted(systems) == ["firestore", "zisson"]
    assert {s: systems[s]["contacts"] for s in systems} == {"firestore": 6, "zisson": 6}
    assert systems["zisson"]["subprocessor"] == "Zisson AS"
    assert "job titles" in systems["firestore"]["categories"]
    assert any("Point-in-time recovery" in r["what"] for r in systems["firestore"]["residuals"])
    assert any("removed from the customer card" in rule for rule in systems["zisson"]["retention"])
    assert report["erased"] is False
    since = datetime.fromisoformat(report["since"])
    assert started - timedelta(seconds=5) <= since <= datetime.now(UTC)
    activity = report["activity"]
    assert activity["syncs"] >= 1 and activity["syncs_failed"] == 0
    assert activity["changes"] == 6  # the six created in Zisson
    assert activity["last_sync"] is not None
    assert names_no_person(result.output)

    norsk = await asyncio.to_thread(invoke, "report", CUSTOMER, "--lang", "no")
    assert norsk.exit_code == 0, norsk.output
    assert "Underleverandør: Zisson AS" in norsk.output
    assert "Kontakter som holdes oppdatert: 6" in norsk.output
    assert names_no_person(norsk.output)
    # Fully Norwegian: the built-in register, the deletion rules, what systems keep.
    for phrase in (
        "Brukes til: Telefonisystem: sentralbordets katalog",
        "Personopplysninger: navn på kundens avdelinger og ansatte, telefonnumre",
        "Slettes: en kontakt som fjernes fra kundekortet, slettes her ved neste synkronisering",
        "Slettes: alt om kunden slettes her når den ber om sletting",
        "Beholdes etter sletting: Gjenoppretting til et tidspunkt (PITR), opptil 7 dager",
        "Åpne saker: tvister 0, manuelle oppgaver 0, oppføringer i karantene 0",
    ):
        assert phrase in norsk.output, norsk.output
    for english in ("deleted", "Telephony", "Point-in-time", "contract", "disputes"):
        assert english not in norsk.output, english

    unknown = await asyncio.to_thread(invoke, "report", "nobody")
    assert unknown.exit_code == 2 and "unknown customer 'nobody'" in unknown.output
    bad = await asyncio.to_thread(invoke, "report", CUSTOMER, "--lang", "de")
    assert bad.exit_code == 2 and "--lang is en or no" in bad.output


async def test_after_a_whole_customer_erasure_the_report_says_so(world: SyncWorld) -> None:
    await world.put_card([person(i) for i in range(3)])
    await world.settle()
    service = world.erasure()
    request = service.request(
        CUSTOMER, scope="customer", subject=None, requested_by="anne", reason="contract ended"
    )
    await service.advance(request)  # planned: waits for a second admin
    service.approve(request, approver="bjørn")
    await service.advance(request)
    report = build_report(world.settings, world.store, CUSTOMER)
    assert report.erased and report.since is None
    assert [s.contacts for s in report.systems] == [0, 0]
    assert report.erasures_completed == 1 and report.erasures_open == 0
    assert "The customer was erased: pdsync processes none of its data." in render_text(report)


async def test_the_api_serves_the_report_to_an_auditor(world: SyncWorld) -> None:
    await world.put_card([person(0)])
    await world.settle()
    token = world.store.create_token("revisor", "auditor", created_by="test")
    app = create_app(world.settings, world.store, connectors=world.connectors)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        auth = {"Authorization": f"Bearer {token}"}
        found = await c.get(f"/api/v1/customers/{CUSTOMER}/report", headers=auth)
        missing = await c.get("/api/v1/customers/nobody/report", headers=auth)
        anonymous = await c.get(f"/api/v1/customers/{CUSTOMER}/report")
    assert found.status_code == 200
    body = found.json()
    assert [(s["system"], s["contacts"]) for s in body["systems"]] == [
        ("firestore", 1),
        ("zisson", 1),
    ]
    assert body["systems"][1]["residuals"]  # from the daemon's connectors
    assert names_no_person(found.text)
    assert (missing.status_code, anonymous.status_code) == (404, 401)


def test_the_register_and_retention_rules_come_from_the_configuration(tmp_path: Path) -> None:
    settings = config.load(EXAMPLE)
    changed = settings.model_copy(
        update={
            "subprocessors": {
                "zisson": config.SubprocessorConfig(
                    name="Zisson AS",
                    service="Sentralbord",
                    categories=["navn", "telefonnumre"],
                    location="Norge",
                )
            }
        }
    )
    store = Store.open(f"sqlite:///{tmp_path / 'store.db'}", master_key=bytes(32))
    try:
        report = build_report(changed, store, "acme")
    finally:
        store.close()
    systems = {s.system: s for s in report.systems}
    assert systems["zisson"].categories == ("navn", "telefonnumre")
    assert systems["zisson"].location == "Norge"
    assert systems["outlook"].subprocessor == "Microsoft (Outlook, Exchange Online)"
    assert [r for r in systems["outlook"].retention if r.startswith("mail")] == [
        "mail in folder 'Kunde Acme' is deleted 730 days after it was received",
        "mail in folder 'inbox' is deleted 365 days after it was received",
    ]
    assert report.since is None and report.activity.syncs == 0
    text = render_text(report)
    assert "Location: Norge" in text


def test_a_customer_sharing_its_mailbox_is_told_that_mail_of_two_customers_waits_for_both(
    tmp_path: Path,
) -> None:
    settings = config.load(EXAMPLE)
    acme = settings.customer("acme")
    assert acme.outlook is not None
    neighbour = acme.model_copy(
        update={
            "id": "nabo",
            "name": "Nabo AS",
            "firestore": None,
            "zisson": None,
            "outlook": acme.outlook.model_copy(
                update={"mail_folders": (), "domains": ("nabo.no",), "retention_days": {}}
            ),
        }
    )
    shared = settings.model_copy(update={"customers": [*settings.customers, neighbour]})
    store = Store.open(f"sqlite:///{tmp_path / 'store.db'}", master_key=bytes(32))
    try:
        alone = build_report(settings, store, "acme")
        report = build_report(shared, store, "acme")
    finally:
        store.close()
    [outlook] = [s for s in report.systems if s.system == "outlook"]
    [outlook_alone] = [s for s in alone.systems if s.system == "outlook"]
    sentence = (
        "mail that is also another customer's in the same mailbox is deleted only when that"
        " customer's rules let it go too"
    )
    assert outlook.retention[-1] == sentence and sentence not in outlook_alone.retention
    assert outlook.retention_no[-1].startswith("e-post som også er en annen kundes")
    assert sentence in render_text(report)


def test_an_unknown_system_in_the_register_is_refused(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8") + (
        '\n[subprocessors.fax]\nname = "Fax AS"\nservice = "fax"\ncategories = ["numbers"]\n'
    )
    path = tmp_path / "pdsync.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(config.ConfigError, match=r"subprocessors.fax: not a system pdsync knows"):
        config.load(path)


def test_retention_runs_are_worded_per_system(tmp_path: Path) -> None:
    settings = config.load(EXAMPLE)
    store = Store.open(f"sqlite:///{tmp_path / 'store.db'}", master_key=bytes(32))
    try:

        def retention_run(summary: dict[str, object]) -> None:
            run = store.start_run("retention", customer_id="acme", trigger="schedule")
            store.finish_run(run, "completed", summary)

        retention_run({"firestore": {"expired": 1, "results": {"applied": 1}}})
        only_card = build_report(settings, store, "acme")
        retention_run(
            {
                "firestore": {"expired": 2, "results": {"applied": 2}},
                "outlook": {"expired": 12, "results": {"applied": 12}},
            }
        )
        both = build_report(settings, store, "acme")
    finally:
        store.close()

    [activity] = [line for line in render_text(only_card).splitlines() if "retention" in line]
    assert "1 retention runs, deleted by them: 1 card document (firestore);" in activity
    assert "message" not in activity
    assert "slettet av dem: 1 dokument på kundekortet (firestore);" in render_text(only_card, "no")
    assert both.activity.deleted_by_system == {"firestore": 3, "outlook": 12}
    assert both.activity.deleted_by_retention == 15
    assert "deleted by them: 3 card documents (firestore), 12 mail messages (outlook);" in (
        render_text(both)
    )
    assert (
        "slettet av dem: 3 dokumenter på kundekortet (firestore), 12 e-postmeldinger (outlook);"
        in render_text(both, "no")
    )
    assert json.loads(both.to_json())["activity"]["deleted_by_system"] == {
        "firestore": 3,
        "outlook": 12,
    }


def test_mail_a_retention_run_kept_as_another_customers_is_counted_apart(
    tmp_path: Path,
) -> None:
    settings = config.load(EXAMPLE)
    store = Store.open(f"sqlite:///{tmp_path / 'store.db'}", master_key=bytes(32))
    try:
        for kept in (3, 2):
            run = store.start_run("retention", customer_id="acme", trigger="schedule")
            outlook = {"expired": 1, "results": {"applied": 1}, "kept_shared": kept}
            store.finish_run(run, "completed", {"outlook": outlook})
        report = build_report(settings, store, "acme")
    finally:
        store.close()

    assert report.activity.deleted_by_system == {"outlook": 2}
    assert report.activity.kept_shared_by_system == {"outlook": 5}
    assert (
        "deleted by them: 2 mail messages (outlook); kept as another customer's too, under"
        " its rules: 5 mail messages (outlook);" in render_text(report)
    )
    assert "beholdt som også en annen kundes, etter dens regler: 5 e-postmeldinger" in (
        render_text(report, "no")
    )
    assert json.loads(report.to_json())["activity"]["kept_shared_by_system"] == {"outlook": 5}


def test_processed_since_is_the_first_link_ever_and_survives_erasures(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'store.db'}", master_key=bytes(32))
    try:
        assert store.first_linked_at("acme") is None
        first = store.create_link("acme")
        store.set_member("acme", first, "zisson", "z-1", None, {})
        since = store.first_linked_at("acme")
        assert since is not None
        later = store.create_link("acme")
        store.set_member("acme", later, "zisson", "z-2", None, {})
        with store._engine.begin() as conn:  # the second link made a while after
            conn.execute(
                sa.update(links)
                .where(links.c.id == later)
                .values(created_at=since + timedelta(days=3))
            )
        assert store.remove_member("acme", first, "zisson")  # the oldest contact goes
        assert store.first_linked_at("acme") == since
        assert store.remove_member("acme", later, "zisson")  # and the last one
        assert store.first_linked_at("acme") == since
        assert store.first_linked_at("other") is None

        # A store from before the first link was recorded: the oldest link it still has,
        # recorded from then on.
        old = store.create_link("legacy")
        store.set_member("legacy", old, "zisson", "z-3", None, {})
        newer = store.create_link("legacy")
        store.set_member("legacy", newer, "zisson", "z-4", None, {})
        with store._engine.begin() as conn:
            conn.execute(
                sa.update(links)
                .where(links.c.id == old)
                .values(created_at=since - timedelta(days=400))
            )
            conn.execute(sa.delete(store_meta).where(store_meta.c.name.like("first_link/%")))
        recorded = store.first_linked_at("legacy")
        assert recorded == since - timedelta(days=400)
        store.remove_member("legacy", old, "zisson")
        assert store.first_linked_at("legacy") == recorded
        assert store.first_linked_at("acme") is None  # its record went with the others
    finally:
        store.close()


async def test_processed_since_stays_when_the_first_contact_is_erased(world: SyncWorld) -> None:
    await world.put_card([person(0)])
    await world.settle()
    since = build_report(world.settings, world.store, CUSTOMER).since
    assert since is not None
    await asyncio.sleep(0.05)  # the next contacts are linked later
    await world.put_card([person(1), person(2)])
    await world.settle()

    service = world.erasure()
    subject = normalize.parse_subject(emails=["person0@fjord.no"])
    request = service.request(
        CUSTOMER, scope="subject", subject=subject, requested_by="ops", reason="ticket 4711"
    )
    row = await service.advance(request)
    assert row.state is ErasureState.COMPLETED

    report = build_report(world.settings, world.store, CUSTOMER)
    assert [s.contacts for s in report.systems] == [2, 2]
    assert report.since == since
    assert f"Processed since: {since:%Y-%m-%d %H:%M} UTC" in render_text(report)


def test_the_pdf_names_what_each_system_keeps_in_norwegian_and_english() -> None:
    facts = make_facts()
    facts = dataclasses.replace(
        facts,
        residuals=(
            ResidualWindow(
                system="firestore",
                what="Point-in-time recovery (PITR)",
                retention="up to 7 days, where PITR is enabled on the database",
                note="Deleted documents can be read from earlier versions until then.",
            ),
        ),
    )
    signer = Signer.generate()
    cert = issue_certificate(facts, ledger=Ledger(MemoryLedgerStore(), signer), signer=signer)
    reader = pypdf.PdfReader(io.BytesIO(render_pdf(cert)))
    text = re.sub(r"\s+", " ", " ".join(page.extract_text() for page in reader.pages))
    assert (
        "firestore: Gjenoppretting til et tidspunkt (PITR), opptil 7 dager, der PITR er slått"
        " på for databasen (Slettede dokumenter kan leses fra tidligere versjoner fram til da.)"
    ) in text
    assert "firestore: Point-in-time recovery (PITR), up to 7 days" in text
