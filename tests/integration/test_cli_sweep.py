"""Every `pdsync` subcommand as a person meets it when something is wrong: asked for help,
given an id or customer that does not exist, no config file, no terminal, a store that
cannot be reached, the wrong master key, a customer erased as a whole. Each answers in
a line or two and an exit code, never a traceback or a library's log line.

The subcommands are read from the Typer app, so a new one is swept too. The world is
the real one of the sync tests: the Firestore emulator, the Zisson simulator and a
SQLite store, through a config file as an operator writes it.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner, Result

from daemon.cli import app
from daemon.store import ErasureState
from tests.integration.sync_world import CUSTOMER, SyncWorld
from tests.integration.test_sync import person

pytestmark = [pytest.mark.emulator, pytest.mark.usefixtures("cli_logging_restored")]

# Commands that start something long-running: only asked for help, and for their config.
LONG_RUNNING = {("run",), ("sandbox", "up")}
# Placeholders for arguments, by parameter name: ids that do not exist, a customer that
# is not configured. Options a command requires get a value that parses.
MISSING = {
    "customer": "ghost",
    "customer_id": "ghost",
    "request_id": "nope0000",
    "run_id": "nope0000",
    "task_id": "999",
    "dispute_id": "999",
    "name": "nobody",
    "items": "zisson:aaaaaaaa",
}
PDSYNC = [sys.executable, "-m", "daemon.cli"]
ERASE_CUSTOMER = ["erase", "customer", CUSTOMER, "--execute", "--reason", "end"]
REQUIRED_OPTIONS = {"winner": "zisson", "role": "auditor"}


@dataclass(frozen=True)
class Command:
    path: tuple[str, ...]
    arguments: tuple[str, ...]  # click parameter names of its positional arguments
    options: frozenset[str]  # its option names

    def __str__(self) -> str:
        return " ".join(self.path)

    def args(self, tmp_path: Path, values: dict[str, str] | None = None) -> list[str]:
        """Its path with a value for every argument and required option: from `values`,
        else a missing id or unknown customer."""
        chosen = {**MISSING, **(values or {})}
        args = list(self.path)
        for name in self.arguments:
            args.append(chosen.get(name, str(tmp_path / f"no-{name}")))
        for name, value in REQUIRED_OPTIONS.items():
            if name in self.options:
                args += [f"--{name}", value]
        if "customer" in self.options and "customer" not in self.arguments:
            args += ["--customer", chosen["customer"]]
        if "new_key" in self.options:
            args += ["--new-key", str(tmp_path / "no-new-key")]
        if self.path[0] == "erase":
            args.append("--plan")  # with neither --plan nor --execute it is a usage error
        if self.path == ("erase", "subject"):
            args += ["--email", "person0@fjord.no"]
        return args

    @property
    def takes_an_id_or_customer(self) -> bool:
        return bool(set(self.arguments) & set(MISSING) - {"name"}) or "customer" in self.options


def commands() -> list[Command]:
    """Every command of the app (groups that list on their own count as commands)."""
    found: list[Command] = []

    def walk(command: object, path: tuple[str, ...]) -> None:
        subcommands = getattr(command, "commands", None)
        if path and (subcommands is None or getattr(command, "invoke_without_command", False)):
            params = getattr(command, "params", [])
            found.append(
                Command(
                    path=path,
                    arguments=tuple(p.name for p in params if p.param_type_name == "argument"),
                    options=frozenset(p.name for p in params if p.param_type_name == "option"),
                )
            )
        for name, sub in sorted((subcommands or {}).items()):
            walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return found


COMMANDS = commands()
WITH_CONFIG = [c for c in COMMANDS if "config" in c.options and c.path != ("sandbox", "up")]
STORE_COMMANDS = [
    c for c in WITH_CONFIG if c.path not in LONG_RUNNING and c.path[0] not in ("certificate",)
]


def invoke(args: Sequence[str], env: dict[str, str] | None = None) -> Result:
    """In-process, as `pdsync ARGS`, with standard input not a terminal (empty)."""
    return CliRunner().invoke(app, list(args), input="", env=env, prog_name="pdsync")


def assert_told(result: Result, command: object, *, code: int | None = 2) -> None:
    """A message, not a traceback nor a library's log line; the exit code `code`."""
    text = result.output
    where = f"`{command}`: rc {result.exit_code}\n{text}"
    assert result.exception is None or isinstance(result.exception, SystemExit), where + repr(
        result.exception
    )
    assert "Traceback" not in text, where
    assert '"level": "info"' not in text and "alembic" not in text.lower(), where
    if code is not None:
        assert result.exit_code == code, where
        if code == 2:
            assert result.stderr.strip(), where  # says what is wrong


