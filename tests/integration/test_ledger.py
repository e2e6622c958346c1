"""The ledger on SQLite and PostgreSQL: appends, checkpoints, proofs, and tampering found."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from daemon.ledger import (
    Checkpoint,
    Ledger,
    LedgerCorrupted,
    LedgerEntry,
    PersonalDataRejected,
    Problem,
    Signer,
    canonical,
    check_no_personal_data,
    merkle,
)
from daemon.ledger.entry import checkpoint_statement
from daemon.store import Store
from daemon.store.schema import ledger_checkpoints, ledger_entries
from tests.fixtures.store import OpenStore

Sql = Callable[..., None]


@pytest.fixture
def signer() -> Signer:
    return Signer.generate()


@pytest.fixture
def ledger(store: Store, signer: Signer) -> Ledger:
    return Ledger(store, signer)


@pytest.fixture
def sql(store_url: str) -> Iterator[Sql]:
    """Runs statements on the database behind the store's back, as an intruder would."""
    engine = sa.create_engine(store_url, poolclass=sa.NullPool)

    def run(*statements: sa.Executable) -> None:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(statement)

    yield run
    engine.dispose()


def fill(ledger: Ledger, n: int = 8) -> None:
    for i in range(n):
        ledger.record("sync.completed", customer_id="acme", run=f"run-{i}", changed=i)


def test_entries_get_gapless_seq_and_canonical_payload(store: Store, ledger: Ledger) -> None:
    first = ledger.record(
        "erasure.planned",
        customer_id="acme",
        request_id="r1",
        counts={"zisson": 2, "outlook": 40},
        fields=("phones", "emails"),
    )
    second = ledger.record("config.changed", key="retention.outlook", at=first.ts)

    assert (first.seq, second.seq) == (0, 1)
    assert first.ts <= second.ts
    assert store.ledger_size() == 2
    stored = store.ledger_entries()
    assert stored == [first, second]
    assert stored[0].payload_json == (
        '{"counts":{"outlook":40,"zisson":2},"fields":["phones","emails"],"request_id":"r1"}'
    )
    assert stored[1].customer_id is None
    assert stored[1].payload["at"] == canonical.format_ts(first.ts)
    entry = stored[0]
    assert entry.leaf_data() == canonical.encode(
        {
            "seq": 0,
            "ts": entry.ts,
            "kind": "erasure.planned",
            "customer_id": "acme",
            "payload": entry.payload,
        }
    )
    assert entry.leaf_hash == merkle.leaf_hash(entry.leaf_data()).hex()
    assert store.ledger_entries(1, 2) == [second]


def test_checkpoints_and_proofs_verify_offline(
    store: Store, ledger: Ledger, signer: Signer
) -> None:
    assert ledger.checkpoint().size == 0
    fill(ledger, 5)
    small = ledger.checkpoint()
    fill(ledger, 6)
    big = ledger.checkpoint()

    assert (small.size, big.size) == (5, 11)
    assert store.checkpoints() == [store.checkpoints()[0], small, big]
    assert store.latest_checkpoint() == big
    for cp in (small, big):
        assert signer.verifier.verify_hex(cp.signature, cp.statement())
    rows = store.ledger_entries()
    for entry in rows:
        proof = [bytes.fromhex(x) for x in ledger.inclusion_proof(entry.seq, big.size)]
        leaf = merkle.leaf_hash(entry.leaf_data())
        assert merkle.verify_inclusion(entry.seq, big.size, leaf, proof, bytes.fromhex(big.root))
    consistency = [bytes.fromhex(x) for x in ledger.consistency_proof(small.size, big.size)]
    assert merkle.verify_consistency(
        small.size, big.size, bytes.fromhex(small.root), bytes.fromhex(big.root), consistency
    )
    report = ledger.verify()
    assert report.ok, report.findings
    assert (report.rows, report.checkpoints) == (11, 3)


def test_another_instance_catches_up_and_agrees(
    open_store: OpenStore, store: Store, ledger: Ledger, signer: Signer
) -> None:
    fill(ledger, 4)
    other = Ledger(open_store(), signer)
    other.record("retention.completed", customer_id="acme", deleted=3)
    fill(ledger, 2)

    assert (
        ledger.root()
        == other.root()
        == merkle.root([bytes.fromhex(e.leaf_hash) for e in store.ledger_entries()]).hex()
    )
    assert other.checkpoint().size == 7
    assert ledger.checkpoint().size == 7  # the same size: the stored one comes back
    assert len(store.checkpoints()) == 1


