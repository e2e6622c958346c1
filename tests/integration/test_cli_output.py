"""What the `pdsync` commands print, as a person reads it on an 80-column terminal or in a
file: data never taken for markup, tables that fit with ids to copy in full, `log` as
the ledger holds it, plans worded for people, list forms and switches that work both
ways. Against the Firestore emulator and the Zisson simulator."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from daemon.cli import app
from tests.integration.sync_world import CUSTOMER, SyncWorld
from tests.integration.test_sync import person

pytestmark = [pytest.mark.emulator, pytest.mark.usefixtures("cli_logging_restored")]


@pytest.fixture
def config(world_config: Path) -> Path:
    return world_config


async def pdsync(config: Path, *args: str) -> Result:
    def invoke() -> Result:
        return CliRunner().invoke(
            app, [*args, "--config", str(config)], input="", env={"COLUMNS": "80"}
        )

    return await asyncio.to_thread(invoke)


async def test_text_from_outside_is_never_read_as_markup(world: SyncWorld, config: Path) -> None:
    run = world.store.start_run("sync", customer_id=CUSTOMER, trigger="test")
    world.store.add_event(
        run, "note", detail={"why": "[redacted] by [bold]ops[/bold] :smile:"}, system="zisson"
    )
    world.store.finish_run(run, "completed", {})
    result = await pdsync(config, "runs", "show", run[:8])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.stdout.split())
    assert "[redacted] by [bold]ops[/bold] :smile:" in flat.replace("│ ", "").replace(" │", "")


async def test_tables_fit_80_columns_and_give_ids_whole_when_asked(
    world: SyncWorld, config: Path
) -> None:
    await world.put_card([person(i) for i in range(2)])
    await world.settle()
    runs = world.store.list_runs(customer_id=CUSTOMER)
    for args in (["runs"], ["runs", "list"], ["erasures", "list"], ["tokens", "list"], ["sync"]):
        result = await pdsync(config, *args)
        assert result.exit_code == 0, result.output
        assert max(map(len, result.stdout.splitlines())) <= 80, result.stdout
        assert "…" not in result.stdout, result.stdout  # nothing cut
    short = await pdsync(config, "runs")
    assert all(r.id[:8] in short.stdout for r in runs) and runs[0].id not in short.stdout
    wide = await pdsync(config, "runs", "--wide")
    assert all(r.id in wide.stdout for r in runs) and "trigger" in wide.stdout


async def test_log_shows_fingerprints_as_the_ledger_holds_them_and_exactly_n_lines(
    world: SyncWorld, config: Path
) -> None:
    await world.put_card([person(i) for i in range(3)])
    await world.settle()
    result = await pdsync(config, "log", "--customer", CUSTOMER)
    assert result.exit_code == 0, result.output
    created = [line for line in result.stdout.splitlines() if " created " in line]
    assert len(created) == 3, result.stdout
    assert all("[redacted]" not in line for line in created), created
    ledger = {
        e.payload["link_id"]: e.payload["fingerprints"]
        for e in world.store.ledger_entries()
        if e.kind == "sync.create"
    }
    for line in created:
        link = re.search(r'link="([^"]+)"', line)
        assert link is not None, line
        for digest in ledger[link.group(1)].values():
            assert digest in line
    for n in (1, 2, 5):
        limited = await pdsync(config, "log", "--limit", str(n))
        assert len(limited.stdout.splitlines()) == n, limited.stdout
    helped = await pdsync(config, "log", "--help")
    assert "The newest N lines" in helped.stdout


async def test_a_whole_customer_plan_is_worded_for_people(world: SyncWorld, config: Path) -> None:
    await world.put_card([person(i) for i in range(2)])
    await world.settle()
    result = await pdsync(config, "erase", "customer", CUSTOMER, "--plan")
    assert result.exit_code == 0, result.output
    assert f"Erasure plan for the whole customer {CUSTOMER}" in result.stdout
    assert "customer of" not in result.stdout
    assert not re.search(r"pdsync\s*│\s*-\s*│\s*0", result.stdout), result.stdout
    assert "pdsync (its own store)" in result.stdout and "links" in result.stdout


async def test_list_forms_and_switches_work_both_ways(world: SyncWorld, config: Path) -> None:
    world.store.create_token("kept", "auditor", created_by="test")
    world.store.create_token("gone", "auditor", created_by="test")
    world.store.revoke_token("gone", by="test")
    every = await pdsync(config, "tokens", "list", "--all")
    active = await pdsync(config, "tokens", "list", "--no-all")
    assert "gone" in every.stdout and "kept" in every.stdout
    assert "gone" not in active.stdout and "kept" in active.stdout
    for group in ("runs", "erasures", "tasks", "disputes", "quarantine"):
        listed = await pdsync(config, group, "list")
        assert listed.exit_code == 0, f"{group}: {listed.output}"


async def test_a_retention_runs_deletions_are_its_changes_in_runs_and_log(
    world: SyncWorld, config: Path
) -> None:
    run = world.store.start_run("retention", customer_id=CUSTOMER, trigger="schedule")
    summary = {
        "outlook": {"expired": 4, "results": {"applied": 3, "conflict": 1}, "kept_shared": 2},
        "firestore": {"expired": 2, "results": {"applied": 2}},
    }
    world.store.finish_run(run, "completed", summary)

    listed = await pdsync(config, "runs")
    [line] = [line for line in listed.stdout.splitlines() if run[:8] in line]
    assert line.split("│")[-2].strip() == "5", listed.stdout  # the changes column
    logged = await pdsync(config, "log", "--customer", CUSTOMER)
    [finished] = [line for line in logged.stdout.splitlines() if "run.completed retention" in line]
    assert "changes=5" in finished, logged.stdout
