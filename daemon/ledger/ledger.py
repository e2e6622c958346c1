"""The Ledger: record what the daemon did, checkpoint it, prove it.

    ledger = Ledger(store, load_signer(config.ledger.key_file))
    entry = ledger.record("erasure.executed", customer_id="acme", request_id=rid, deleted=12)
    checkpoint = ledger.checkpoint()
    proof = ledger.inclusion_proof(entry.seq, checkpoint.size)

Entries never hold personal data: callers pass ids, counts, field names and keyed
fingerprints, and `record` refuses strings that look like an e-mail address or a phone
number. The Merkle tree is kept in memory and brought up to date from the store before
each checkpoint or proof, re-hashing every row it reads, so a checkpoint is never signed
over rows that do not match their leaf hashes.
"""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from daemon.ledger import canonical, merkle
from daemon.ledger.entry import Checkpoint, LedgerEntry, checkpoint_statement
from daemon.ledger.signing import Signer, Verifier
from daemon.ledger.verify import VerifyReport, verify_ledger
from daemon.ledger.witness import Witness, WitnessError
from daemon.logs import EMAIL, PHONE

log = structlog.get_logger("pdsync.ledger")

_KIND = re.compile(r"[a-z][a-z0-9_.:-]{0,63}")
# Values under these keys are identifiers (an org number or a numeric external id may
# well have eight digits); they are still checked for e-mail addresses.
# Keys whose values are ids or digests: long digit runs there are not phone numbers (a
# 16-hex fingerprint is all digits about once in two thousand).
_ID_KEY = re.compile(r"(?:.*_)?(?:ids?|fingerprints?|sha256|hash)")
_BATCH = 10_000


class LedgerError(Exception):
    """Root of what the ledger raises."""


class PersonalDataRejected(LedgerError, ValueError):
    """A payload value looks like personal data (an e-mail address or a phone number)."""


class LedgerCorrupted(LedgerError):
    """The stored ledger does not match itself; run `pdsync ledger verify` for details."""


class LedgerStore(Protocol):
    """The part of daemon.store.Store the ledger uses."""

    def append_ledger(
        self, kind: str, customer_id: str | None, payload: Mapping[str, Any]
    ) -> LedgerEntry: ...

    def append_ledger_many(
        self, entries: Sequence[tuple[str, str | None, Mapping[str, Any]]]
    ) -> list[LedgerEntry]: ...

    def ledger_entries(self, start: int = 0, stop: int | None = None) -> list[LedgerEntry]: ...

    def ledger_size(self) -> int: ...

    def save_checkpoint(self, checkpoint: Checkpoint) -> Checkpoint: ...

    def latest_checkpoint(self) -> Checkpoint | None: ...

    def checkpoints(self) -> list[Checkpoint]: ...


def check_no_personal_data(payload: Mapping[str, Any]) -> None:
    """Raise PersonalDataRejected when a key or string value in `payload` (at any depth)
    looks like an e-mail address, or like a phone number outside id- and digest-named
    keys (`id`, `*_ids`, `fingerprints`, `*_sha256`, …). The message names the key,
    never the value."""

    def check(value: Any, path: str, id_like: bool) -> None:
        if isinstance(value, str):
            if EMAIL.search(value):
                raise PersonalDataRejected(f"ledger payload {path} looks like an e-mail address")
            if not id_like and PHONE.search(value):
                raise PersonalDataRejected(f"ledger payload {path} looks like a phone number")
        elif isinstance(value, Mapping):
            for key, item in value.items():
                name = str(key)
                if EMAIL.search(name) or PHONE.search(name):
                    raise PersonalDataRejected(
                        f"ledger payload {path} has a key that looks like personal data"
                    )
                check(item, f"{path}.{name}", id_like or bool(_ID_KEY.fullmatch(name)))
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                check(item, f"{path}[{index}]", id_like)

    check(payload, "payload", False)


