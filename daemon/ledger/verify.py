"""`pdsync ledger verify`: recompute every leaf from its row and hold it against the checkpoints.

What is found, and how it is told apart (row = a ledger_entries row, at position seq):

- row_missing      seq has a gap (a row was deleted)
- tail_missing     a checkpoint covers more rows than there are
- reordered        the row's content and leaf hash were written at another seq
- row_changed      the row no longer hashes to its leaf hash, and that leaf hash is the
                   one a checkpoint signed: the content (payload, kind, ts...) was edited
- leaf_hash_changed  the content is what a checkpoint signed; the leaf_hash column is not
- row_mismatch     content and leaf hash disagree, and no checkpoint tells which changed
- checkpoint_*     a checkpoint's signature fails, its key is unknown or was not in use
                   when it signed, or its root is not the root of the rows (rows
                   rewritten together with their hashes)
- checkpoint_missing  a witnessed checkpoint is not in the store (removed with the rows)
- witness_*        a checkpoint held outside the store (a witness, a customer's
                   certificate) is not signed by a trusted key, or the store's tree does
                   not extend it (RFC 9162 consistency proof, and its root recomputed)
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from daemon.ledger import canonical, merkle
from daemon.ledger.entry import Checkpoint, LedgerEntry
from daemon.ledger.keys import KeySet
from daemon.ledger.signing import Verifier

_BATCH = 10_000  # rows per read
_SEARCH = 16  # how far around a misplaced row to look for the seq it was written at
_DETAILED = 100  # mismatching rows analysed one by one; the rest are counted
_COMBINE = 8  # at most this many unexplained rows per checkpoint are told apart (2**8 roots)


class Problem(StrEnum):
    ROW_MISSING = "row_missing"
    TAIL_MISSING = "tail_missing"
    REORDERED = "reordered"
    ROW_CHANGED = "row_changed"
    LEAF_HASH_CHANGED = "leaf_hash_changed"
    ROW_MISMATCH = "row_mismatch"
    CHECKPOINT_SIGNATURE = "checkpoint_signature"
    CHECKPOINT_UNKNOWN_KEY = "checkpoint_unknown_key"
    CHECKPOINT_ROOT = "checkpoint_root"
    CHECKPOINT_KEY_NOT_VALID = "checkpoint_key_not_valid"
    CHECKPOINT_MISSING = "checkpoint_missing"
    WITNESS_UNTRUSTED = "witness_untrusted"
    WITNESS_INCONSISTENT = "witness_inconsistent"


@dataclass(frozen=True, kw_only=True, slots=True)
class Finding:
    """One problem: the first row it concerns (`seq`) and/or the checkpoint's size."""

    problem: Problem
    seq: int | None
    checkpoint_size: int | None = None
    detail: str = ""

    def __str__(self) -> str:
        where = [f"seq {self.seq}"] if self.seq is not None else []
        if self.checkpoint_size is not None:
            where.append(f"checkpoint {self.checkpoint_size}")
        return f"{self.problem.value} at {', '.join(where)}: {self.detail}"


@dataclass(frozen=True, kw_only=True, slots=True)
class VerifyReport:
    """The outcome of a full check; `ok` when nothing was found."""

    rows: int
    checkpoints: int
    findings: tuple[Finding, ...]
    # Checkpoints held outside the store that were checked, and the largest size they
    # cover: rows past it are not protected against removal.
    external: int = 0
    external_size: int = 0

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def first(self) -> Finding | None:
        """The finding at the lowest seq (the first bad row), else the smallest checkpoint's
        (a checkpoint_root finding says in which rows the change lies)."""
        return self.findings[0] if self.findings else None


class LedgerReader(Protocol):
    def ledger_entries(self, start: int = 0, stop: int | None = None) -> list[LedgerEntry]: ...

    def ledger_size(self) -> int: ...

    def checkpoints(self) -> list[Checkpoint]: ...


def _batches(store: LedgerReader) -> Iterator[list[LedgerEntry]]:
    end = store.ledger_size()
    for start in range(0, end, _BATCH):
        yield store.ledger_entries(start, min(start + _BATCH, end))


def _unhex(text: str) -> bytes | None:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        return None
    return raw if len(raw) == merkle.HASH_SIZE and raw.hex() == text else None