def test_one_checkpoint_per_size(store: Store, signer: Signer) -> None:
    ts = datetime(2025, 1, 1, tzinfo=UTC)
    root = merkle.EMPTY_ROOT.hex()
    first = Checkpoint(
        size=0,
        root=root,
        ts=ts,
        key_id=signer.key_id,
        signature=signer.sign_hex(
            checkpoint_statement(size=0, root=root, ts=ts, key_id=signer.key_id)
        ),
    )
    assert store.save_checkpoint(first) == first
    later = Checkpoint(
        size=0, root=root, ts=datetime.now(UTC), key_id="0" * 16, signature="00" * 64
    )
    assert store.save_checkpoint(later) == first


@pytest.mark.parametrize(
    "payload",
    [
        {"note": "send to ola.nordmann@firma.no"},
        {"number": "+47 912 34 567"},
        {"numbers": ["ok", "91234567"]},
        {"nested": {"deeper": {"contact": "kari@example.com"}}},
        {"by_field": {"ola@firma.no": 1}},
        {"request_id": "x@y.no"},
    ],
)
def test_personal_data_is_refused(payload: dict[str, object]) -> None:
    with pytest.raises(PersonalDataRejected) as caught:
        check_no_personal_data(payload)
    assert "@" not in str(caught.value) and "912" not in str(caught.value)


def test_ids_fingerprints_and_counts_pass() -> None:
    check_no_personal_data(
        {
            "org_id": "912345678",  # an organisation number is an id, not a phone number
            "external_ids": ["10000001", "10000002"],
            "fingerprint": "9f86d081884c7d659a2feaa0c55ad015",
            "fields": ["given_name", "phones"],
            "count": 91234567,
            "at": "2025-01-31T09:30:00.000000Z",
        }
    )


def test_record_refuses_before_anything_is_stored(store: Store, ledger: Ledger) -> None:
    with pytest.raises(PersonalDataRejected):
        ledger.record("sync.completed", customer_id="acme", note="ring 912 34 567")
    with pytest.raises(PersonalDataRejected):
        ledger.record("sync.completed", customer_id="kari@example.com")
    with pytest.raises(TypeError):
        ledger.record("sync.completed", ratio=0.5)
    with pytest.raises(ValueError):
        ledger.record("Not A Kind")
    assert store.ledger_size() == 0
    assert ledger.record("sync.completed", customer_id="912345678").seq == 0


def test_a_batch_is_stored_whole_at_consecutive_seqs_or_not_at_all(
    store: Store, ledger: Ledger
) -> None:
    ledger.record("sync.completed", customer_id="acme")
    batch = [("sync.create", {"link_id": f"l{i}", "fields": ["title"]}) for i in range(5)]
    entries = ledger.record_many(batch, customer_id="acme")
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert store.ledger_entries(1) == entries  # as stored, leaf hashes and all
    assert [e.payload["link_id"] for e in entries] == ["l0", "l1", "l2", "l3", "l4"]
    # One bad entry refuses the batch before anything of it is stored.
    with pytest.raises(PersonalDataRejected):
        ledger.record_many(
            [("sync.create", {"link_id": "l5"}), ("sync.update", {"note": "ring 912 34 567"})],
            customer_id="acme",
        )
    with pytest.raises(ValueError):
        ledger.record_many([("sync.create", {}), ("Not A Kind", {})], customer_id="acme")
    assert store.ledger_size() == 6
    assert ledger.record_many([], customer_id="acme") == []
    assert ledger.checkpoint().size == 6
    assert ledger.verify().ok


def test_batches_from_two_stores_interleave_without_gaps(
    open_store: OpenStore, signer: Signer
) -> None:
    stores = [open_store(), open_store()]
    ledgers = [Ledger(s, signer) for s in stores]

    def append(ledger: Ledger, worker: int) -> None:
        for i in range(6):
            batch = [("sync.create", {"worker": worker, "i": i, "j": j}) for j in range(5)]
            ledger.record_many(batch, customer_id="acme")

    assert four_workers(ledgers, append) == []
    entries = stores[0].ledger_entries()
    assert [e.seq for e in entries] == list(range(120))
    # Each batch lies whole, in its order, however the batches interleave.
    for start in range(0, 120, 5):
        batch = [e.payload for e in entries[start : start + 5]]
        assert [p["j"] for p in batch] == [0, 1, 2, 3, 4]
        assert len({(p["worker"], p["i"]) for p in batch}) == 1
    assert ledgers[1].root() == ledgers[0].root()
    assert ledgers[0].verify().ok


