"""`pdsync zisson set-token`: an operator provisions a new refresh token, on SQLite and
PostgreSQL, and the next exchange spends it."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from connectors.base import AuthError
from connectors.secrets import SecretRef
from connectors.zisson import ZissonBinding
from daemon import cli
from daemon.ledger import generate_key_file
from daemon.store import Store
from sandbox.configfile import CustomerEntry, render
from sandbox.zisson_sim import ZissonSimulator
from tests.fixtures.store import OpenStore
from tests.integration.test_zisson_token_store import GUID, Account, account_on

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("cli_logging_restored")


@pytest.fixture
def sim() -> Iterator[ZissonSimulator]:
    with ZissonSimulator(seed=0) as sim:
        yield sim


@pytest.fixture
def account(sim: ZissonSimulator, tmp_path: Path) -> Account:
    return account_on(sim, tmp_path)


@pytest.fixture
def config(account: Account, store_url: str, master_key: bytes, tmp_path: Path) -> Path:
    """acme reads the simulator's account through the JSON API; fjord through XML."""
    key_file = tmp_path / "master.key"
    key_file.write_text(master_key.hex())
    generate_key_file(tmp_path / "ledger.pem")
    xml = ZissonBinding(api="xml", username="fjord", password=SecretRef(env="PDSYNC_UNUSED"))
    path = tmp_path / "pdsync.toml"
    path.write_text(
        render(
            store_url=store_url,
            master_key_file=key_file,
            signing_key_file=tmp_path / "ledger.pem",
            firestore_project="demo",
            firestore_host="127.0.0.1:9",
            zisson_url=account.sim.url,
            customers=[
                CustomerEntry(
                    id="acme", name="Acme AS", firestore_id="acme", zisson=account.binding
                ),
                CustomerEntry(id="fjord", name="Fjord AS", firestore_id="fjord", zisson=xml),
            ],
            log_format="json",
        ),
        encoding="utf-8",
    )
    return path


def set_token(config: Path, *args: str, stdin: str | None = None) -> tuple[int, str]:
    result = runner.invoke(
        cli.app,
        ["zisson", "set-token", *args, "-c", str(config)],
        input=stdin,
        env={"COLUMNS": "200"},
    )
    return result.exit_code, result.output


async def test_a_new_token_is_stored_recorded_and_spent_at_the_next_exchange(
    open_store: OpenStore, account: Account, config: Path, tmp_path: Path
) -> None:
    store = open_store()
    connector = account.connector(store)
    await connector.read(account.customer)
    # Zisson's admin issues a new token (the chain pdsync held ends), and our jwt goes.
    fresh = account.sim.new_refresh_token(GUID)
    account.sim.expire_tokens(GUID)
    with pytest.raises(AuthError, match="pdsync zisson set-token --customer"):
        await connector.read(account.customer)

    token_file = tmp_path / "new.token"
    token_file.write_text(f"{fresh}\n")
    code, output = set_token(config, "--customer", "acme", "--file", str(token_file))

    assert code == 0, output
    assert fresh not in output and f"json:{GUID}" in output
    assert account.stored(store) == (fresh, 2)
    result = await connector.read(account.customer)  # the same instance, its next exchange
    await connector.aclose()
    assert len(result.records) == 3
    assert account.sim.spent_refresh_tokens(GUID)[-1] == fresh
    assert account.stored(store) == (account.sim.refresh_token(GUID), 3)
    [entry] = [e for e in store.ledger_entries() if e.kind == "connector.token_set"]
    assert entry.customer_id == "acme"
    assert entry.payload["account_id"] == f"json:{GUID}" and entry.payload["version"] == 2
    assert fresh not in entry.payload_json


def test_a_token_is_read_from_standard_input(store: Store, account: Account, config: Path) -> None:
    token = "rt-" + secrets.token_urlsafe(24)
    code, output = set_token(config, "--customer", "acme", stdin=f"{token}\n")
    assert code == 0, output
    assert token not in output
    assert account.stored(store) == (token, 1)


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["--customer", "nobody"], "rt-x", "unknown customer 'nobody'"),
        (["--customer", "fjord"], "rt-x", "through the xml API"),
        (["--customer", "acme"], "  \n", "the token is empty"),
        (["--customer", "acme"], "rt-one rt-two", "one word on one line"),
        (["--customer", "acme", "--file", "/nonexistent/token"], None, "cannot read"),
    ],
)
def test_bad_usage_exits_2_and_stores_nothing(
    store: Store, account: Account, config: Path, args: list[str], stdin: str | None, message: str
) -> None:
    code, output = set_token(config, *args, stdin=stdin)
    assert code == 2
    assert message in output
    assert "rt-one" not in output
    assert store.connector_secret("zisson", account.binding.account) is None