@dataclass(slots=True)
class _Mismatch:
    row: LedgerEntry
    stored: bytes | None  # the leaf_hash column, if it is a hash at all
    recomputed: bytes  # the leaf hash of the row's content


def verify_ledger(
    store: LedgerReader,
    verifiers: Mapping[str, Verifier],
    *,
    external: Sequence[Checkpoint] = (),
) -> VerifyReport:
    """Check every row and checkpoint; `verifiers` by key id are the trusted keys (a
    KeySet also limits each key to its validity). `external`: checkpoints held outside
    the store (the witness's, a customer's), each of which the rows must extend."""
    findings: list[Finding] = []
    tree = merkle.MerkleTree()  # the leaf_hash column, up to the first gap
    mismatches: list[_Mismatch] = []
    missing_seqs: list[int] = []  # where a moved row may have come from
    expected, rows, contiguous = 0, 0, True
    for batch in _batches(store):
        column: list[bytes] = []
        for row in batch:
            rows += 1
            if row.seq != expected:
                missing = f"{expected}" if row.seq == expected + 1 else f"{expected}..{row.seq - 1}"
                findings.append(
                    Finding(
                        problem=Problem.ROW_MISSING,
                        seq=expected,
                        detail=f"row {missing} is not there",
                    )
                )
                contiguous = False
                missing_seqs.extend(range(expected, min(row.seq, expected + _DETAILED)))
            expected = row.seq + 1
            stored = _unhex(row.leaf_hash)
            recomputed = merkle.leaf_hash(row.leaf_data())
            if contiguous:
                column.append(stored or bytes(merkle.HASH_SIZE))
            if stored != recomputed:
                mismatches.append(_Mismatch(row=row, stored=stored, recomputed=recomputed))
        tree.extend(column)

    checkpoints = store.checkpoints()
    trusted = _checked_signatures(checkpoints, verifiers, findings)
    signed = _classify(mismatches, missing_seqs, tree, trusted, findings)
    _check_roots(trusted, tree, signed, expected, findings)
    outside = _check_external(
        external, verifiers, checkpoints, trusted, tree, signed, expected, findings
    )
    findings.sort(key=_order)
    return VerifyReport(
        rows=rows,
        checkpoints=len(checkpoints),
        findings=tuple(findings),
        external=len(outside),
        external_size=max((cp.size for cp in outside), default=0),
    )


def _order(finding: Finding) -> tuple[int, int]:
    if finding.seq is not None:
        return (0, finding.seq)
    return (1, finding.checkpoint_size or 0)


def _key_problem(cp: Checkpoint, verifiers: Mapping[str, Verifier]) -> tuple[Problem, str] | None:
    """Why the checkpoint's signature cannot be trusted, or None when it can."""
    verifier = verifiers.get(cp.key_id)
    if verifier is None:
        return Problem.CHECKPOINT_UNKNOWN_KEY, f"signed by key {cp.key_id}, which is not trusted"
    if not verifier.verify_hex(cp.signature, cp.statement()):
        return Problem.CHECKPOINT_SIGNATURE, "its signature does not match its size, root and time"
    published = verifiers.published(cp.key_id) if isinstance(verifiers, KeySet) else None
    if published is not None and not published.covers(cp.ts):
        return (
            Problem.CHECKPOINT_KEY_NOT_VALID,
            f"signed at {canonical.format_ts(cp.ts)} by key {cp.key_id}, valid "
            f"{published.validity()}",
        )
    return None


def _checked_signatures(
    checkpoints: Sequence[Checkpoint], verifiers: Mapping[str, Verifier], findings: list[Finding]
) -> list[Checkpoint]:
    trusted: list[Checkpoint] = []
    for cp in checkpoints:
        problem = _key_problem(cp, verifiers)
        if problem is not None:
            findings.append(
                Finding(problem=problem[0], seq=None, checkpoint_size=cp.size, detail=problem[1])
            )
        else:
            trusted.append(cp)
    return trusted