class Ledger:
    """The append-only, Merkle-hashed record of everything the daemon does (O9).

    `signer` signs checkpoints; `trusted` adds verifiers of earlier keys, so that
    checkpoints signed before a key rotation still verify. `checkpoint_every`: a
    checkpoint is signed as soon as that many entries follow the last one (None: only
    when asked). `witness`: each new checkpoint is also handed to it (see witness.py),
    in order, by a worker thread, so that a slow witness never holds up the caller (an
    event loop, often); `flush_witness` waits for it. Thread-safe.
    """

    def __init__(
        self,
        store: LedgerStore,
        signer: Signer,
        *,
        trusted: Iterable[Verifier] = (),
        checkpoint_every: int | None = None,
        witness: Witness | None = None,
    ) -> None:
        if checkpoint_every is not None and checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        self._store = store
        self._signer = signer
        self._verifiers = {v.key_id: v for v in (*trusted, signer.verifier)}
        self._tree = merkle.MerkleTree()
        self._lock = threading.Lock()
        self._checkpoint_every = checkpoint_every
        self._witness = witness
        self._checkpointed: int | None = None  # the size of the last checkpoint seen
        self._outbox: queue.Queue[Checkpoint] = queue.Queue()
        self._outbox_lock = threading.Lock()
        self._publisher: threading.Thread | None = None

    @property
    def witness(self) -> Witness | None:
        return self._witness

    @property
    def verifiers(self) -> Mapping[str, Verifier]:
        """The trusted keys by key id (the signer's among them)."""
        return dict(self._verifiers)

    def record(self, kind: str, *, customer_id: str | None = None, **payload: Any) -> LedgerEntry:
        """Append an entry; returns it with its seq, ts and leaf hash.

        `kind` is a lowercase dotted name such as "erasure.executed". Raises
        PersonalDataRejected for payload that looks like personal data, TypeError for
        values without a canonical JSON form (floats, bytes), StoreError from the store.
        """
        return self.record_many([(kind, payload)], customer_id=customer_id)[0]

    def record_many(
        self, entries: Sequence[tuple[str, Mapping[str, Any]]], *, customer_id: str | None = None
    ) -> list[LedgerEntry]:
        """Append `entries` (kind, payload) of one customer at consecutive seqs, in one
        transaction (a sync's chunk of applied changes): all are checked before any is
        stored. As `record` otherwise."""
        if customer_id is not None and EMAIL.search(customer_id):
            raise PersonalDataRejected("the customer id looks like an e-mail address")
        checked = []
        for kind, payload in entries:
            if not _KIND.fullmatch(kind):
                raise ValueError(f"not a ledger entry kind: {kind!r} (lowercase, dotted)")
            plain_payload = canonical.plain(payload)
            check_no_personal_data(plain_payload)
            checked.append((kind, customer_id, plain_payload))
        appended = self._store.append_ledger_many(checked)
        with self._lock:
            for entry in appended:
                if entry.seq == len(self._tree):  # else another instance appended meanwhile
                    self._tree.append(bytes.fromhex(entry.leaf_hash))
        if appended and self._checkpoint_due(appended[-1].seq + 1):
            try:
                self.checkpoint()
            except LedgerCorrupted as exc:
                # The entries are stored; refusing to sign is the point, stopping the
                # caller's work is not. `pdsync ledger verify` tells what changed.
                self._checkpointed = appended[-1].seq + 1
                log.error("ledger_checkpoint_refused", error=str(exc))
        return appended

    def _checkpoint_due(self, size: int) -> bool:
        if self._checkpoint_every is None:
            return False
        if self._checkpointed is None:
            latest = self._store.latest_checkpoint()
            self._checkpointed = 0 if latest is None else latest.size
        return size - self._checkpointed >= self._checkpoint_every

    def size(self) -> int:
        """The number of entries in the store now."""
        return self._store.ledger_size()

    def root(self, size: int | None = None) -> str:
        """The Merkle root (hex) of the first `size` entries (default: all)."""
        with self._lock:
            self._catch_up()
            return self._tree.root(size).hex()

    def checkpoint(self) -> Checkpoint:
        """Sign the current tree head, store it and hand it to the witness; returns the
        stored checkpoint (the latest one, unsigned anew, when no entry came since).

        Raises LedgerCorrupted, signing nothing, when a row does not match its leaf
        hash or the rows do not extend the latest stored checkpoint (whoever signed it).
        A witness that fails is logged, not raised: the checkpoint is in the store.
        """
        with self._lock:
            # Latest first: its rows were committed before it was, so they are there now.
            latest = self._store.latest_checkpoint()
            self._catch_up()
            if latest is not None:
                if latest.size > len(self._tree):
                    raise LedgerCorrupted(
                        f"the checkpoint of size {latest.size} covers more rows than the "
                        f"ledger has ({len(self._tree)})"
                    )
                if self._tree.root(latest.size).hex() != latest.root:
                    raise LedgerCorrupted(
                        f"the ledger's first {latest.size} rows no longer hash to the root "
                        "of the checkpoint of that size"
                    )
            if latest is not None and latest.size == len(self._tree):
                self._checkpointed = latest.size
                return latest
            size, root, ts = len(self._tree), self._tree.root().hex(), datetime.now(UTC)
        statement = checkpoint_statement(size=size, root=root, ts=ts, key_id=self._signer.key_id)
        saved = self._store.save_checkpoint(
            Checkpoint(
                size=size,
                root=root,
                ts=ts,
                key_id=self._signer.key_id,
                signature=self._signer.sign_hex(statement),
            )
        )
        self._checkpointed = max(self._checkpointed or 0, saved.size)
        if self._witness is not None:
            self._hand_to_witness(saved)
        return saved

    def flush_witness(self) -> None:
        """Wait until every checkpoint so far was handed to the witness (or failed)."""
        self._outbox.join()

    def _hand_to_witness(self, checkpoint: Checkpoint) -> None:
        with self._outbox_lock:
            self._outbox.put(checkpoint)
            if self._publisher is None:
                # Not a daemon thread: a command that exits first waits for it.
                self._publisher = threading.Thread(
                    target=self._publish, name="ledger-witness", daemon=False
                )
                self._publisher.start()

    def _publish(self) -> None:
        """Hand the queued checkpoints over in order; end when idle for a second."""
        assert self._witness is not None
        while True:
            try:
                checkpoint = self._outbox.get(timeout=1.0)
            except queue.Empty:
                with self._outbox_lock:
                    if self._outbox.empty():
                        self._publisher = None
                        return
                continue
            try:
                self._witness.publish(checkpoint)
            except WitnessError as exc:
                log.error("ledger_witness_failed", size=checkpoint.size, error=str(exc))
            except Exception:
                log.exception("ledger_witness_failed", size=checkpoint.size)
            finally:
                self._outbox.task_done()

    def inclusion_proof(self, seq: int, size: int) -> list[str]:
        """Hex hashes proving entry `seq` is in the tree of the first `size` entries."""
        with self._lock:
            self._catch_up(size)
            return [h.hex() for h in self._tree.inclusion_proof(seq, size)]

    def consistency_proof(self, old: int, new: int) -> list[str]:
        """Hex hashes proving the tree of `new` entries extends the tree of `old`."""
        with self._lock:
            self._catch_up(new)
            return [h.hex() for h in self._tree.consistency_proof(old, new)]

    def verify(self) -> VerifyReport:
        """Check every stored row and checkpoint (reads the whole ledger)."""
        return verify_ledger(self._store, self._verifiers)

    def _catch_up(self, at_least: int | None = None) -> None:
        """Read the rows appended since (by anyone), checking each against its hash."""
        if at_least is not None and at_least <= len(self._tree):
            return
        end = self._store.ledger_size()
        if at_least is not None and at_least > end:
            raise merkle.ProofError(f"the ledger has {end} entries, not {at_least}")
        while len(self._tree) < end:
            start = len(self._tree)
            rows = self._store.ledger_entries(start, min(end, start + _BATCH))
            hashes: list[bytes] = []
            for offset, row in enumerate(rows):
                if row.seq != start + offset:
                    raise LedgerCorrupted(f"ledger row {start + offset} is missing")
                digest = merkle.leaf_hash(row.leaf_data())
                if digest.hex() != row.leaf_hash:
                    raise LedgerCorrupted(f"ledger row {row.seq} does not match its leaf hash")
                hashes.append(digest)
            if not hashes:
                raise LedgerCorrupted(f"ledger row {start} is missing")
            self._tree.extend(hashes)