@pytest.fixture
def config(world_config: Path) -> Path:
    return world_config


def test_the_sweep_covers_every_command_and_none_is_forgotten() -> None:
    names = {str(c) for c in COMMANDS}
    assert {"sync", "erase subject", "erasures list", "tokens list", "log"} <= names
    assert len(COMMANDS) >= 30


def test_help_of_every_command_is_plain_and_whole() -> None:
    for command in [Command(path=(), arguments=(), options=frozenset()), *COMMANDS]:
        result = invoke([*command.path, "--help"])
        assert result.exit_code == 0, f"{command}: {result.output}"
        assert result.output.startswith("Usage: pdsync"), result.output
        assert "<bool>" not in result.output, result.output
        cut = [
            line
            for line in result.output.splitlines()
            if line.rstrip().endswith("...") and not line.startswith("Usage:")
        ]
        assert cut == [], f"{command}: {cut}"  # short help whole, not cut at the column
        # Paragraphs are re-flowed: no line ends mid-sentence with the next one indented
        # below it as its own paragraph.
        body = re.split(r"\n(?:Arguments|Options|Commands):", result.output)[0]
        for paragraph in body.split("\n\n")[1:]:
            lines = [line.strip() for line in paragraph.splitlines() if line.strip()]
            assert all(len(line) > 25 for line in lines[:-1]), f"{command}:\n{paragraph}"
    version = invoke(["--version"])
    assert version.exit_code == 0 and version.output.startswith("pdsync ")


