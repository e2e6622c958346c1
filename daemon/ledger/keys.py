"""Trust anchors: the published set of signing keys, each with the time it was in use.

A certificate or checkpoint is only as good as the key that checks it, and that key
must come from outside the thing checked. The processor publishes its key set
(`pdsync ledger keys export`); customers keep it and verify against it. Keys are pinned
by the full public key: the 64-bit key id names a key, it does not authenticate one.
A retired key stays in the set, valid until it was retired, so what it signed before
still verifies while anything it signs afterwards does not.

Key set file (canonical JSON)::

    {"context": "pdsync-keyset-v1",
     "keys": [{"key_id": "…16 hex…", "public_key": "…64 hex…",
               "valid_from": "2025-01-01T00:00:00.000000Z" | null,
               "valid_until": "2026-12-01T00:00:00.000000Z" | null}]}

`valid_until` null: the key signs now.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from daemon.ledger import canonical
from daemon.ledger.signing import PUBLIC_KEY_BYTES, Verifier

KEYSET_CONTEXT = "pdsync-keyset-v1"
# DER SubjectPublicKeyInfo of an Ed25519 key: this 12-byte prefix, then the raw key.
_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")


def parse_public_key(text: str) -> Verifier:
    """An Ed25519 public key from hex (64 digits), base64 (raw or DER), PEM, or a file
    holding one of these. Raises ValueError saying which forms are accepted."""
    value = text.strip()
    if "BEGIN PUBLIC KEY" in value:
        try:
            return Verifier.from_pem(value.encode())
        except ValueError as exc:
            raise ValueError(f"not an Ed25519 PEM public key: {exc}") from None
    raw: bytes | None = None
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raw = None
    if raw is not None and len(raw) == len(_SPKI_PREFIX) + PUBLIC_KEY_BYTES:
        raw = raw.removeprefix(_SPKI_PREFIX)
    if raw is not None and len(raw) == PUBLIC_KEY_BYTES:
        return Verifier.from_hex(raw.hex())
    if value and len(value) < 4096 and Path(value).is_file():
        return parse_public_key(Path(value).read_text(encoding="utf-8"))
    raise ValueError(
        "not an Ed25519 public key: give 64 hex digits, base64, a PEM public key, or a file"
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class PublishedKey:
    """One key of the set and the time it signed in (None: open-ended)."""

    verifier: Verifier
    valid_from: datetime | None = None
    valid_until: datetime | None = None

    def __post_init__(self) -> None:
        if self.valid_from and self.valid_until and self.valid_until < self.valid_from:
            raise ValueError(f"key {self.key_id}: valid_until is before valid_from")

    @property
    def key_id(self) -> str:
        return self.verifier.key_id

    @property
    def public_key_hex(self) -> str:
        return self.verifier.public_key_hex

    @property
    def current(self) -> bool:
        return self.valid_until is None

    def covers(self, when: datetime) -> bool:
        """Whether the key was in use at `when`."""
        if self.valid_from is not None and when < self.valid_from:
            return False
        return self.valid_until is None or when <= self.valid_until

    def validity(self) -> str:
        """The validity in words, for messages."""
        since = canonical.format_ts(self.valid_from) if self.valid_from else "the start"
        until = canonical.format_ts(self.valid_until) if self.valid_until else "now"
        return f"from {since} until {until}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "public_key": self.public_key_hex,
            "valid_from": self.valid_from,
            "valid_until": self.valid_until,
        }


class KeySet(Mapping[str, Verifier]):
    """Trusted keys by key id (a Mapping, as verify_ledger takes), pinned by full key."""

    def __init__(self, keys: Iterable[PublishedKey]) -> None:
        self._keys: dict[str, PublishedKey] = {}
        for key in keys:
            known = self._keys.get(key.key_id)
            if known is not None and known.public_key_hex != key.public_key_hex:
                raise ValueError(f"two different keys share the key id {key.key_id}")
            self._keys[key.key_id] = key

    def __getitem__(self, key_id: str) -> Verifier:
        return self._keys[key_id].verifier

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def published(self, key_id: str) -> PublishedKey | None:
        """The key with this id, with its validity."""
        return self._keys.get(key_id)

    def all(self) -> list[PublishedKey]:
        """Every key, retired ones first (oldest first), the current one last."""
        return sorted(
            self._keys.values(),
            key=lambda k: (
                k.valid_until is None,
                canonical.format_ts(k.valid_until) if k.valid_until else "",
                k.key_id,
            ),
        )

    def to_json(self) -> bytes:
        """The key set file: canonical JSON (see the module docstring)."""
        keys = [k.to_dict() for k in self.all()]
        return canonical.encode({"context": KEYSET_CONTEXT, "keys": keys})

    @classmethod
    def from_json(cls, data: bytes) -> KeySet:
        """Read a key set file; raises ValueError naming what is wrong."""
        try:
            parsed = canonical.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"not a key set (JSON): {exc}") from None
        if not isinstance(parsed, dict) or parsed.get("context") != KEYSET_CONTEXT:
            raise ValueError(f'not a key set: expected "context": "{KEYSET_CONTEXT}"')
        entries = parsed.get("keys")
        if not isinstance(entries, list) or not entries:
            raise ValueError("the key set has no keys")
        keys: list[PublishedKey] = []
        for index, entry in enumerate(entries):
            where = f"keys[{index}]"
            if not isinstance(entry, dict):
                raise ValueError(f"{where} must be an object")
            try:
                verifier = Verifier.from_hex(str(entry.get("public_key", "")))
            except ValueError:
                raise ValueError(f"{where}.public_key is not an Ed25519 public key") from None
            if entry.get("key_id") != verifier.key_id:
                raise ValueError(f"{where}.key_id does not belong to its public key")
            keys.append(
                PublishedKey(
                    verifier=verifier,
                    valid_from=_ts_or_none(entry.get("valid_from"), f"{where}.valid_from"),
                    valid_until=_ts_or_none(entry.get("valid_until"), f"{where}.valid_until"),
                )
            )
        return cls(keys)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> KeySet:
        """A key set file from disk; raises ValueError (unreadable or malformed)."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ValueError(f"{os.fspath(path)}: {exc.strerror}") from None
        try:
            return cls.from_json(data)
        except ValueError as exc:
            raise ValueError(f"{os.fspath(path)}: {exc}") from None


def _ts_or_none(value: Any, where: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{where} must be a timestamp or null")
    try:
        return canonical.parse_ts(value)
    except ValueError:
        raise ValueError(f"{where} must be a UTC time like 2025-01-31T09:30:00.000000Z") from None