def _check_external(
    external: Sequence[Checkpoint],
    verifiers: Mapping[str, Verifier],
    stored: Sequence[Checkpoint],
    trusted: Sequence[Checkpoint],
    tree: merkle.MerkleTree,
    signed: Mapping[int, bytes],
    rows_end: int,
    findings: list[Finding],
) -> list[Checkpoint]:
    """Hold each outside checkpoint against the rows: the rows must reach its size, the
    store must keep it, and the store's newest signed checkpoint must be consistent with
    it (an RFC 9162 consistency proof from the smaller tree to the larger). Returns the
    outside checkpoints whose signature is trusted."""
    by_size = {cp.size: cp for cp in stored}
    newest = max(trusted, key=lambda cp: cp.size, default=None)
    seen: set[tuple[int, str]] = set()
    good: list[Checkpoint] = []
    for cp in external:
        if (cp.size, cp.root) in seen:
            continue
        seen.add((cp.size, cp.root))
        problem = _key_problem(cp, verifiers)
        if problem is not None:
            findings.append(
                Finding(
                    problem=Problem.WITNESS_UNTRUSTED,
                    seq=None,
                    checkpoint_size=cp.size,
                    detail=f"the checkpoint held outside the store: {problem[1]}",
                )
            )
            continue
        good.append(cp)
        if cp.size > rows_end:  # (rows missing before the end are row_missing findings)
            missing = f"{rows_end}" if cp.size == rows_end + 1 else f"{rows_end}..{cp.size - 1}"
            findings.append(
                Finding(
                    problem=Problem.TAIL_MISSING,
                    seq=rows_end,
                    checkpoint_size=cp.size,
                    detail=f"the witnessed checkpoint {cp.size} covers row {missing}, "
                    "which is not there",
                )
            )
        own = by_size.get(cp.size)
        if own is None:
            findings.append(
                Finding(
                    problem=Problem.CHECKPOINT_MISSING,
                    seq=None,
                    checkpoint_size=cp.size,
                    detail=f"the witness holds checkpoint {cp.size}; the store does not",
                )
            )
        if cp.size > len(tree):
            continue
        if tree.root_with(signed, cp.size).hex() != cp.root or (
            own is not None and own.root != cp.root
        ):
            findings.append(
                Finding(
                    problem=Problem.WITNESS_INCONSISTENT,
                    seq=None,
                    checkpoint_size=cp.size,
                    detail=f"rows 0..{cp.size - 1} do not hash to the root witnessed for them",
                )
            )
        elif newest is not None and not _consistent(cp, newest, tree):
            findings.append(
                Finding(
                    problem=Problem.WITNESS_INCONSISTENT,
                    seq=None,
                    checkpoint_size=cp.size,
                    detail=f"no consistency proof joins it to the store's checkpoint {newest.size}",
                )
            )
    return good


def _consistent(a: Checkpoint, b: Checkpoint, tree: merkle.MerkleTree) -> bool:
    """RFC 9162 §2.1.4.2: the larger of two checkpoints extends the smaller, by a proof
    made from the stored rows."""
    old, new = (a, b) if a.size <= b.size else (b, a)
    if new.size > len(tree):
        return False
    proof = tree.consistency_proof(old.size, new.size)
    return merkle.verify_consistency(
        old.size, new.size, bytes.fromhex(old.root), bytes.fromhex(new.root), proof
    )


def _written_at(mismatch: _Mismatch, candidates: Sequence[int]) -> int | None:
    """The seq at which the row's content hashes to its own leaf hash, if another."""
    row = mismatch.row
    if mismatch.stored is None:
        return None
    for seq in candidates:
        if seq == row.seq or seq < 0:
            continue
        if merkle.leaf_hash(row.leaf_data(seq=seq)) == mismatch.stored:
            return seq
    return None


