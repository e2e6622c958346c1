"""Keyed fingerprints and encryption with per-customer keys.

A fingerprint is HMAC-SHA256 under the customer's key, so equal values can be compared
across runs without the store holding the value, and once the key is destroyed
(crypto-shredding) nothing stored can be linked back to a person.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import operator
import os
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
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


_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))
_SHA256_BLOCK = 64


class _Hmac:
    """HMAC-SHA256 under one key, its padded keys hashed once (RFC 2104 §2): the same
    digests as `hmac.digest`, which sets the key up again on every call and so costs
    more than twice as much for a field's few bytes. A first sync makes a million."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > _SHA256_BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_SHA256_BLOCK, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def fingerprint(self, message: bytes) -> str:
        return self.digest(message).hex()[:FP_WIDTH]

    def fingerprints(self, messages: Iterable[bytes]) -> list[str]:
        """`fingerprint` of each message, in one loop (the bulk of a first sync)."""
        found = []
        inner_pad, outer_pad = self._inner, self._outer
        for message in messages:
            inner = inner_pad.copy()
            inner.update(message)
            outer = outer_pad.copy()
            outer.update(inner.digest())
            found.append(outer.hexdigest()[:FP_WIDTH])
        return found


def _messages(field: str, texts: Iterable[str]) -> list[bytes]:
    """What `fingerprint` MACs for each canonical text of `field`."""
    prefix = f"{field}\x00"
    return [(prefix + text).encode() for text in texts]


class _Remembered:
    """One field's remembered fingerprints: by the value as held, and by its canonical
    text (another spelling of the same number). A field whose values hardly repeat
    (names, addresses: one per contact) stops being remembered after a while, so a large
    first sync does not fill memory with values seen once."""

    __slots__ = ("by_canonical", "by_value", "hits", "misses", "on")

    def __init__(self) -> None:
        self.by_value: dict[Any, str] = {}
        self.by_canonical: dict[str, str] = {}
        self.hits = self.misses = 0
        self.on = True

    def missed(self) -> None:
        self.misses += 1
        if self.misses == _TRIAL and self.hits * 20 < self.misses:
            self.on = False
            self.by_value.clear()
            self.by_canonical.clear()


_TRIAL = 4096  # misses after which a field that repeats in under 5 % of lookups stops


_LIST_OR_KIND = frozenset({"emails", "phones", "kind"})  # the fields `canonical` treats apart


class Fingerprinter:
    """`fingerprint` and `fingerprints` under one key, remembering the fingerprints of
    values that repeat: a plan meets the same title, department and kind thousands of
    times. In memory for the length of one plan only.
    """

    def __init__(self, key: bytes) -> None:
        self.key = key
        self._mac = _Hmac(key)
        self._fields: dict[str, _Remembered] = {}
        self._by_names: dict[tuple[str, ...], list[_Remembered]] = {}
        self._columns: dict[str, dict[Any, str]] = {}  # by `many`, across systems

    def _remembered(self, field: str) -> _Remembered:
        found = self._fields.get(field)
        if found is None:
            found = self._fields[field] = _Remembered()
        return found

    def field(self, field: str, value: Any) -> str:
        memory = self._remembered(field)
        if memory.on:
            found = memory.by_value.get(value)
            if found is not None:
                memory.hits += 1
                return found
        message = f"{field}\x00{canonical(field, value)}"
        if not memory.on:
            return self._mac.fingerprint(message.encode())
        found = memory.by_canonical.get(message)
        if found is None:
            found = self._mac.fingerprint(message.encode())
            memory.by_canonical[message] = found
            memory.missed()
        else:
            memory.hits += 1
        if memory.on:
            memory.by_value[value] = found
        return found

    def record(self, record: ContactRecord, names: tuple[str, ...]) -> dict[str, str]:
        """As `fingerprints(key, record, names)`, `names` sorted."""
        memories = self._by_names.get(names)
        if memories is None:
            memories = self._by_names[names] = [self._remembered(n) for n in names]
        result = {}
        for name, memory in zip(names, memories, strict=True):
            # `field`, inlined for the hits: this runs for every record.
            value = getattr(record, name)
            found = memory.by_value.get(value) if memory.on else None
            if found is None:
                found = self.field(name, value)
            else:
                memory.hits += 1
            result[name] = found
        result[ALL] = self.digest(record, names)
        return result

    def many(
        self,
        records: Sequence[ContactRecord],
        names: tuple[str, ...],
        digests: Sequence[str | None] | None = None,
    ) -> list[dict[str, str]]:
        """As `record` for each of `records` (with their `digests`, where known), a field
        at a time: each distinct value of a field is fingerprinted once however many
        records hold it (a title thousands do, a name both systems hold), in tight loops.
        A first sync of a large customer spends most of its plan here."""
        # The values are read in the order the records lie in memory (a large customer's
        # fill more than the CPU caches: in another order every value is a cache miss,
        # and that costs more than the hashing), and the rows are made in the caller's
        # order, the order it reads them in.
        order = sorted(range(len(records)), key=list(map(id, records)).__getitem__)
        in_memory = [records[i] for i in order]
        columns = [self._column(name, [getattr(r, name) for r in in_memory]) for name in names]
        given: Sequence[str | None] = [None] * len(records) if digests is None else digests
        missing = [r for i, r in zip(order, in_memory, strict=True) if given[i] is None]
        computed = iter(self.digests(missing, names))
        columns.append([d if (d := given[i]) is not None else next(computed) for i in order])
        at = [0] * len(order)
        for j, i in enumerate(order):
            at[i] = j
        found = list(zip(*columns, strict=True))
        keys = (*names, ALL)
        return [dict(zip(keys, found[j], strict=True)) for j in at]

    def _column(self, name: str, values: list[Any]) -> list[str]:
        """The fingerprints of one field's values, each distinct value once."""
        memory = self._remembered(name)
        known = self._columns.setdefault(name, {})
        if name == "phones":
            # Phones hash slowly (dataclasses) and are spelt many ways: by canonical text.
            texts = [canonical(name, value) for value in values]
            by_text = dict.fromkeys(texts, "")
            new = [text for text in by_text if text not in known]
            known.update(zip(new, self._mac.fingerprints(_messages(name, new)), strict=True))
            return [known[text] for text in texts]
        unique = dict.fromkeys(values, "")
        if memory.on and memory.by_value:  # what single lookups met before
            met = memory.by_value
            known.update((v, met[v]) for v in met.keys() & unique.keys())
        new = [value for value in unique if value not in known]
        if name in _LIST_OR_KIND:
            messages = _messages(name, [canonical(name, value) for value in new])
        else:  # text: `canonical` inlined, as it runs for every new value
            prefix = f"{name}\x00"
            messages = [(prefix + (_nfc(v).strip() if v else "")).encode() for v in new]
        known.update(zip(new, self._mac.fingerprints(messages), strict=True))
        return [known[value] for value in values]

    def digests(self, records: Sequence[ContactRecord], names: tuple[str, ...]) -> list[str]:
        """`record_digest` of each of `records`."""
        encode = _encoder(names)
        return self._mac.fingerprints([encode(r).encode() for r in records])

    def digest(self, record: ContactRecord, names: tuple[str, ...]) -> str:
        """`record_digest` of `record`."""
        return self._mac.fingerprint(_encoder(names)(record).encode())

    def forget_columns(self) -> None:
        """Drop what `many` remembered (values met once, mostly)."""
        self._columns.clear()

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
        result[ALL] = self.digest(record, names)
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
