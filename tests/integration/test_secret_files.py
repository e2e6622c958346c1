"""Secret files stay private: `config check` and the daemon refuse one that others can
read; `pdsync store rekey` moves the store to a new master key, and says what to do."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from daemon.config import ConfigError
from daemon.service import serve
from tests.integration.test_ledger_trust import ProofWorld, proof_world


@pytest.fixture
def world(tmp_path: Path, cli_logging_restored: None) -> ProofWorld:
    return proof_world(tmp_path)


@pytest.mark.parametrize("name", ["master.key", "ledger.pem"])
def test_config_check_and_the_daemon_refuse_a_secret_file_others_can_read(
    world: ProofWorld, name: str
) -> None:
    assert world.cli("config", "check", "--offline").exit_code == 0
    secret = world.secrets / name
    secret.chmod(0o644)

    result = world.cli("config", "check", "--offline")
    assert result.exit_code == 2
    assert str(secret) in result.stderr and f"chmod 600 {secret}" in result.stderr
    with pytest.raises(ConfigError, match="chmod 600"):
        asyncio.run(serve(world.settings))


def test_store_rekey_moves_the_store_to_a_new_master_key(world: ProofWorld) -> None:
    with world.store() as store:
        key = store.customer_key("acme")
    new_key = world.secrets / "master-2.key"

    done = world.cli("store", "rekey", "--new-key", str(new_key), "--generate")
    assert done.exit_code == 0, done.stderr
    assert new_key.stat().st_mode & 0o777 == 0o600
    assert "re-wrapped 1 customer keys" in done.stderr and str(new_key) in done.stderr

    # Run again before the config names the new key: nothing to do, and it says so.
    again = world.cli("store", "rekey", "--new-key", str(new_key))
    assert again.exit_code == 0 and "already uses the key" in again.stderr

    old_key = str(world.secrets / "master.key")
    world.config.write_text(
        world.config.read_text(encoding="utf-8").replace(old_key, str(new_key)), encoding="utf-8"
    )
    with world.store() as store:
        assert store.customer_key("acme") == key


def test_store_rekey_with_a_wrong_key_in_the_config_is_a_message(world: ProofWorld) -> None:
    with world.store() as store:
        store.customer_key("acme")
    (world.secrets / "master.key").write_text(os.urandom(32).hex())
    result = world.cli("store", "rekey", "--new-key", str(world.secrets / "n.key"), "--generate")
    assert result.exit_code == 2
    assert "does not open the store" in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)

    public = world.secrets / "open.key"
    public.write_text(os.urandom(32).hex())
    public.chmod(0o644)
    exposed = world.cli("store", "rekey", "--new-key", str(public))
    assert exposed.exit_code == 2 and f"chmod 600 {public}" in exposed.stderr
