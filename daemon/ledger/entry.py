"""What the ledger stores: entries (the leaves) and signed checkpoints (the tree heads).

An entry's leaf data is the canonical JSON of {seq, ts, kind, customer_id, payload},
so an entry's position is part of what is hashed: moving a row to another seq breaks
its hash. A checkpoint signs the canonical statement
{context: "pdsync-ledger-v1", key_id, root, size, ts}.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from daemon.ledger import canonical
from daemon.ledger.merkle import leaf_hash

LEDGER_CONTEXT = "pdsync-ledger-v1"


def leaf_data(
    *, seq: int, ts: datetime, kind: str, customer_id: str | None, payload_json: str
) -> bytes:
    """The bytes whose RFC 9162 leaf hash goes into the tree.

    `payload_json` is spliced in as stored, so that for canonical payload text this is
    exactly the canonical JSON of the whole entry, and any other text, even an
    equivalent one, hashes differently. Keys in sorted order: customer_id, kind,
    payload, seq, ts.
    """
    return (
        f'{{"customer_id":{_text(customer_id)},"kind":{_text(kind)},'
        f'"payload":{payload_json},"seq":{int(seq)},"ts":{_text(canonical.format_ts(ts))}}}'
    ).encode()


def entries_from(
    first: int, ts: datetime, rows: Iterable[tuple[str, str | None, str]]
) -> list[LedgerEntry]:
    """Entries at consecutive seqs from `first`, all at `ts`, of `rows` (kind, customer
    id, payload JSON as stored), each with its leaf hash: what an append stores."""
    return [
        LedgerEntry(
            seq=seq,
            ts=ts,
            kind=kind,
            customer_id=customer_id,
            payload_json=payload_json,
            leaf_hash=leaf_hash(
                leaf_data(
                    seq=seq, ts=ts, kind=kind, customer_id=customer_id, payload_json=payload_json
                )
            ).hex(),
        )
        for seq, (kind, customer_id, payload_json) in enumerate(rows, start=first)
    ]


def _text(value: str | None) -> str:
    return json.dumps(value, ensure_ascii=False)


@dataclass(frozen=True, kw_only=True, slots=True)
class LedgerEntry:
    """One ledger row: no personal data, only ids, counts, field names, fingerprints."""

    seq: int
    ts: datetime
    kind: str
    customer_id: str | None
    payload_json: str  # canonical JSON text, as stored
    leaf_hash: str  # hex SHA-256(0x00 || leaf_data), as stored

    @property
    def payload(self) -> dict[str, Any]:
        """The payload as plain JSON values."""
        value = canonical.loads(self.payload_json)
        if not isinstance(value, dict):
            raise ValueError(f"ledger entry {self.seq}: the payload is not a JSON object")
        return value

    def leaf_data(self, *, seq: int | None = None) -> bytes:
        """This entry's leaf data; `seq` asks what it would be at another position."""
        return leaf_data(
            seq=self.seq if seq is None else seq,
            ts=self.ts,
            kind=self.kind,
            customer_id=self.customer_id,
            payload_json=self.payload_json,
        )


def checkpoint_statement(*, size: int, root: str, ts: datetime, key_id: str) -> bytes:
    """The bytes a checkpoint's signature is over."""
    return canonical.encode(
        {"context": LEDGER_CONTEXT, "key_id": key_id, "root": root, "size": size, "ts": ts}
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class Checkpoint:
    """A signed tree head: the ledger's first `size` entries have Merkle root `root`."""

    size: int
    root: str  # hex
    ts: datetime
    key_id: str
    signature: str  # hex Ed25519 signature over statement()

    def statement(self) -> bytes:
        return checkpoint_statement(size=self.size, root=self.root, ts=self.ts, key_id=self.key_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "root": self.root,
            "ts": canonical.format_ts(self.ts),
            "key_id": self.key_id,
            "signature": self.signature,
        }

    def to_json(self) -> bytes:
        """Canonical JSON of the checkpoint: one line of a witness file."""
        return canonical.encode(self.to_dict())

    @classmethod
    def from_dict(cls, data: Any) -> Checkpoint:
        """Parse a checkpoint object strictly; raises ValueError naming the field."""
        if not isinstance(data, dict):
            raise ValueError("a checkpoint is a JSON object")
        if set(data) != _CHECKPOINT_FIELDS:
            raise ValueError(
                "a checkpoint has exactly the fields " + ", ".join(sorted(_CHECKPOINT_FIELDS))
            )
        size, root, ts = data["size"], data["root"], data["ts"]
        key_id, signature = data["key_id"], data["signature"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError("checkpoint.size must be a whole number >= 0")
        for name, value, digits in (
            ("root", root, 64),
            ("key_id", key_id, 16),
            ("signature", signature, 128),
        ):
            if not isinstance(value, str) or not _hex(value, digits):
                raise ValueError(f"checkpoint.{name} must be {digits} lowercase hex digits")
        if not isinstance(ts, str):
            raise ValueError("checkpoint.ts must be a timestamp")
        try:
            when = canonical.parse_ts(ts)
        except ValueError:
            raise ValueError("checkpoint.ts must be a UTC timestamp") from None
        return cls(size=size, root=root, ts=when, key_id=key_id, signature=signature)


_CHECKPOINT_FIELDS = frozenset({"size", "root", "ts", "key_id", "signature"})


def _hex(value: str, digits: int) -> bool:
    return len(value) == digits and all(c in "0123456789abcdef" for c in value)
