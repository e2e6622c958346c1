"""Four eyes for real: approving a whole-customer erasure on the CLI needs a second
admin's token (a file, PDSYNC_APPROVER_TOKEN); a name or the OS user is no credential.
And a reason with control characters is refused wherever it comes in. On SQLite and
PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from daemon import cli
from daemon.api.testing import ApiWorld, api_world
from daemon.store import ErasureState, Store
from tests.fixtures.cli import demo_config

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("cli_logging_restored")


@pytest.fixture
def world(store: Store, master_key: bytes, tmp_path: Path) -> ApiWorld:
    return api_world(store, master_key, tmp_path)


@pytest.fixture
def config(world: ApiWorld, store_url: str, tmp_path: Path) -> Path:
    return demo_config(store_url, tmp_path)


def approve(config: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = runner.invoke(
        cli.app,
        ["erasures", "approve", *args, "-c", str(config)],
        env={"COLUMNS": "200", "PDSYNC_APPROVER_TOKEN": "", **(env or {})},
    )
    return result.exit_code, result.output


def token_file(world: ApiWorld, tmp_path: Path, name: str) -> str:
    path = tmp_path / f"{name}.token"
    path.write_text(world.tokens[name] + "\n", encoding="utf-8")
    path.chmod(0o600)
    return str(path)


def test_approving_on_the_cli_needs_another_admins_token(
    world: ApiWorld, config: Path, tmp_path: Path
) -> None:
    request = world.demo.customer_erasure  # asked for by alice
    code, output = approve(config, request, "--by", "bob")
    assert code == 2 and "No such option" in output  # naming someone is no credential
    code, output = approve(config, request)
    assert code == 2 and "--token-file" in output and "PDSYNC_APPROVER_TOKEN" in output
    for name, why in (
        ("alice", "cannot approve"),
        ("olga", "admin"),
        ("old", "unknown or revoked"),
    ):
        code, output = approve(config, request, "--token-file", token_file(world, tmp_path, name))
        assert code == 2 and why in output, (name, output)
    assert world.store.get_erasure(request).state is ErasureState.AWAITING_APPROVAL

    code, output = approve(config, request, env={"PDSYNC_APPROVER_TOKEN": world.tokens["bob"]})
    row = world.store.get_erasure(request)
    assert row.approved_by == "bob", output
    assert row.state is not ErasureState.AWAITING_APPROVAL
    assert world.tokens["bob"] not in output


@pytest.fixture
async def client(world: ApiWorld) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=world.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://pdsync.test") as c:
        yield c


async def test_a_reason_with_control_characters_is_refused(
    world: ApiWorld, client: httpx.AsyncClient
) -> None:
    before = len(world.store.list_erasures())
    for reason in ("ended\x1b[2J\x1b[31mOK", "ended\nforged line", "a\u202eb"):
        response = await client.post(
            "/api/v1/erasures",
            headers=world.auth("alice"),
            json={"customer": "acme", "scope": "customer", "reason": reason},
        )
        assert response.status_code == 422, reason
        assert "control character" in response.json()["detail"]
        assert "\x1b" not in response.text
    assert len(world.store.list_erasures()) == before


def test_the_cli_refuses_a_reason_with_control_characters(world: ApiWorld, config: Path) -> None:
    before = len(world.store.list_erasures())
    result = runner.invoke(
        cli.app,
        [
            "erase",
            "customer",
            "acme",
            "--execute",
            "--yes",
            "--reason",
            "ok\x1b]0;x\x07",
            "-c",
            str(config),
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 2 and "control character" in result.output
    assert "\x1b" not in result.output
    assert len(world.store.list_erasures()) == before
