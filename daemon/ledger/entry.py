"""What the ledger stores: entries (the leaves) and signed checkpoints (the tree heads).

An entry's leaf data is the canonical JSON of {seq, ts, kind, customer_id, payload},
so an entry's position is part of what is hashed: moving a row to another seq breaks
its hash. A checkpoint signs the canonical statement
{context: "pdsync-ledger-v1", key_id, root, size, ts}.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from daemon.ledger import canonical

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
