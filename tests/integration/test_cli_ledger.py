"""Every path of the `pdsync` CLI that changes data leaves its entry on the ledger, as the
daemon's do (issue 10 item 1): a sync and what it changed, an approval past a threshold,
an erasure carried out, cancelled, given items to include, resumed. Against the Firestore
emulator and the Zisson simulator, with no daemon running; the ledger is read back
through the store and checked whole with `pdsync ledger verify`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from daemon.cli import app
from daemon.ledger import LedgerEntry
from daemon.normalize import parse_subject
from daemon.store import ErasureState
from tests.integration.sync_world import CUSTOMER, SyncWorld
from tests.integration.test_sync import person

pytestmark = [pytest.mark.emulator, pytest.mark.usefixtures("cli_logging_restored")]


@pytest.fixture
def config(world_config: Path) -> Path:
    return world_config  # a whole-customer erasure waits for a second admin


async def pdsync(config: Path, *args: str) -> Result:
    def invoke() -> Result:
        return CliRunner().invoke(app, [*args, "--config", str(config)], input="")

    return await asyncio.to_thread(invoke)


def since(world: SyncWorld, start: int) -> list[LedgerEntry]:
    return world.store.ledger_entries(start)


def of_kind(entries: list[LedgerEntry], kind: str) -> list[dict[str, Any]]:
    return [e.payload for e in entries if e.kind == kind]


async def test_a_cli_sync_records_every_change_it_makes(world: SyncWorld, config: Path) -> None:
    await world.put_card([person(i) for i in range(3)])
    start = world.store.ledger_size()
    result = await pdsync(config, "sync")
    assert result.exit_code == 0, result.output
    entries = since(world, start)
    created = of_kind(entries, "sync.create")
    assert len(created) == 3 and {c["system"] for c in created} == {"zisson"}
    assert all(c["fingerprints"] for c in created)
    assert {e.customer_id for e in entries if e.kind == "sync.create"} == {CUSTOMER}
    run = created[0]["run_id"]
    assert run.startswith(result.stdout.split("│")[2].strip())  # the run the table shows
    verified = await pdsync(config, "ledger", "verify")
    assert verified.exit_code == 0, verified.output


async def test_an_approval_given_on_the_cli_is_recorded(world: SyncWorld, config: Path) -> None:
    start = world.store.ledger_size()
    result = await pdsync(
        config, "sync", "--customer", CUSTOMER, "--approve-deletions", "40", "--reason", "cleanup"
    )
    assert result.exit_code == 0, result.output
    [approval] = of_kind(since(world, start), "sync.approved")
    assert approval["threshold"] == "deletions" and approval["max_count"] == 40
    assert approval["reason"] == "cleanup" and approval["by"]
    refused = await pdsync(
        config, "sync", "--customer", CUSTOMER, "--approve-deletions", "1", "--reason", "a@b.no"
    )
    assert refused.exit_code == 2 and "--reason must not hold" in refused.output


async def test_an_erasure_carried_out_on_the_cli_is_recorded_step_by_step(
    world: SyncWorld, config: Path
) -> None:
    await world.put_card([person(i) for i in range(2)])
    await world.settle()
    start = world.store.ledger_size()
    result = await pdsync(
        config,
        "erase",
        "subject",
        "--customer",
        CUSTOMER,
        "--email",
        "person0@fjord.no",
        "--execute",
        "--reason",
        "ticket 7",
        "--yes",
    )
    assert result.exit_code == 0, result.output
    kinds = [e.kind for e in since(world, start)]
    assert kinds[0] == "erasure_received" and "erasure_completed" in kinds
    assert f"--config {config}" in result.stdout  # the certificate hint runs as printed


async def test_a_cancel_and_an_include_on_the_cli_are_recorded(
    world: SyncWorld, config: Path
) -> None:
    result = await pdsync(
        config, "erase", "customer", CUSTOMER, "--execute", "--reason", "end", "--yes"
    )
    assert result.exit_code == 3, result.output  # waits for a second admin
    [request] = world.store.list_erasures(customer_id=CUSTOMER)
    assert f"pdsync erasures approve {request.id} --config {config}" in result.stdout
    start = world.store.ledger_size()
    cancelled = await pdsync(config, "erasures", "cancel", request.id[:8])
    assert cancelled.exit_code == 0, cancelled.output
    [entry] = of_kind(since(world, start), "erasure_cancelled")
    assert entry["request_id"] == request.id

    subject = world.erasure().request(
        CUSTOMER,
        scope="subject",
        subject=parse_subject(emails=["person9@fjord.no"], phones=[], names=[]),
        requested_by="anne",
        reason="ticket 8",
    )
    start = world.store.ledger_size()
    included = await pdsync(config, "erasures", "include", subject[:8], "zisson:aaaaaaaa")
    assert included.exit_code == 0, included.output
    [entry] = of_kind(since(world, start), "erasure_include_requested")
    assert entry["item_ids"] == ["zisson:aaaaaaaa"] and entry["request_id"] == subject
    assert world.store.get_erasure(subject).state is ErasureState.RECEIVED
