"""The deletion certificate (O6): what was erased where, verified when, proven how.

A certificate is the facts of one erasure (CertificateFacts), the proof that their
digest is in the ledger (LedgerProof: the entry, its inclusion proof and a signed
checkpoint), the issuer's public key, and an Ed25519 signature over the canonical JSON
of all of that. Its JSON is canonical (daemon.ledger.canonical), so a certificate file
has exactly one valid byte form. Identifiers appear masked only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from daemon.certificate import masking
from daemon.certificate._reader import Reader
from daemon.certificate.evidence import LeftAlone
from daemon.domain import Residual, Subject
from daemon.ledger import canonical
from daemon.ledger.entry import Checkpoint

# v2 adds what a subject erasure left alone (`shared`, `left_alone`, `included`); v3 names
# the processor that erased and the customer it erased for (`processor`,
# `customer_name`). Older certificates read and verify as they were issued.
CERTIFICATE_VERSION_1 = "pdsync-certificate-v1"
CERTIFICATE_VERSION_2 = "pdsync-certificate-v2"
CERTIFICATE_VERSION_3 = "pdsync-certificate-v3"
CERTIFICATE_VERSION = CERTIFICATE_VERSION_3
CERTIFICATE_VERSIONS = (CERTIFICATE_VERSION_1, CERTIFICATE_VERSION_2, CERTIFICATE_VERSION_3)
# Versions that carry the evidence fields (v2 on), and the names (v3 on).
_WITH_EVIDENCE = frozenset({CERTIFICATE_VERSION_2, CERTIFICATE_VERSION_3})
_WITH_NAMES = frozenset({CERTIFICATE_VERSION_3})
# The kind of the ledger entry that records a certificate's digest.
CERTIFICATE_KIND = "certificate.issued"


class Scope(StrEnum):
    SUBJECT = "subject"  # one data subject within a customer
    CUSTOMER = "customer"  # everything of a customer


class Outcome(StrEnum):
    EXECUTED = "executed"
    NO_MATCH = "no_match"
    MANUAL_PENDING = "manual_pending"
    FAILED = "failed"


def _ts(value: datetime | None) -> str | None:
    return None if value is None else canonical.format_ts(value)


@dataclass(frozen=True, kw_only=True, slots=True)
class MaskedIdentifiers:
    """The erased subject's identifiers, masked (see masking); raises ValueError when a
    value is not in masked form, so a raw identifier cannot slip onto a certificate."""

    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for values, pattern, what in (
            (self.emails, masking.MASKED_EMAIL, "e-mail"),
            (self.phones, masking.MASKED_PHONE, "phone"),
            (self.names, masking.MASKED_NAME, "name"),
        ):
            for index, value in enumerate(values):
                if not pattern.fullmatch(value):
                    raise ValueError(f"{what} {index} is not masked")

    @classmethod
    def of(cls, subject: Subject) -> MaskedIdentifiers:
        return cls(
            emails=tuple(masking.mask_email(v) for v in subject.emails),
            phones=tuple(masking.mask_phone(v) for v in subject.phones),
            names=tuple(masking.mask_name(v) for v in subject.names),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"emails": list(self.emails), "phones": list(self.phones), "names": list(self.names)}

    @classmethod
    def read(cls, r: Reader) -> MaskedIdentifiers:
        identifiers = cls(
            emails=r.texts("emails"), phones=r.texts("phones"), names=r.texts("names")
        )
        r.done()
        return identifiers


@dataclass(frozen=True, kw_only=True, slots=True)
class SystemResult:
    """What one system did: outcome, items deleted by kind, and the read-back check."""

    system: str
    outcome: Outcome
    counts: Mapping[str, int] = field(default_factory=dict)
    verified_absent: bool = False
    verified_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.verified_absent and self.verified_at is None:
            raise ValueError(f"{self.system}: verified_absent needs verified_at")
        if any(n < 0 for n in self.counts.values()):
            raise ValueError(f"{self.system}: counts cannot be negative")

    def to_dict(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "outcome": self.outcome.value,
            "counts": dict(self.counts),
            "verified_absent": self.verified_absent,
            "verified_at": _ts(self.verified_at),
        }

    @classmethod
    def read(cls, r: Reader) -> SystemResult:
        result = cls(
            system=r.text("system"),
            outcome=Outcome(r.text("outcome")),
            counts=r.counts("counts"),
            verified_absent=r.flag("verified_absent"),
            verified_at=r.ts_or_none("verified_at"),
        )
        r.done()
        return result


@dataclass(frozen=True, kw_only=True, slots=True)
class ResidualWindow:
    """What a system still keeps after the delete, and for how long (honest, not hidden)."""

    system: str
    what: str
    retention: str
    note: str = ""

    @classmethod
    def of(cls, residual: Residual) -> ResidualWindow:
        return cls(
            system=residual.system,
            what=residual.what,
            retention=residual.retention,
            note=residual.note,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "what": self.what,
            "retention": self.retention,
            "note": self.note,
        }

    @classmethod
    def read(cls, r: Reader) -> ResidualWindow:
        window = cls(
            system=r.text("system"),
            what=r.text("what"),
            retention=r.text("retention"),
            note=r.text("note"),
        )
        r.done()
        return window


@dataclass(frozen=True, kw_only=True, slots=True)
class CertificateFacts:
    """The erasure as it happened: the part of the certificate whose digest is ledgered."""

    request_id: str
    customer_id: str
    scope: Scope
    identifiers: MaskedIdentifiers
    systems: tuple[SystemResult, ...]
    residuals: tuple[ResidualWindow, ...]
    requested_by: str
    reason: str
    requested_at: datetime
    completed_at: datetime
    issued_at: datetime
    # The subject's identifiers the customer's directory shares (a switchboard number, a
    # role address): evidence of nobody alone, so nothing was erased on their word.
    shared: MaskedIdentifiers = MaskedIdentifiers()
    # What was found only by shared identifiers or a name, and left alone; in a
    # whole-customer erasure, what another customer holds too (mail between the two in a
    # shared mailbox, or in the other's folders), with no identifiers.
    left_alone: tuple[LeftAlone, ...] = ()
    # Per system: ambiguous items an admin included, and so were erased.
    included: Mapping[str, int] = field(default_factory=dict)
    # The data processor that erased (config `processor.name`), and the customer (the
    # controller) by name, as configured when the certificate was issued; "" when the
    # customer was no longer configured. Both from v3 on.
    processor: str = ""
    customer_name: str = ""
    version: str = CERTIFICATE_VERSION

    def __post_init__(self) -> None:
        if self.version not in CERTIFICATE_VERSIONS:
            raise ValueError(f"unknown certificate version {self.version!r}")
        if self.version not in _WITH_EVIDENCE and (
            self.shared != MaskedIdentifiers() or self.left_alone or self.included
        ):
            raise ValueError(f"{self.version} has no evidence fields")
        if self.version in _WITH_NAMES:
            if not self.processor.strip():
                raise ValueError(f"{self.version} names the processor: processor is empty")
        elif self.processor or self.customer_name:
            raise ValueError(f"{self.version} has no processor or customer name")
        if any(n < 0 for n in self.included.values()):
            raise ValueError("included counts cannot be negative")
        if self.scope is Scope.CUSTOMER and any(group.matched for group in self.left_alone):
            # What a whole-customer erasure leaves alone is another customer's too: it
            # was found as the customer's, by no identifier.
            raise ValueError("a whole-customer erasure's left-alone items match no identifier")

    @property
    def has_evidence(self) -> bool:
        """Whether this version lists what was left alone (v2 on)."""
        return self.version in _WITH_EVIDENCE

    @property
    def has_names(self) -> bool:
        """Whether this version names the processor and the customer (v3 on)."""
        return self.version in _WITH_NAMES

    def to_dict(self) -> dict[str, Any]:
        evidence: dict[str, Any] = {}
        if self.has_evidence:
            evidence = {
                "shared": self.shared.to_dict(),
                "left_alone": [group.to_dict() for group in self.left_alone],
                "included": dict(self.included),
            }
        if self.has_names:
            evidence |= {"processor": self.processor, "customer_name": self.customer_name}
        return {
            **evidence,
            "version": self.version,
            "request_id": self.request_id,
            "customer_id": self.customer_id,
            "scope": self.scope.value,
            "identifiers": self.identifiers.to_dict(),
            "systems": [s.to_dict() for s in self.systems],
            "residuals": [r.to_dict() for r in self.residuals],
            "requested_by": self.requested_by,
            "reason": self.reason,
            "requested_at": _ts(self.requested_at),
            "completed_at": _ts(self.completed_at),
            "issued_at": _ts(self.issued_at),
        }

    def digest(self) -> str:
        """SHA-256 (hex) of the facts' canonical JSON: what the ledger entry records."""
        return hashlib.sha256(canonical.encode(self.to_dict())).hexdigest()

    @classmethod
    def read(cls, r: Reader) -> CertificateFacts:
        version = r.text("version")
        if version not in CERTIFICATE_VERSIONS:
            raise ValueError(f"unknown certificate version {version!r}")
        evidence: dict[str, Any] = {}
        if version in _WITH_EVIDENCE:
            evidence = {
                "shared": MaskedIdentifiers.read(r.obj("shared")),
                "left_alone": tuple(LeftAlone.read(x) for x in r.objs("left_alone")),
                "included": r.counts("included"),
            }
        if version in _WITH_NAMES:
            evidence |= {"processor": r.text("processor"), "customer_name": r.text("customer_name")}
        return cls(
            **evidence,
            version=version,
            request_id=r.text("request_id"),
            customer_id=r.text("customer_id"),
            scope=Scope(r.text("scope")),
            identifiers=MaskedIdentifiers.read(r.obj("identifiers")),
            systems=tuple(SystemResult.read(x) for x in r.objs("systems")),
            residuals=tuple(ResidualWindow.read(x) for x in r.objs("residuals")),
            requested_by=r.text("requested_by"),
            reason=r.text("reason"),
            requested_at=r.ts("requested_at"),
            completed_at=r.ts("completed_at"),
            issued_at=r.ts("issued_at"),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class LedgerProof:
    """The certificate's ledger entry (`leaf`: its canonical JSON, as hashed), the
    inclusion proof of entry `seq` in the checkpoint's tree, and that checkpoint."""

    seq: int
    leaf: str
    inclusion_proof: tuple[str, ...]
    checkpoint: Checkpoint

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "leaf": self.leaf,
            "inclusion_proof": list(self.inclusion_proof),
            "checkpoint": self.checkpoint.to_dict(),
        }

    @classmethod
    def read(cls, r: Reader) -> LedgerProof:
        cp = r.obj("checkpoint")
        checkpoint = Checkpoint(
            size=cp.number("size"),
            root=cp.hexstr("root", 32),
            ts=cp.ts("ts"),
            key_id=cp.hexstr("key_id", 8),
            signature=cp.hexstr("signature", 64),
        )
        cp.done()
        proof = cls(
            seq=r.number("seq"),
            leaf=r.text("leaf"),
            inclusion_proof=tuple(r.hexstrs("inclusion_proof", 32)),
            checkpoint=checkpoint,
        )
        r.done()
        return proof


