"""Witnessed checkpoints: a checkpoint every N entries and at every certificate, each
copied outside the store, so that removing the newest rows (with or without the
checkpoints that signed them) is found by `ledger verify`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from daemon.certificate import Certificate
from daemon.ledger import (
    FileWitness,
    HttpWitness,
    Ledger,
    MemoryLedgerStore,
    Problem,
    Signer,
    WitnessError,
    merkle,
    verify_ledger,
)
from daemon.ledger.entry import leaf_data
from daemon.proof import open_ledger, trusted_verifiers
from daemon.store import Store
from daemon.store.schema import ledger_checkpoints, ledger_entries
from tests.fixtures.loopback import QuietHandler, serving
from tests.integration import test_ledger
from tests.integration.test_ledger import Sql
from tests.integration.test_ledger_trust import certified_erasure, proof_world

sql = test_ledger.sql  # the intruder's statements, behind the store's back


def _fill(ledger: Ledger, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        ledger.record("sync.completed", customer_id="acme", run=f"run-{i}", changed=i)


def test_a_checkpoint_every_n_entries_each_witnessed(store: Store, tmp_path: Path) -> None:
    witness = FileWitness(tmp_path)
    ledger = Ledger(store, Signer.generate(), checkpoint_every=5, witness=witness)
    _fill(ledger, 12)
    ledger.flush_witness()
    assert [cp.size for cp in store.checkpoints()] == [5, 10]
    assert witness.checkpoints() == store.checkpoints()
    assert (tmp_path / "ledger-checkpoints.jsonl").stat().st_mode & 0o777 == 0o600
    assert ledger.checkpoint().size == 12
    assert ledger.checkpoint().size == 12  # nothing new: not signed or witnessed again
    ledger.flush_witness()
    assert [cp.size for cp in witness.checkpoints()] == [5, 10, 12]


def test_removing_the_newest_rows_with_their_checkpoint_is_found_against_the_witness(
    store: Store, tmp_path: Path, sql: Sql
) -> None:
    witness = FileWitness(tmp_path / "witness.jsonl")
    ledger = Ledger(store, Signer.generate(), checkpoint_every=5, witness=witness)
    _fill(ledger, 10)  # checkpoints 5 and 10
    ledger.flush_witness()
    sql(
        sa.delete(ledger_entries).where(ledger_entries.c.seq >= 5),
        sa.delete(ledger_checkpoints).where(ledger_checkpoints.c.size == 10),
    )
    # The store alone cannot tell: what is left is a consistent, signed ledger.
    assert ledger.verify().ok
    report = verify_ledger(store, ledger.verifiers, external=witness.checkpoints())
    problems = {f.problem for f in report.findings}
    assert problems == {Problem.TAIL_MISSING, Problem.CHECKPOINT_MISSING}
    assert report.first is not None and report.first.seq == 5


def test_rows_rewritten_with_their_hashes_and_the_checkpoints_deleted_are_found(
    store: Store, tmp_path: Path, sql: Sql
) -> None:
    witness = FileWitness(tmp_path)
    ledger = Ledger(store, Signer.generate(), checkpoint_every=4, witness=witness)
    _fill(ledger, 8)
    ledger.flush_witness()
    row = store.ledger_entries(2, 3)[0]
    payload = row.payload_json.replace("run-2", "run-X")
    rehashed = merkle.leaf_hash(
        leaf_data(seq=2, ts=row.ts, kind=row.kind, customer_id="acme", payload_json=payload)
    ).hex()
    sql(
        sa.update(ledger_entries)
        .where(ledger_entries.c.seq == 2)
        .values(payload=payload, leaf_hash=rehashed),
        sa.delete(ledger_checkpoints),
    )
    assert verify_ledger(store, ledger.verifiers).ok  # nothing in the store says so
    report = verify_ledger(store, ledger.verifiers, external=witness.checkpoints())
    assert Problem.WITNESS_INCONSISTENT in {f.problem for f in report.findings}


def test_with_a_checkpoint_per_entry_even_the_last_row_cannot_go(
    store: Store, tmp_path: Path, sql: Sql
) -> None:
    witness = FileWitness(tmp_path)
    ledger = Ledger(store, Signer.generate(), checkpoint_every=1, witness=witness)
    _fill(ledger, 3)
    ledger.flush_witness()
    sql(
        sa.delete(ledger_entries).where(ledger_entries.c.seq == 2),
        sa.delete(ledger_checkpoints).where(ledger_checkpoints.c.size == 3),
    )
    report = verify_ledger(store, ledger.verifiers, external=witness.checkpoints())
    assert report.first is not None and report.first.problem == Problem.TAIL_MISSING


def test_a_witness_signed_by_another_key_is_not_believed() -> None:
    store = MemoryLedgerStore()
    ledger = Ledger(store, Signer.generate())
    _fill(ledger, 3)
    ledger.checkpoint()
    other = Ledger(store, Signer.generate()).checkpoint  # same rows, a stranger's key
    _fill(ledger, 1, start=3)
    report = verify_ledger(store, ledger.verifiers, external=[other()])
    assert Problem.WITNESS_UNTRUSTED in {f.problem for f in report.findings}


class _WitnessServer(QuietHandler):
    held: list[bytes]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        json.loads(body)  # a witness takes JSON
        self.held.append(body)
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        body = b"".join(line + b"\n" for line in self.held)
        self.send_response(200)
        self.send_header("Content-Type", "application/jsonl")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def witness_url() -> Iterator[str]:
    """A tiny witness on loopback: keeps what is POSTed, returns it on GET."""
    with serving(type("Handler", (_WitnessServer,), {"held": []})) as url:
        yield f"{url}/witness"


def test_the_cli_checks_an_http_witness_and_a_customers_checkpoint(
    tmp_path: Path, witness_url: str, cli_logging_restored: None
) -> None:
    world = proof_world(tmp_path, ledger=f'witness = "{witness_url}"\ncheckpoint_every = 50')
    with world.store() as store:
        ledger = open_ledger(world.settings, store)
        assert ledger is not None
        _fill(ledger, 3)
        request_id = certified_erasure(world, store)  # the erasure's entry, checkpointed
    certificate = tmp_path / "c.json"
    world.cli("certificate", "export", request_id, "-o", str(certificate))
    size = Certificate.from_json(certificate.read_bytes()).ledger.checkpoint.size
    deadline = time.monotonic() + 10  # handed over by the ledger's worker thread
    while not HttpWitness(witness_url).checkpoints() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [cp.size for cp in HttpWitness(witness_url).checkpoints()] == [size]

    ok = world.cli("ledger", "verify", "--checkpoint", str(certificate))
    assert ok.exit_code == 0, ok.stderr
    assert f"the newest covering {size} of {size} entries" in ok.stdout

    # The erasure and its certificate.issued entry removed, with the checkpoint.
    engine = sa.create_engine(world.store_url, poolclass=sa.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.delete(ledger_entries).where(ledger_entries.c.seq >= 3))
        conn.execute(sa.delete(ledger_checkpoints))
    engine.dispose()
    found = world.cli("ledger", "verify")
    assert found.exit_code == 1 and "tail_missing at seq 3" in found.stderr

    # Without a witness, the certificate the customer kept is enough.
    text = world.config.read_text(encoding="utf-8").replace(f'witness = "{witness_url}"', "")
    world.config.write_text(text, encoding="utf-8")
    blind = world.cli("ledger", "verify")
    assert blind.exit_code == 0 and "cannot be told" in blind.stderr
    held = world.cli("ledger", "verify", "--checkpoint", str(certificate))
    assert held.exit_code == 1 and "tail_missing at seq 3" in held.stderr


def test_a_witness_that_is_down_does_not_stop_the_ledger(tmp_path: Path) -> None:
    store = MemoryLedgerStore()
    missing = FileWitness(tmp_path / "not-mounted" / "witness.jsonl")
    ledger = Ledger(store, Signer.generate(), checkpoint_every=2, witness=missing)
    _fill(ledger, 4)
    assert [cp.size for cp in store.checkpoints()] == [2, 4]
    with pytest.raises(WitnessError, match="not-mounted"):
        missing.checkpoints()

    unreachable = HttpWitness("http://127.0.0.1:9/witness", timeout=1)
    with pytest.raises(WitnessError, match=r"127\.0\.0\.1:9"):
        unreachable.publish(store.checkpoints()[0])


def test_the_daemon_ledger_takes_cadence_and_witness_from_the_config(tmp_path: Path) -> None:
    world = proof_world(tmp_path, ledger=f'witness = "{tmp_path}"\ncheckpoint_every = 3')
    with world.store() as store:
        ledger = open_ledger(world.settings, store)
        assert ledger is not None
        _fill(ledger, 7)
        ledger.flush_witness()
        held = FileWitness(tmp_path).checkpoints()
        assert [cp.size for cp in held] == [3, 6]
        report = verify_ledger(store, trusted_verifiers(world.settings), external=held)
    assert report.ok and report.external == 2 and report.external_size == 6