def _row(seq: int) -> sa.ColumnElement[bool]:
    return ledger_entries.c.seq == seq


# case: (statements, the first finding's problem, its seq, its checkpoint size)
Tampering = tuple[Callable[[Signer], list[sa.Executable]], Problem, int | None, int | None]
TAMPERING: dict[str, Tampering] = {
    "payload edited": (
        lambda _: [sa.update(ledger_entries).where(_row(3)).values(payload='{"changed":0}')],
        Problem.ROW_CHANGED,
        3,
        None,
    ),
    "kind edited": (
        lambda _: [sa.update(ledger_entries).where(_row(6)).values(kind="sync.failed")],
        Problem.ROW_CHANGED,
        6,
        None,
    ),
    "row deleted": (
        lambda _: [sa.delete(ledger_entries).where(_row(3))],
        Problem.ROW_MISSING,
        3,
        None,
    ),
    "rows swapped": (
        lambda _: [
            sa.update(ledger_entries).where(_row(2)).values(seq=1000),
            sa.update(ledger_entries).where(_row(5)).values(seq=2),
            sa.update(ledger_entries).where(_row(1000)).values(seq=5),
        ],
        Problem.REORDERED,
        2,
        None,
    ),
    "row moved to the end": (
        lambda _: [sa.update(ledger_entries).where(_row(3)).values(seq=20)],
        Problem.ROW_MISSING,
        3,
        None,
    ),
    "rows renumbered over a deleted one": (
        lambda _: [
            sa.delete(ledger_entries).where(_row(3)),
            *(sa.update(ledger_entries).where(_row(s)).values(seq=s - 1) for s in range(4, 8)),
        ],
        Problem.REORDERED,
        3,
        None,
    ),
    "leaf hash edited": (
        lambda _: [sa.update(ledger_entries).where(_row(4)).values(leaf_hash="ab" * 32)],
        Problem.LEAF_HASH_CHANGED,
        4,
        None,
    ),
    "tail deleted": (
        lambda _: [sa.delete(ledger_entries).where(ledger_entries.c.seq >= 6)],
        Problem.TAIL_MISSING,
        6,
        8,
    ),
    "row rewritten with its hash": (
        lambda _: [_rewrite(3)],
        Problem.CHECKPOINT_ROOT,
        None,
        8,
    ),
    "checkpoint root forged": (
        lambda _: [
            sa.update(ledger_checkpoints)
            .where(ledger_checkpoints.c.size == 8)
            .values(root="cd" * 32)
        ],
        Problem.CHECKPOINT_SIGNATURE,
        None,
        8,
    ),
    "checkpoint signed by another key": (
        lambda _: [sa.insert(ledger_checkpoints).values(**_forged(Signer.generate()))],
        Problem.CHECKPOINT_UNKNOWN_KEY,
        None,
        9,
    ),
}


def _rewrite(seq: int) -> sa.Executable:
    """Change row `seq`'s payload and recompute its leaf hash, as a careful intruder would."""
    entry = _ENTRIES[seq]
    payload = '{"changed":1}'
    data = entry.leaf_data().replace(entry.payload_json.encode(), payload.encode())
    return (
        sa.update(ledger_entries)
        .where(_row(seq))
        .values(payload=payload, leaf_hash=merkle.leaf_hash(data).hex())
    )


def _forged(signer: Signer) -> dict[str, object]:
    ts = datetime.now(UTC)
    root = "ef" * 32
    statement = checkpoint_statement(size=9, root=root, ts=ts, key_id=signer.key_id)
    return {
        "size": 9,
        "root": root,
        "ts": ts,
        "key_id": signer.key_id,
        "signature": signer.sign_hex(statement),
    }


_ENTRIES: dict[int, LedgerEntry] = {}  # the rows as written, for _rewrite


