"""Erasure on evidence, end to end: the Firestore emulator and the Zisson simulator, a
switchboard's directory with its main number on everyone, a department, a role address,
an extension and namesakes.

Each test failed on the main of 2026-12-04 (issue 9), where any one matching identifier
was proof of identity: erasing one person given with the switchboard number erased
every colleague who had it. What is gone or kept is checked through each system's own
API, never through pdsync.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any

import pytest
import structlog
from typer.testing import CliRunner, Result

from daemon import normalize
from daemon.certificate import Certificate, verify_certificate
from daemon.cli import app
from daemon.domain import ContactKind, ContactRecord, PhoneType, Subject
from daemon.erasure import item_id
from daemon.store import ErasureState
from tests.integration.sync_world import CUSTOMER, SyncWorld

pytestmark = pytest.mark.emulator

SWITCHBOARD = "22 33 44 55"
BOARD_MASKED = "+47 ** ** ** 55"
ITEM = re.compile(r"\b(?:firestore|zisson):[a-z2-7]{8}\b")


def contact(given: str, family: str, *numbers: str, emails: tuple[str, ...] = ()) -> ContactRecord:
    return ContactRecord(
        system="firestore",
        external_id="",
        kind=ContactKind.PERSON,
        given_name=given,
        family_name=family,
        display_name=f"{given} {family}",
        title="Rådgiver",
        emails=emails,
        phones=tuple(normalize.phone(n, PhoneType.WORK) for n in numbers),
    )


# Who works at Firma AS: everyone has the switchboard; Kari has extension 12 on it; Per
# reads post@ (a role address) as the department does; there are two Ola Hansens.
STAFF = {
    "ola": contact("Ola", "Hansen", SWITCHBOARD, "911 11 111", emails=("ola@firma.no",)),
    "kari": contact("Kari", "Nordmann", SWITCHBOARD, "22334455 x12", emails=("kari@firma.no",)),
    "per": contact("Per", "Olsen", SWITCHBOARD, emails=("per@firma.no", "post@firma.no")),
    "ola2": contact("Ola", "Hansen", emails=("ola.hansen@firma.no",)),
    "board": ContactRecord(
        system="firestore",
        external_id="",
        kind=ContactKind.DEPARTMENT,
        display_name="Sentralbord",
        emails=("post@firma.no",),
        phones=(normalize.phone(SWITCHBOARD, PhoneType.WORK),),
    ),
}


async def staffed(world: SyncWorld) -> None:
    await world.put_card(list(STAFF.values()))
    await world.settle()
    assert len(world.users()) == len(STAFF) and len(world.card()) == len(STAFF)


def who(records: list[dict[str, Any]], email_key: str = "emails") -> set[str]:
    """The staff keys of the records a system holds (by their first e-mail)."""
    found = set()
    for record in records:
        for key, person in STAFF.items():
            if list(record.get(email_key) or []) == list(person.emails):
                found.add(key)
    return found


def in_zisson(world: SyncWorld) -> set[str]:
    return who(world.users())


def on_card(world: SyncWorld) -> set[str]:
    return who(list(world.card().values()))


def ids_of(world: SyncWorld, key: str) -> set[str]:
    """The item ids a plan gives the staff member `key`, in both systems."""
    emails = list(STAFF[key].emails)
    ids = {
        item_id("zisson", "contact", str(u["id"])) for u in world.users() if u["emails"] == emails
    }
    ids |= {
        item_id("firestore", "contact", d)
        for d, doc in world.card().items()
        if doc["emails"] == emails
    }
    assert len(ids) == 2
    return ids


async def cli(runner: CliRunner, *args: str) -> Result:
    """The CLI in-process, on a thread of its own: its commands run their own loop. The
    logging it sets up onto the runner's streams is put back afterwards."""
    config, root = structlog.get_config(), logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return await asyncio.to_thread(runner.invoke, app, list(args))
    finally:
        structlog.configure(**config)
        root.handlers[:] = handlers
        root.setLevel(level)


