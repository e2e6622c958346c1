"""The processing report (O7, O8): per system and subprocessor what is held of a customer,
how much, since when and under which rules, from the store after real syncs against the
Firestore emulator and the Zisson simulator; through the CLI and the API; naming no
person."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from click.testing import Result
from typer.testing import CliRunner

from daemon import config
from daemon.api.app import create_app
from daemon.cli import app as cli
from daemon.report import build_report, render_text
from daemon.store import Store
from tests.integration.sync_world import CUSTOMER, SyncWorld
from tests.integration.test_sync import NAMES, person

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


def test_an_unknown_system_in_the_register_is_refused(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8") + (
        '\n[subprocessors.fax]\nname = "Fax AS"\nservice = "fax"\ncategories = ["numbers"]\n'
    )
    path = tmp_path / "pdsync.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(config.ConfigError, match=r"subprocessors.fax: not a system pdsync knows"):
        config.load(path)