def test_without_a_config_file_every_command_names_the_file_and_how_to_give_one(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "nowhere.toml"
    named = 0
    for command in WITH_CONFIG:
        if command.path[0] == "certificate" and command.path[-1] == "verify":
            continue  # checks a file offline: the config is optional there
        args = [*command.args(tmp_path, {"customer": CUSTOMER}), "--config", str(missing)]
        result = invoke(args)
        assert_told(result, command)  # some refuse their usage before reading the config
        if f"{missing}: no such config file" in result.stderr:
            assert "--config" in result.stderr and "PDSYNC_CONFIG" in result.stderr
            named += 1
    assert named >= len(WITH_CONFIG) - 5


async def test_a_missing_id_or_unknown_customer_is_one_line_and_exit_2(
    config: Path, tmp_path: Path
) -> None:
    swept = named = 0
    for command in STORE_COMMANDS:
        if not command.takes_an_id_or_customer or command.path == ("tokens", "create"):
            continue
        args = [*command.args(tmp_path), "--config", str(config)]
        result = await asyncio.to_thread(invoke, args)
        assert_told(result, command)
        if "unknown customer 'ghost'" in result.stderr:  # and which ones there are
            assert f"configured: {CUSTOMER}" in result.stderr, result.stderr
            named += 1
        swept += 1
    assert swept >= 20 and named >= 8


async def test_destructive_commands_refuse_without_yes_when_no_terminal_can_confirm(
    world: SyncWorld, config: Path
) -> None:
    await world.put_card([person(0)])
    await world.settle()
    for target in (
        ["erase", "subject", "--customer", CUSTOMER, "--email", "person0@fjord.no"],
        ["erase", "customer", CUSTOMER],
    ):
        args = [*target, "--execute", "--reason", "ticket 1", "--config", str(config)]
        result = await asyncio.to_thread(invoke, args)
        assert_told(result, " ".join(target))
        assert "give --yes" in result.stderr
    assert world.store.list_erasures() == []
    assert len(world.users()) == 1  # nothing erased


async def test_an_erasure_that_matches_nothing_says_so_with_exit_4(
    world: SyncWorld, config: Path
) -> None:
    await world.put_card([person(0)])
    await world.settle()
    args = ["erase", "subject", "--customer", CUSTOMER, "--email", "persn0@fjord.no"]
    args += ["--execute", "--reason", "ticket 2", "--yes", "--config", str(config)]
    result = await asyncio.to_thread(invoke, args)
    assert_told(result, "erase subject", code=4)
    assert "nothing matched" in result.stderr
    assert len(world.users()) == 1


def _everywhere(tmp_path: Path, env: dict[str, str], config: Path) -> int:
    """Every command that reads the config, against the store `env` breaks: exit 2 with
    a message (0 for the few that need no store). Returns how many said the store was
    broken."""
    refused = 0
    for command in STORE_COMMANDS:
        args = [*command.args(tmp_path, {"customer": CUSTOMER}), "--config", str(config)]
        result = invoke(args, env=env)
        assert_told(result, command, code=None)
        assert result.exit_code in (0, 2), f"{command}: {result.output}"
        refused += result.exit_code == 2
    return refused


async def test_an_unreachable_store_is_named_by_every_command(config: Path, tmp_path: Path) -> None:
    env = {"PDSYNC_STORE__URL": "postgresql+psycopg://nobody@127.0.0.1:1/none"}
    assert await asyncio.to_thread(_everywhere, tmp_path, env, config) >= 25
    result = await asyncio.to_thread(invoke, ["runs", "--config", str(config)], env)
    assert result.stderr.startswith("store.url: the store's database is unavailable")
    assert len(result.stderr.strip().splitlines()) == 1


async def test_a_wrong_or_malformed_master_key_is_named_by_every_command(
    world: SyncWorld, config: Path, tmp_path: Path
) -> None:
    # The store was made with the world's master key: it holds a check of that key.
    other = tmp_path / "other.key"
    other.write_text(secrets.token_hex(32))
    other.chmod(0o600)
    env = {"PDSYNC_STORE__MASTER_KEY": f'{{"file": "{other}"}}'}
    assert await asyncio.to_thread(_everywhere, tmp_path, env, config) >= 25
    wrong = await asyncio.to_thread(invoke, ["runs", "--config", str(config)], env)
    assert "store.master_key: the master key does not open this store" in wrong.stderr
    env = {"PDSYNC_STORE__MASTER_KEY": "not json"}
    malformed = await asyncio.to_thread(invoke, ["erasures", "--config", str(config)], env)
    assert_told(malformed, "erasures")
    assert "PDSYNC_STORE__MASTER_KEY: not valid" in malformed.stderr
    assert "not json" not in malformed.output  # it may be the secret itself


async def test_a_master_key_that_cannot_be_read_is_named_by_every_command(
    config: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "gone" / "master.key"
    env = {"PDSYNC_STORE__MASTER_KEY": f'{{"file": "{missing}"}}'}
    assert await asyncio.to_thread(_everywhere, tmp_path, env, config) >= 25
    result = await asyncio.to_thread(invoke, ["log", "--config", str(config)], env)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"store.master_key: secret file {missing} cannot be read" in result.stderr


async def test_an_erased_customer_is_named_not_a_traceback(
    world: SyncWorld, config: Path, tmp_path: Path
) -> None:
    await world.put_card([person(i) for i in range(2)])
    await world.settle()
    service = world.erasure()
    request = service.request(
        CUSTOMER, scope="customer", subject=None, requested_by="anne", reason="contract ended"
    )
    await service.advance(request)
    service.approve(request, approver="bjørn")
    assert (await service.advance(request)).state is ErasureState.COMPLETED

    for command in STORE_COMMANDS:
        args = [*command.args(tmp_path, {"customer": CUSTOMER}), "--config", str(config)]
        result = await asyncio.to_thread(invoke, args)
        assert_told(result, command, code=None)
    check = await asyncio.to_thread(invoke, ["config", "check", "--config", str(config)])
    assert_told(check, "config check")
    assert "the customer was erased" in check.stderr and "remove it from the config" in (
        check.stderr
    )
    again = ["erase", "customer", CUSTOMER, "--execute", "--reason", "x", "--yes"]
    result = await asyncio.to_thread(invoke, [*again, "--config", str(config)])
    assert_told(result, "erase customer")
    assert f"{request}" in result.stderr and "remove it from the config" in result.stderr
    sync = await asyncio.to_thread(
        invoke, ["sync", "--customer", CUSTOMER, "--config", str(config)]
    )
    assert_told(sync, "sync", code=None)
    assert sync.exit_code in (1, 2) and "erased" in sync.output


async def test_a_second_whole_customer_erasure_points_to_the_open_one(
    world: SyncWorld, config: Path
) -> None:
    args = ["erase", "customer", CUSTOMER, "--execute", "--reason", "end", "--yes"]
    first = await asyncio.to_thread(invoke, [*args, "--config", str(config)])
    assert first.exit_code == 3, first.output  # waits for a second admin
    [open_one] = world.store.list_erasures(customer_id=CUSTOMER)
    second = await asyncio.to_thread(invoke, [*args, "--config", str(config)])
    assert_told(second, "erase customer")
    assert f"already has an open whole-customer erasure: {open_one.id}" in second.stderr
    assert len(world.store.list_erasures(customer_id=CUSTOMER)) == 1


async def test_ctrl_c_during_an_erasure_is_one_line_and_the_request_resumes(
    world: SyncWorld, tmp_path: Path
) -> None:
    await world.put_card([person(i) for i in range(8)])
    await world.settle()
    config = world.config_file(tmp_path / "pdsync.toml", require_second_admin=False)
    world.zisson.sim.set_faults(latency_ms=300)  # each delete takes a while
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDSYNC_")}
    process = subprocess.Popen(
        [*PDSYNC, *ERASE_CUSTOMER, "--yes", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 60
        while world.zisson.sim.counters["deletes"] < 2:
            assert process.poll() is None and time.monotonic() < deadline
            await asyncio.sleep(0.02)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr and "Error" not in stderr, stderr
    [request] = world.store.list_erasures(customer_id=CUSTOMER)
    assert f"interrupted: erasure {request.id} stays open" in stderr
    assert f"pdsync erasures resume {request.id} --config {config}" in stderr
    last = [line for line in stderr.splitlines() if line.strip()][-1]
    assert last.startswith("interrupted:"), stderr
    assert request.state is ErasureState.EXECUTING  # open: neither failed nor forgotten

    world.zisson.sim.set_faults()
    start = world.store.ledger_size()
    resumed = await asyncio.to_thread(
        invoke, ["erasures", "resume", request.id[:8], "--config", str(config)]
    )
    assert resumed.exit_code == 0, resumed.output
    resumed_kinds = [e.kind for e in world.store.ledger_entries(start)]
    assert "erasure_completed" in resumed_kinds  # on the ledger, as the daemon records it
    assert world.store.get_erasure(request.id).state is ErasureState.COMPLETED
    assert world.users() == []


async def test_config_check_names_a_missing_token_file_in_lines_that_are_not_wrapped(
    world: SyncWorld, config: Path
) -> None:
    token_file = world.zisson.binding.refresh_token_file
    assert token_file is not None
    kept = token_file.read_text()
    token_file.unlink()
    check = await asyncio.to_thread(invoke, ["config", "check", "--config", str(config)])
    assert_told(check, "config check")
    [line] = check.stderr.splitlines()  # one problem, one line, however long
    assert line == (
        f"{config}: customers[0].zisson.refresh_token_file: file {token_file} cannot be"
        " read, and the store holds no token for this account yet"
    )
    assert len(line) > 80

    token_file.write_text(kept)
    await world.put_card([person(0)])
    await world.settle()  # the token is in the store now: the file is not read again
    token_file.unlink()
    check = await asyncio.to_thread(invoke, ["config", "check", "--config", str(config)])
    assert check.exit_code == 0, check.output