async def erase(world: SyncWorld, subject: Subject, include: tuple[str, ...] = ()) -> Any:
    service = world.erasure()
    request = service.request(
        CUSTOMER,
        scope="subject",
        subject=subject,
        requested_by="anne",
        reason="ticket 9",
        include=include,
    )
    return await service.advance(request)


def certificate_of(world: SyncWorld, row: Any) -> Certificate:
    assert row.certificate is not None
    trusted = next(iter(world.ledger.verifiers))
    assert verify_certificate(row.certificate.encode(), trusted_key_id=trusted) == []
    return Certificate.from_json(row.certificate.encode())


async def test_one_person_given_with_the_switchboard_number_is_the_only_one_erased(
    world: SyncWorld,
) -> None:
    await staffed(world)
    subject = normalize.parse_subject(emails=["ola@firma.no"], phones=[SWITCHBOARD])
    preview = await world.erasure().preview(CUSTOMER, scope="subject", subject=subject)
    assert preview.counts() == {"firestore": {"contact": 1}, "zisson": {"contact": 1}}
    # Kari, Per and the department have the number: shown, left alone.
    assert preview.counts(ambiguous=True) == {"firestore": {"contact": 3}, "zisson": {"contact": 3}}
    assert not preview.nothing_personal

    row = await erase(world, subject)

    assert row.state is ErasureState.COMPLETED, row.error
    assert in_zisson(world) == on_card(world) == {"kari", "per", "ola2", "board"}
    assert {s: (o["outcome"], o["counts"], o["left_alone"]) for s, o in row.outcome.items()} == {
        "firestore": ("executed", {"contact": 1}, {"contact": 3}),
        "zisson": ("executed", {"contact": 1}, {"contact": 3}),
    }
    certificate = certificate_of(world, row)
    assert certificate.facts.shared.phones == (BOARD_MASKED,)
    assert certificate.facts.shared.emails == ()
    [firestore_left, zisson_left] = certificate.facts.left_alone
    assert (zisson_left.system, dict(zisson_left.counts)) == ("zisson", {"contact": 3})
    assert [(m.identifier, m.strength) for m in zisson_left.matched] == [(BOARD_MASKED, "shared")]
    assert set(zisson_left.items) | set(firestore_left.items) == (
        ids_of(world, "kari") | ids_of(world, "per") | ids_of(world, "board")
    )
    assert "22334455" not in row.certificate and "kari" not in row.certificate


async def test_only_the_switchboard_number_erases_nobody_and_the_plan_says_so(
    world: SyncWorld, tmp_path: Path, cli_logging_restored: None
) -> None:
    await staffed(world)
    config = str(world.config_file(tmp_path / "pdsync.toml"))
    plan = await cli(
        CliRunner(env={"PDSYNC_CONFIG": config}),
        "erase",
        "subject",
        "--customer",
        CUSTOMER,
        "--phone",
        "22334455",
        "--plan",
    )
    assert plan.exit_code == 0, plan.output
    assert "Nothing personal: every identifier given is shared" in plan.stderr
    assert f"{BOARD_MASKED} shared" in plan.stdout
    assert "firestore: 0 to erase, 4 ambiguous" in plan.stdout
    assert "zisson: 0 to erase, 4 ambiguous" in plan.stdout
    assert all(len(line) <= 80 for line in plan.stdout.splitlines())
    assert "22334455" not in plan.stdout + plan.stderr

    row = await erase(world, normalize.parse_subject(phones=["22334455"]))

    assert row.state is ErasureState.COMPLETED, row.error
    assert in_zisson(world) == on_card(world) == set(STAFF)
    assert {s: o["outcome"] for s, o in row.outcome.items()} == {
        "firestore": "no_match",
        "zisson": "no_match",
    }
    certificate = certificate_of(world, row)
    assert sum(sum(g.counts.values()) for g in certificate.facts.left_alone) == 8
    # Nobody's tombstone: a later sync changes nothing.
    await world.settle()
    assert in_zisson(world) == set(STAFF)