@pytest.mark.parametrize("case", TAMPERING)
def test_tampering_is_found_at_its_row(
    case: str, store: Store, ledger: Ledger, signer: Signer, sql: Sql, open_store: OpenStore
) -> None:
    tamper, problem, seq, checkpoint_size = TAMPERING[case]
    fill(ledger, 8)
    ledger.checkpoint()
    _ENTRIES.clear()
    _ENTRIES.update({e.seq: e for e in store.ledger_entries()})
    assert ledger.verify().ok

    sql(*tamper(signer))

    report = ledger.verify()
    assert not report.ok
    if case == "row moved to the end":
        moved = next(f for f in report.findings if f.seq == 20)
        assert (moved.problem, moved.detail) == (
            Problem.REORDERED,
            "the row here was written as seq 3",
        )
    first = report.first
    assert first is not None
    assert (first.problem, first.seq) == (problem, seq), report.findings
    if checkpoint_size is not None:
        assert first.checkpoint_size == checkpoint_size
    assert str(first)
    if problem not in (Problem.CHECKPOINT_SIGNATURE, Problem.CHECKPOINT_UNKNOWN_KEY):
        with pytest.raises(LedgerCorrupted):  # a fresh instance signs nothing over it
            Ledger(open_store(), signer).checkpoint()


def test_several_changes_at_once_are_each_told_apart(
    store: Store, ledger: Ledger, sql: Sql
) -> None:
    fill(ledger, 8)
    ledger.checkpoint()
    fill(ledger, 8)
    ledger.checkpoint()
    sql(
        sa.update(ledger_entries).where(_row(3)).values(payload='{"changed":1}'),
        sa.update(ledger_entries).where(_row(5)).values(leaf_hash="ab" * 32),
        sa.update(ledger_entries).where(_row(12)).values(customer_id="other"),
        sa.update(ledger_entries).where(_row(1)).values(seq=1000),
        sa.update(ledger_entries).where(_row(9)).values(seq=1),
        sa.update(ledger_entries).where(_row(1000)).values(seq=9),
    )

    found = [(f.problem, f.seq) for f in ledger.verify().findings]
    assert found == [
        (Problem.REORDERED, 1),
        (Problem.ROW_CHANGED, 3),
        (Problem.LEAF_HASH_CHANGED, 5),
        (Problem.REORDERED, 9),
        (Problem.ROW_CHANGED, 12),
    ]


def test_a_mismatch_before_any_checkpoint_is_still_found(ledger: Ledger, sql: Sql) -> None:
    fill(ledger, 4)
    sql(sa.update(ledger_entries).where(_row(1)).values(payload='{"run":"x"}'))

    first = ledger.verify().first
    assert first is not None
    assert (first.problem, first.seq) == (Problem.ROW_MISMATCH, 1)


def test_concurrent_appends_from_two_stores_leave_no_gaps(
    open_store: OpenStore, signer: Signer
) -> None:
    stores = [open_store(), open_store()]
    ledgers = [Ledger(s, signer) for s in stores]

    def append(ledger: Ledger, worker: int) -> None:
        for i in range(15):
            ledger.record("sync.completed", customer_id="acme", worker=worker, i=i)

    assert four_workers(ledgers, append) == []
    entries = stores[0].ledger_entries()
    assert [e.seq for e in entries] == list(range(60))
    assert all(a.ts <= b.ts for a, b in itertools.pairwise(entries))
    assert ledgers[0].checkpoint().size == 60
    assert ledgers[1].root() == ledgers[0].root()
    assert ledgers[1].verify().ok


def four_workers(ledgers: list[Ledger], work: Callable[[Ledger, int], None]) -> list[BaseException]:
    """`work(ledger, worker)` in four threads at once, two on each of two ledgers (as two
    instances with two workers each); what they raised."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def worker(n: int) -> None:
        try:
            barrier.wait()
            work(ledgers[n % 2], n)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_fingerprints_that_happen_to_be_all_digits_are_not_mistaken_for_phones() -> None:
    from daemon.ledger.ledger import check_no_personal_data

    check_no_personal_data(
        {"fingerprints": {"title": "1234567890123456"}, "certificate_sha256": "9" * 64}
    )
    with pytest.raises(Exception, match="phone"):
        check_no_personal_data({"note": "22334455"})
