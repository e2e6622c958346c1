"""Rotating the signing key: the old key retires, and stays trusted for what it signed
before, and for nothing after; the published key set lists both with their validity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from typer.testing import CliRunner

from daemon.cli import app
from daemon.ledger import KeySet, Ledger, Problem, Signer, canonical, verify_ledger
from daemon.ledger.entry import Checkpoint, checkpoint_statement
from daemon.proof import open_ledger, trusted_verifiers
from tests.integration.test_ledger_trust import ProofWorld, certified_erasure, proof_world


def _rotate(world: ProofWorld, tmp_path: Path, retired_at: datetime) -> Signer:
    """What an operator does: a new key file signs from now on, the old public key goes
    to [[ledger.retired_keys]] with the time it was retired. Returns the old signer."""
    old = Signer.from_pem((world.secrets / "ledger.pem").read_bytes())
    fresh = world.secrets / "ledger-2.pem"
    from daemon.ledger import generate_key_file

    generate_key_file(fresh)
    text = world.config.read_text(encoding="utf-8")
    text = text.replace(str(world.secrets / "ledger.pem"), str(fresh))
    text += (
        f'signing_key_since = "{canonical.format_ts(retired_at)}"\n\n'
        "[[ledger.retired_keys]]\n"
        f'public_key = "{old.public_key_hex}"\n'
        f'valid_until = "{canonical.format_ts(retired_at)}"\n'
    )
    world.config.write_text(text, encoding="utf-8")
    return old


def test_after_rotation_old_checkpoints_and_certificates_still_verify(
    tmp_path: Path, cli_logging_restored: None
) -> None:
    world = proof_world(tmp_path)
    with world.store() as store:
        ledger = open_ledger(world.settings, store)
        assert ledger is not None
        for i in range(3):
            ledger.record("sync.completed", customer_id="acme", changed=i)
        ledger.checkpoint()
        old_request = certified_erasure(world, store)
    old_certificate = tmp_path / "old.json"
    world.cli("certificate", "export", old_request, "-o", str(old_certificate))

    old = Signer.from_pem((world.secrets / "ledger.pem").read_bytes())
    rotated = world.cli("ledger", "keys", "rotate", "--new-key", str(world.secrets / "l2.pem"))
    assert rotated.exit_code == 0, rotated.stderr
    assert (world.secrets / "l2.pem").stat().st_mode & 0o777 == 0o600
    # The operator puts the lines printed in place of the signing key.
    text = world.config.read_text(encoding="utf-8")
    text = "".join(line for line in text.splitlines(True) if not line.startswith("signing_key"))
    world.config.write_text(text + rotated.stdout.removeprefix("[ledger]\n"), encoding="utf-8")
    with world.store() as store:
        ledger = open_ledger(world.settings, store)
        assert ledger is not None
        ledger.record("sync.completed", customer_id="acme", changed=9)
        assert ledger.checkpoint().key_id != old.key_id
        new_request = certified_erasure(world, store, reason="after rotation")
        report = verify_ledger(store, trusted_verifiers(world.settings))
        assert report.ok, report.findings
        # Without the retired key, what it signed no longer verifies: that is the point.
        bare = verify_ledger(store, {k: v for k, v in ledger.verifiers.items() if k != old.key_id})
        assert {f.problem for f in bare.findings} == {Problem.CHECKPOINT_UNKNOWN_KEY}

    assert world.cli("ledger", "verify").exit_code == 0
    keys = tmp_path / "keys.json"
    assert world.cli("ledger", "keys", "export", "-o", str(keys)).exit_code == 0
    retired, current = KeySet.load(keys).all()
    assert retired.key_id == old.key_id and retired.valid_until is not None
    assert current.current and current.valid_from == retired.valid_until

    new_certificate = tmp_path / "new.json"
    world.cli("certificate", "export", new_request, "-o", str(new_certificate))
    for path in (old_certificate, new_certificate):
        result = CliRunner().invoke(app, ["certificate", "verify", str(path), "--keys", str(keys)])
        assert result.exit_code == 0, result.stderr


def test_a_retired_key_signs_nothing_valid_after_it_was_retired(
    tmp_path: Path, cli_logging_restored: None
) -> None:
    world = proof_world(tmp_path)
    old = _rotate(world, tmp_path, datetime.now(UTC) - timedelta(days=1))
    with world.store() as store:
        ledger = open_ledger(world.settings, store)
        assert ledger is not None
        ledger.record("sync.completed", customer_id="acme", changed=1)
        head = ledger.checkpoint()
        # Someone holding the retired key (a leaked backup) signs a checkpoint today.
        ledger.record("sync.completed", customer_id="acme", changed=2)
        size, root, now = ledger.size(), ledger.root(), datetime.now(UTC)
        statement = checkpoint_statement(size=size, root=root, ts=now, key_id=old.key_id)
        store.save_checkpoint(
            Checkpoint(
                size=size, root=root, ts=now, key_id=old.key_id, signature=old.sign_hex(statement)
            )
        )
        report = verify_ledger(store, trusted_verifiers(world.settings))
    assert head.size == 1
    assert [f.problem for f in report.findings] == [Problem.CHECKPOINT_KEY_NOT_VALID]
    assert report.findings[0].checkpoint_size == 2


def test_a_ledger_keeps_verifying_across_rotation_in_memory_too() -> None:
    # The Ledger object itself trusts the retired keys it is given.
    from daemon.ledger import MemoryLedgerStore

    store = MemoryLedgerStore()
    old, new = Signer.generate(), Signer.generate()
    first = Ledger(store, old)
    first.record("sync.completed", customer_id="acme", changed=1)
    first.checkpoint()
    second = Ledger(store, new, trusted=[old.verifier])
    second.record("sync.completed", customer_id="acme", changed=2)
    second.checkpoint()
    assert second.verify().ok
    assert not Ledger(store, new).verify().ok