async def test_a_role_address_is_evidence_of_nobody(world: SyncWorld) -> None:
    await staffed(world)
    alone = await erase(world, normalize.parse_subject(emails=["Post@Firma.no"]))
    assert alone.state is ErasureState.COMPLETED, alone.error
    assert in_zisson(world) == on_card(world) == set(STAFF)
    assert alone.outcome["zisson"]["left_alone"] == {"contact": 2}  # Per and the department

    row = await erase(world, normalize.parse_subject(emails=["Post@Firma.no", "per@firma.no"]))
    assert row.state is ErasureState.COMPLETED, row.error
    assert in_zisson(world) == on_card(world) == {"ola", "kari", "ola2", "board"}
    assert certificate_of(world, row).facts.shared.emails == ("p***@f***.no",)


async def test_erasing_by_extension_takes_only_the_holder_of_the_extension(
    world: SyncWorld,
) -> None:
    await staffed(world)
    row = await erase(world, normalize.parse_subject(phones=["22334455 x12"]))
    assert row.state is ErasureState.COMPLETED, row.error
    assert in_zisson(world) == on_card(world) == {"ola", "per", "ola2", "board"}
    assert row.outcome["zisson"]["left_alone"] == {}  # the switchboard itself is not matched
    assert certificate_of(world, row).facts.identifiers.phones == (f"{BOARD_MASKED} x**",)


async def test_a_name_only_erasure_leaves_its_hits_and_include_erases_exactly_one(
    world: SyncWorld, tmp_path: Path, cli_logging_restored: None
) -> None:
    await staffed(world)
    config = str(world.config_file(tmp_path / "pdsync.toml"))
    runner = CliRunner(env={"PDSYNC_CONFIG": config, "USER": "anne"})
    base = ["erase", "subject", "--customer", CUSTOMER, "--name", "Ola Hansen"]
    plan = await cli(runner, *base, "--plan")
    assert plan.exit_code == 0, plan.output
    assert "only names were given" in plan.stderr
    shown = set(ITEM.findall(plan.stdout))
    assert shown == ids_of(world, "ola") | ids_of(world, "ola2")
    assert "O*** H*** name only" in plan.stdout

    # --yes alone includes nothing.
    nothing = await cli(runner, *base, "--execute", "--reason", "ticket 9", "--yes")
    assert nothing.exit_code == 0, nothing.output
    assert in_zisson(world) == on_card(world) == set(STAFF)

    # An id from no plan: refused before anything is erased.
    wrong = await cli(
        runner, *base, "--execute", "--reason", "t", "--yes", "--include", "zisson:aaaaaaaa"
    )
    assert wrong.exit_code == 2 and "is no item this erasure found" in wrong.stderr
    assert in_zisson(world) == set(STAFF)

    chosen = sorted(ids_of(world, "ola2"))
    included = await cli(
        runner,
        *base,
        "--execute",
        "--reason",
        "ticket 9",
        "--yes",
        *(arg for item in chosen for arg in ("--include", item)),
    )
    assert included.exit_code == 0, included.output
    assert in_zisson(world) == on_card(world) == {"ola", "kari", "per", "board"}
    assert "included by anne" in included.stdout
    row = next(r for r in world.store.list_erasures() if r.state is ErasureState.COMPLETED)
    assert row.outcome["zisson"]["included"] == 1
    assert row.outcome["zisson"]["left_alone"] == {"contact": 1}
    assert certificate_of(world, row).facts.included == {"firestore": 1, "zisson": 1}
    kinds = [e.kind for e in world.store.ledger_entries()]
    assert "erasure_include_requested" in kinds and "erasure_included" in kinds
    shown_after = await cli(runner, "erasures", "show", row.id)
    assert "included by anne" in shown_after.stdout and "left alone" in shown_after.stdout


