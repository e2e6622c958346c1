"""The tamper-evident ledger (O9): RFC 9162 Merkle tree over entries, signed checkpoints.

    from daemon.ledger import Ledger, load_signer
    ledger = Ledger(store, load_signer(path))
    ledger.record("sync.completed", customer_id="acme", run_id=run_id, changed=3)
    ledger.checkpoint()
    report = ledger.verify()   # report.ok, report.first

Modules: merkle (pure tree maths), canonical (the JSON that is hashed and signed),
entry (entries, checkpoints), signing (Ed25519 keys), keys (the published key set that
verifiers trust), witness (checkpoint copies outside the store), ledger (Ledger),
verify (the full check behind `pdsync ledger verify`), memory (an in-memory store for
tests).
"""

from __future__ import annotations

from daemon.ledger.entry import LEDGER_CONTEXT, Checkpoint, LedgerEntry
from daemon.ledger.keys import KeySet, PublishedKey, parse_public_key
from daemon.ledger.ledger import (
    Ledger,
    LedgerCorrupted,
    LedgerError,
    LedgerStore,
    PersonalDataRejected,
    check_no_personal_data,
)
from daemon.ledger.memory import MemoryLedgerStore
from daemon.ledger.signing import (
    KeyFileError,
    Signer,
    Verifier,
    generate_key_file,
    key_id_of,
    load_signer,
)
from daemon.ledger.verify import Finding, Problem, VerifyReport, verify_ledger
from daemon.ledger.witness import FileWitness, HttpWitness, Witness, WitnessError, witness_for

__all__ = [
    "LEDGER_CONTEXT",
    "Checkpoint",
    "FileWitness",
    "Finding",
    "HttpWitness",
    "KeyFileError",
    "KeySet",
    "Ledger",
    "LedgerCorrupted",
    "LedgerEntry",
    "LedgerError",
    "LedgerStore",
    "MemoryLedgerStore",
    "PersonalDataRejected",
    "Problem",
    "PublishedKey",
    "Signer",
    "Verifier",
    "VerifyReport",
    "Witness",
    "WitnessError",
    "check_no_personal_data",
    "generate_key_file",
    "key_id_of",
    "load_signer",
    "parse_public_key",
    "verify_ledger",
    "witness_for",
]
