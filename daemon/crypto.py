"""Keyed fingerprints and encryption with per-customer keys.

A fingerprint is HMAC-SHA256 under the customer's key, so equal values can be compared
across runs without the store holding the value, and once the key is destroyed
(crypto-shredding) nothing stored can be linked back to a person.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from daemon import normalize
from daemon.domain import ContactRecord, Phone

KEY_BYTES = 32
ALL = "_all"  # the fingerprint of all of a system's fields together: the fast path
_NONCE = 12


class CryptoError(Exception):
    """A key is missing, destroyed, or does not open the data."""


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def canonical(field: str, value: Any) -> str:
    """The canonical text of a field's value: equal meaning, equal text.

    Phone numbers compare by E.164 (formatting is not a change) and type; e-mails
    case-insensitively; order within lists does not matter.
    """
    if field == "phones":
        phones: Iterable[Phone] = value
        return json.dumps(sorted([p.key, str(p.type)] for p in phones), ensure_ascii=False)
    if field == "emails":
        return json.dumps(sorted({normalize.email(e) for e in value if e}), ensure_ascii=False)
    if field == "kind":
        return str(value)
    return normalize.text(value)


def fingerprint(key: bytes, field: str, value: Any) -> str:
    message = f"{field}\x00{canonical(field, value)}".encode()
    return hmac.digest(key, message, "sha256").hex()[:32]


def fingerprints(key: bytes, record: ContactRecord, fields: Iterable[str]) -> dict[str, str]:
    """Per-field fingerprints of a record, plus ALL over the fields together."""
    names = sorted(fields)
    result = {name: fingerprint(key, name, getattr(record, name)) for name in names}
    result[ALL] = record_digest(key, record, names)
    return result


def identifier_fingerprint(key: bytes, kind: str, value: str) -> str:
    """Fingerprint of an identifier (an e-mail, a phone, a name) for matching tombstones."""
    if kind == "email":
        norm = normalize.email(value)
    elif kind == "phone":
        norm = normalize.e164(value) or normalize.text(value)
    else:
        norm = normalize.name_key(value)
    return hmac.new(key, f"id:{kind}\x00{norm}".encode(), hashlib.sha256).hexdigest()[:32]


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



def record_digest(key: bytes, record: ContactRecord, fields: Iterable[str]) -> str:
    """One fingerprint over all `fields` (sorted) of a record; equal digests, nothing changed."""
    message = "\x1e".join(f"{name}\x00{canonical(name, getattr(record, name))}" for name in fields)
    return hmac.digest(key, message.encode(), "sha256").hex()[:32]