async def test_a_later_hire_with_the_switchboard_or_the_same_name_is_kept(
    world: SyncWorld,
) -> None:
    await staffed(world)
    subject = normalize.parse_subject(
        emails=["ola@firma.no"], phones=[SWITCHBOARD], names=["Ola Hansen"]
    )
    row = await erase(world, subject)
    assert row.state is ErasureState.COMPLETED, row.error
    assert "ola" not in in_zisson(world) and "ola2" in in_zisson(world)

    # A new Ola Hansen starts: the switchboard number and a mailbox of his own.
    hire = contact("Ola", "Hansen", SWITCHBOARD, emails=("ola.ny@firma.no",))
    await world.put_card([hire])
    report = await world.sync()
    assert report.status == "completed", report.error
    await world.settle()
    assert sum(1 for u in world.users() if u["emails"] == ["ola.ny@firma.no"]) == 1
    assert sum(1 for d in world.card().values() if d["emails"] == ["ola.ny@firma.no"]) == 1
    events = {e.event for e in world.store.run_events(customer_id=CUSTOMER)}
    assert "incident_erased_data_reappeared" not in events


async def test_a_number_shared_with_one_colleague_does_not_take_the_colleague_afterwards(
    world: SyncWorld,
) -> None:
    """Ola and Kari share a direct line. Once Ola's records are erased, the line is held
    by Kari alone; the sweep and the verification still weigh it as shared (as planned)
    and neither erase Kari nor fail the erasure over her."""
    line = "23 45 67 89"
    await world.put_card(
        [
            contact("Ola", "Hansen", line, emails=("ola@firma.no",)),
            contact("Kari", "Nordmann", line, emails=("kari@firma.no",)),
        ]
    )
    await world.settle()
    row = await erase(world, normalize.parse_subject(emails=["ola@firma.no"], phones=[line]))
    assert row.state is ErasureState.COMPLETED, row.error
    assert [u["emails"] for u in world.users()] == [["kari@firma.no"]]
    assert [d["emails"] for d in world.card().values()] == [["kari@firma.no"]]
    assert row.outcome["zisson"]["left_alone"] == {"contact": 1}


async def test_an_admin_includes_items_in_a_request_before_it_is_planned(
    world: SyncWorld, tmp_path: Path, cli_logging_restored: None
) -> None:
    """`pdsync erasures include`: a request the daemon has not planned yet (asked for
    through the API) keeps the ids, and its plan includes them."""
    await staffed(world)
    service = world.erasure()
    request = service.request(
        CUSTOMER,
        scope="subject",
        subject=normalize.parse_subject(phones=[SWITCHBOARD]),
        requested_by="anne",
        reason="ticket 10",
    )
    config = str(world.config_file(tmp_path / "pdsync.toml"))
    runner = CliRunner(env={"PDSYNC_CONFIG": config, "USER": "bjørn"})
    chosen = sorted(ids_of(world, "per"))
    bad = await cli(runner, "erasures", "include", request, "per")
    assert bad.exit_code == 2 and "not an item id" in bad.stderr
    kept = await cli(runner, "erasures", "include", request, *chosen)
    assert kept.exit_code == 0, kept.output
    assert "to include when planned: " + ", ".join(chosen) in kept.stdout
    assert f"pdsync erasures resume {request}" in kept.stderr

    done = await cli(runner, "erasures", "resume", request)
    assert done.exit_code == 0, done.output
    assert in_zisson(world) == on_card(world) == {"ola", "kari", "ola2", "board"}
    row = world.store.get_erasure(request)
    assert row.state is ErasureState.COMPLETED
    items = world.store.erasure_items(request)
    assert {i.included_by for i in items if i.status == "done"} == {"bjørn"}
    assert sum(1 for i in items if i.status == "ambiguous") == 6
    late = await cli(runner, "erasures", "include", request, chosen[0])
    assert late.exit_code == 2 and "too late" in late.stderr
