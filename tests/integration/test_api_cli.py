"""The ops CLI: `pdsync log`, `tokens`, `disputes resolve`, `tasks done`, on SQLite and
PostgreSQL. `pdsync log` runs as a real process; the rest through typer's runner.

`python -m daemon.cli_ops` is the pdsync CLI with the ops commands registered (the same
app that `pdsync` is once daemon/cli.py calls cli_ops.register).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from daemon import cli, cli_ops
from daemon.api.testing import ApiWorld, api_world
from daemon.store import Store
from tests.fixtures.cli import demo_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def world(store: Store, master_key: bytes, tmp_path: Path) -> ApiWorld:
    return api_world(store, master_key, tmp_path)


@pytest.fixture
def config(world: ApiWorld, store_url: str, tmp_path: Path) -> Path:
    return demo_config(store_url, tmp_path)


def pdsync(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli_ops", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
    )


def test_log_shows_one_customers_runs_and_failures_and_nothing_else(
    world: ApiWorld, config: Path
) -> None:
    demo = world.demo
    result = pdsync("log", "--customer", "acme", "--since", "1h", "-c", config)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines, result.stderr
    text = result.stdout
    for run in (demo.ok_run, demo.failed_run):
        assert "run.started sync" in text and run[:8] in text
    assert "run.failed sync" in text and "run.completed sync" in text
    assert "sync_failed" in text and "incident_erased_data_reappeared" in text
    assert all("  acme  " in line or " acme " in line for line in lines)
    assert "fjord" not in text and demo.other_run[:8] not in text
    assert "unparseable_phone" not in text


def test_log_follows_new_events(world: ApiWorld, config: Path) -> None:
    command = [sys.executable, "-m", "daemon.cli_ops", "log", "--follow", "--customer", "fjord"]
    with subprocess.Popen(
        [*command, "--json", "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    ) as process:
        try:
            assert process.stdout is not None
            first = json.loads(process.stdout.readline())
            assert first["customer"] == "fjord"
            run = world.store.start_run("sync", customer_id="fjord", trigger="test")
            world.store.add_event(run, "later_event", level="warning")
            deadline = time.monotonic() + 20
            seen: list[str] = []
            while "later_event" not in seen and time.monotonic() < deadline:
                seen.append(json.loads(process.stdout.readline())["event"])
            assert "later_event" in seen
        finally:
            process.terminate()


runner = CliRunner()


pytestmark = pytest.mark.usefixtures("cli_logging_restored")


def invoke(config: Path, *args: str) -> tuple[int, str]:
    """Exit code, and stdout and stderr together (the config logs JSON to stderr)."""
    cli_ops.register(cli.app)
    result = runner.invoke(cli.app, [*args, "-c", str(config)], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def stdout_of(config: Path, *args: str) -> str:
    cli_ops.register(cli.app)
    result = runner.invoke(cli.app, [*args, "-c", str(config)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.stdout


def test_log_filters_by_level_and_run_and_speaks_json(world: ApiWorld, config: Path) -> None:
    output = stdout_of(
        config, "log", "--customer", "acme", "--since", "1h", "--level", "error", "--json"
    )
    records = [json.loads(line) for line in output.splitlines()]
    assert {r["customer"] for r in records} == {"acme"}
    assert {r["level"] for r in records} == {"error"}
    assert {r["event"] for r in records} == {
        "incident_erased_data_reappeared",
        "sync_failed",
        "run.failed sync",
    }
    output = stdout_of(config, "log", "--run", world.demo.other_run[:8])
    assert "unparseable_phone" in output and "acme" not in output


def test_log_refuses_a_bad_filter(config: Path) -> None:
    code, output = invoke(config, "log", "--since", "yesterday")
    assert code == 2 and "since" in output


def test_tokens_are_made_listed_and_revoked(world: ApiWorld, config: Path) -> None:
    code, output = invoke(config, "tokens", "create", "ci-bot", "--role", "operator")
    assert code == 0, output
    token = next(line for line in output.splitlines() if line.startswith("pds_"))
    row = world.store.authenticate_token(token)
    assert row is not None and (row.name, row.role) == ("ci-bot", "operator")

    code, output = invoke(config, "tokens", "create", "ci-bot", "--role", "operator")
    assert code == 2 and "revoke it first" in output
    code, output = invoke(config, "tokens", "create", "x", "--role", "root")
    assert code == 2

    code, output = invoke(config, "tokens", "list")
    assert code == 0 and "ci-bot" in output and "operator" in output and token not in output
    code, output = invoke(config, "tokens", "revoke", "ci-bot")
    assert code == 0 and world.store.authenticate_token(token) is None
    code, output = invoke(config, "tokens", "revoke", "ci-bot")
    assert code == 2


def test_disputes_are_resolved_and_tasks_done(world: ApiWorld, config: Path) -> None:
    dispute, task = str(world.demo.dispute), str(world.demo.task)
    code, output = invoke(config, "disputes", "resolve", dispute, "--winner", "outlook")
    assert code == 2 and "firestore, zisson" in output
    code, output = invoke(config, "disputes", "resolve", dispute, "--winner", "zisson")
    assert code == 0, output
    assert world.store.list_disputes(open_only=True) == []
    code, output = invoke(config, "disputes", "resolve", dispute, "--winner", "zisson")
    assert code == 2 and "already" in output

    code, output = invoke(config, "tasks", "done", task, "--note", "call 91234567")
    assert code == 2
    code, output = invoke(config, "tasks", "done", task, "--note", "done by hand")
    assert code == 0, output
    assert world.store.list_tasks(open_only=True) == []
    code, output = invoke(config, "tasks", "done", "999")
    assert code == 2
    kinds = [entry.kind for entry in world.store.ledger_entries()]
    assert kinds[-2:] == ["dispute.resolved", "task.done"]