def _classify(
    mismatches: Sequence[_Mismatch],
    missing_seqs: Sequence[int],
    tree: merkle.MerkleTree,
    trusted: Sequence[Checkpoint],
    findings: list[Finding],
) -> dict[int, bytes]:
    """A finding per mismatching row; returns the signed leaf hashes where the stored
    column differs from them and they could be told ({seq: leaf hash})."""
    signed: dict[int, bytes] = {}
    elsewhere = [m.row.seq for m in mismatches[: 10 * _DETAILED]] + list(missing_seqs[:1000])
    unexplained: list[_Mismatch] = []
    for mismatch in mismatches[:_DETAILED]:
        seq = mismatch.row.seq
        nearby = [seq + d for d in range(1, _SEARCH + 1)] + [seq - d for d in range(1, _SEARCH + 1)]
        written_at = _written_at(mismatch, elsewhere + nearby)
        if written_at is None:
            unexplained.append(mismatch)
            continue
        findings.append(
            Finding(
                problem=Problem.REORDERED,
                seq=seq,
                detail=f"the row here was written as seq {written_at}",
            )
        )
        if written_at < len(tree) and mismatch.stored is not None:
            signed[written_at] = mismatch.stored  # where it belongs in the signed tree
    start = 0
    for cp in trusted:  # smallest first: each explains the rows it adds to the one before
        if cp.size > len(tree) or cp.size <= start:
            continue
        group = [m for m in unexplained if start <= m.row.seq < cp.size]
        start = cp.size
        if group:
            _explain(group, tree, cp, signed, findings)
    for mismatch in unexplained:
        if mismatch.row.seq >= start:
            findings.append(
                Finding(
                    problem=Problem.ROW_MISMATCH,
                    seq=mismatch.row.seq,
                    detail="its content does not hash to its leaf_hash "
                    "(no checkpoint covers it to tell which one changed)",
                )
            )
    if len(mismatches) > _DETAILED:
        rest = mismatches[_DETAILED:]
        findings.append(
            Finding(
                problem=Problem.ROW_MISMATCH,
                seq=rest[0].row.seq,
                detail=f"and {len(rest)} more rows whose content does not hash to their leaf_hash",
            )
        )
    return signed


def _explain(
    group: Sequence[_Mismatch],
    tree: merkle.MerkleTree,
    cp: Checkpoint,
    signed: dict[int, bytes],
    findings: list[Finding],
) -> None:
    """Tell, for rows whose content and leaf hash disagree, which of the two the
    checkpoint signed: the one combination of choices that gives its root."""
    combos = itertools.product((True, False), repeat=len(group)) if len(group) <= _COMBINE else ()
    for stored_kept in combos:
        picked = [
            m.stored if kept else m.recomputed for m, kept in zip(group, stored_kept, strict=True)
        ]
        leaves = [leaf for leaf in picked if leaf is not None]  # no hash stored: no choice
        if len(leaves) != len(group):
            continue
        trial = {**signed, **{m.row.seq: leaf for m, leaf in zip(group, leaves, strict=True)}}
        if tree.root_with(trial, cp.size).hex() != cp.root:
            continue
        signed.update(trial)
        for mismatch, kept in zip(group, stored_kept, strict=True):
            findings.append(
                Finding(
                    problem=Problem.ROW_CHANGED,
                    seq=mismatch.row.seq,
                    checkpoint_size=cp.size,
                    detail=f"its content was changed after checkpoint {cp.size} signed it",
                )
                if kept
                else Finding(
                    problem=Problem.LEAF_HASH_CHANGED,
                    seq=mismatch.row.seq,
                    checkpoint_size=cp.size,
                    detail=f"its leaf_hash column was changed; checkpoint {cp.size} signed "
                    "its content",
                )
            )
        return
    for mismatch in group:
        findings.append(
            Finding(
                problem=Problem.ROW_MISMATCH,
                seq=mismatch.row.seq,
                checkpoint_size=cp.size,
                detail="its content does not hash to its leaf_hash, and no way of undoing "
                f"the changes gives the root checkpoint {cp.size} signed",
            )
        )


def _check_roots(
    trusted: Sequence[Checkpoint],
    tree: merkle.MerkleTree,
    signed: Mapping[int, bytes],
    rows_end: int,
    findings: list[Finding],
) -> None:
    """Each checkpoint's root against the rows, with the changes found undone: what is
    left over are changes no row shows (rows rewritten together with their hashes)."""
    good = 0  # the size of the last checkpoint whose root matched
    for cp in trusted:
        if cp.size > len(tree):
            continue  # rows missing: reported as row_missing or tail_missing
        if tree.root_with(signed, cp.size).hex() != cp.root:
            findings.append(
                Finding(
                    problem=Problem.CHECKPOINT_ROOT,
                    seq=None,
                    checkpoint_size=cp.size,
                    detail=f"rows {good}..{cp.size - 1} no longer hash to the root it signed",
                )
            )
        else:
            good = cp.size
    largest = max((cp.size for cp in trusted), default=0)
    if largest > rows_end:
        missing = f"{rows_end}" if largest == rows_end + 1 else f"{rows_end}..{largest - 1}"
        findings.append(
            Finding(
                problem=Problem.TAIL_MISSING,
                seq=rows_end,
                checkpoint_size=largest,
                detail=f"checkpoint {largest} covers row {missing}, which is not there",
            )
        )
