"""Keyed fingerprints and encryption with per-customer keys.

A fingerprint is HMAC-SHA256 under the customer's key, so equal values can be compared
across runs without the store holding the value, and once the key is destroyed
(crypto-shredding) nothing stored can be linked back to a person.
"""

from __future__ import annotations

import functools
import hmac
import operator
import os
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from daemon.domain import ContactRecord
from daemon.state import FP_WIDTH

KEY_BYTES = 32
_nfc = functools.partial(unicodedata.normalize, "NFC")
ALL = "_all"  # the fingerprint of all of a system's fields together: the fast path
_NONCE = 12


class CryptoError(Exception):
    """A key is missing, destroyed, or does not open the data."""


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def canonical(field: str, value: Any) -> str:
    """The canonical text of a field's value: equal meaning, equal text.

    Phone numbers compare by E.164 (formatting is not a change) and type; e-mails
    case-insensitively; order within lists does not matter. Hot: called for every field
    of every record on every run, so it avoids general-purpose serialisers.
    """
    if field == "phones":
        return "\x1f".join(
            sorted([f"{p.e164 or _nfc(p.number).strip()}\x1d{p.type}" for p in value])
        )
    if field == "emails":
        return "\x1f".join(sorted({_nfc(e).strip().casefold() for e in value if e}))
    if field == "kind":
        return str(value)
    return _nfc(value).strip() if value else ""


def fingerprint(key: bytes, field: str, value: Any) -> str:
    message = f"{field}\x00{canonical(field, value)}".encode()
    return hmac.digest(key, message, "sha256").hex()[:FP_WIDTH]


def fingerprints(key: bytes, record: ContactRecord, fields: Iterable[str]) -> dict[str, str]:
    """Per-field fingerprints of a record, plus ALL over the fields together."""
    names = tuple(sorted(fields))
    result = {name: fingerprint(key, name, getattr(record, name)) for name in names}
    result[ALL] = record_digest(key, record, names)
    return result


class Fingerprinter:
    """`fingerprint` and `fingerprints` under one key, remembering the fingerprint of
    each value it has seen: a plan meets the same title, department and kind thousands
    of times, and each contact's values once per system, so most HMACs are repeats.

    In memory for the length of one plan only; at most `limit` values are remembered.
    """

    def __init__(self, key: bytes, *, limit: int = 400_000) -> None:
        self.key = key
        self.limit = limit
        self._seen: dict[str, str] = {}  # canonical message -> fingerprint
        # Per field, value as held -> fingerprint: most values repeat exactly, and a
        # lookup by the value itself skips making its canonical text.
        self._held: dict[str, dict[Any, str]] = {}
        self._helds: dict[tuple[str, ...], list[dict[Any, str]]] = {}
        self._size = 0

    def field(self, field: str, value: Any) -> str:
        held = self._held.get(field)
        if held is None:
            held = self._held[field] = {}
        found = held.get(value)
        if found is not None:
            return found
        message = f"{field}\x00{canonical(field, value)}"
        found = self._seen.get(message)
        if found is None:
            found = self._seen[message] = hmac.digest(self.key, message.encode(), "sha256").hex()[
                :FP_WIDTH
            ]
        self._size += 1
        if self._size > self.limit:
            self._seen.clear()
            for values in self._held.values():
                values.clear()
            self._size = 0
        else:
            held[value] = found
        return found

    def record(self, record: ContactRecord, names: tuple[str, ...]) -> dict[str, str]:
        """As `fingerprints(key, record, names)`, `names` sorted."""
        helds = self._helds.get(names)
        if helds is None:
            helds = self._helds[names] = [self._held.setdefault(n, {}) for n in names]
        result = {}
        for name, held in zip(names, helds, strict=True):
            # `field`, inlined for the hits: this runs for every record.
            value = getattr(record, name)
            found = held.get(value)
            result[name] = found if found is not None else self.field(name, value)
        result[ALL] = record_digest(self.key, record, names)
        return result

    def record_like(
        self,
        record: ContactRecord,
        names: tuple[str, ...],
        other: ContactRecord,
        other_fps: Mapping[str, str],
    ) -> dict[str, str]:
        """As `record`, taking `other`'s fingerprint for every field whose value is held
        exactly as `other` holds it (the same contact in two systems, mostly)."""
        result = {}
        for name in names:
            value = getattr(record, name)
            if name in other_fps and value == getattr(other, name):
                result[name] = other_fps[name]
            else:
                result[name] = self.field(name, value)
        result[ALL] = record_digest(self.key, record, names)
        return result


def encrypt(key: bytes, plaintext: str | bytes, *, context: str) -> bytes:
    """AES-256-GCM; `context` is bound as associated data (what the blob is for)."""
    data = plaintext.encode() if isinstance(plaintext, str) else plaintext
    nonce = os.urandom(_NONCE)
    return nonce + AESGCM(key).encrypt(nonce, data, context.encode())


def decrypt(key: bytes, blob: bytes, *, context: str) -> bytes:
    try:
        return AESGCM(key).decrypt(blob[:_NONCE], blob[_NONCE:], context.encode())
    except (InvalidTag, ValueError) as exc:
        raise CryptoError(f"cannot decrypt {context}: wrong key or damaged data") from exc


@functools.lru_cache(maxsize=64)
def _encoder(fields: tuple[str, ...]) -> Callable[[ContactRecord], str]:
    """The raw-text encoder of a record for `fields`, built once per field set."""
    getter = operator.attrgetter(*fields) if fields else (lambda record: ())
    emails = fields.index("emails") if "emails" in fields else -1
    phones = fields.index("phones") if "phones" in fields else -1

    def encode(record: ContactRecord) -> str:
        values = getter(record)
        parts: list[Any] = [values] if len(fields) == 1 else list(values)
        if emails >= 0:
            parts[emails] = "\x1f".join(parts[emails])
        if phones >= 0:
            parts[phones] = "\x1f".join(
                [f"{p.number}\x1d{p.type}\x1d{p.e164}" for p in parts[phones]]
            )
        return "\x1e".join(parts)

    return encode


def record_digest(key: bytes, record: ContactRecord, fields: tuple[str, ...]) -> str:
    """One fingerprint over the raw values of all `fields` (sorted) of a record.

    Exact, not canonical: any change, even of formatting, gives a new digest, and the
    reconciler then compares field by field (canonically). This runs for every record of
    every system on every sync, so it does as little as possible.
    """
    text = _encoder(fields)(record)
    return hmac.digest(key, text.encode(), "sha256").hex()[:FP_WIDTH]