@dataclass(frozen=True, kw_only=True, slots=True)
class Issuer:
    key_id: str
    public_key: str  # hex of the raw Ed25519 public key

    def to_dict(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "public_key": self.public_key}


@dataclass(frozen=True, kw_only=True, slots=True)
class Certificate:
    """A signed deletion certificate. `to_json()` is the file; verify with
    daemon.certificate.verify_certificate (offline)."""

    facts: CertificateFacts
    ledger: LedgerProof
    issuer: Issuer
    signature: str  # hex Ed25519 over signed_bytes()

    def unsigned_dict(self) -> dict[str, Any]:
        return {
            **self.facts.to_dict(),
            "ledger": self.ledger.to_dict(),
            "issuer": self.issuer.to_dict(),
        }

    def signed_bytes(self) -> bytes:
        """The canonical JSON of everything but the signature: what is signed."""
        return canonical.encode(self.unsigned_dict())

    def to_dict(self) -> dict[str, Any]:
        return {**self.unsigned_dict(), "signature": self.signature}

    def to_json(self) -> bytes:
        """The certificate file: canonical JSON, UTF-8."""
        return canonical.encode(self.to_dict())

    def sha256(self) -> str:
        """SHA-256 (hex) of the certificate file, printed on the PDF."""
        return hashlib.sha256(self.to_json()).hexdigest()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Certificate:
        """Parse strictly: a missing, extra or mistyped field raises ValueError."""
        r = Reader(data, "certificate")
        facts = CertificateFacts.read(r)
        ledger = LedgerProof.read(r.obj("ledger"))
        issuer_r = r.obj("issuer")
        issuer = Issuer(
            key_id=issuer_r.hexstr("key_id", 8), public_key=issuer_r.hexstr("public_key", 32)
        )
        issuer_r.done()
        signature = r.hexstr("signature", 64)
        r.done()
        return cls(facts=facts, ledger=ledger, issuer=issuer, signature=signature)

    @classmethod
    def from_json(cls, data: bytes) -> Certificate:
        return cls.from_dict(_object(canonical.loads(data)))


def _object(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("a certificate is a JSON object")
    return value
