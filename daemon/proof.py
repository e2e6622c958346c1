"""The ledger and deletion certificates, wired to the configuration."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from daemon.certificate import (
    CertificateFacts,
    MaskedIdentifiers,
    Outcome,
    ResidualWindow,
    Scope,
    SystemResult,
    issue_certificate,
)
from daemon.certificate import evidence as erasure_evidence
from daemon.config import DEFAULT_PROCESSOR_NAME, ConfigError, Settings
from daemon.domain import Residual
from daemon.ledger import Ledger, Signer, Verifier
from daemon.ledger.keys import KeySet, PublishedKey, parse_public_key
from daemon.ledger.witness import Witness, witness_for
from daemon.store import ErasureRow, Store


def signer_from(settings: Settings) -> Signer | None:
    ref = settings.ledger.signing_key
    if ref is None:
        return None
    try:
        return Signer.from_pem(ref.reveal().encode())
    except (LookupError, ValueError) as exc:
        raise ConfigError(f"ledger.signing_key ({ref.describe()}): {exc}") from None


def open_ledger(settings: Settings, store: Store) -> Ledger | None:
    """The ledger, signing with the configured key (earlier keys trusted, a checkpoint
    every `ledger.checkpoint_every` entries, each handed to `ledger.witness`); None
    when no key is configured."""
    signer = signer_from(settings)
    if signer is None:
        return None
    return Ledger(
        store,
        signer,
        trusted=[key.verifier for key in retired_keys(settings)],
        checkpoint_every=settings.ledger.checkpoint_every,
        witness=witness_from(settings),
    )


def witness_from(settings: Settings) -> Witness | None:
    """The configured witness, or None."""
    spec = settings.ledger.witness
    if spec is None:
        return None
    try:
        return witness_for(spec)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def retired_keys(settings: Settings) -> list[PublishedKey]:
    """The retired signing keys, each trusted for what it signed before it was retired."""
    keys = []
    for index, retired in enumerate(settings.ledger.retired_keys):
        try:
            keys.append(
                PublishedKey(
                    verifier=parse_public_key(retired.public_key),
                    valid_from=retired.valid_from,
                    valid_until=retired.valid_until,
                )
            )
        except ValueError as exc:
            raise ConfigError(f"ledger.retired_keys[{index}]: {exc}") from None
    return keys


def trusted_verifiers(settings: Settings) -> KeySet:
    """The configured key set: the signing key (current) and the retired keys, each with
    its validity; what `ledger verify`, `certificate verify --config` and `ledger keys
    export` use. Raises ConfigError when no signing key is configured."""
    signer = signer_from(settings)
    if signer is None:
        raise ConfigError("ledger.signing_key is not configured: nothing to verify against")
    current = PublishedKey(
        verifier=Verifier.from_hex(signer.public_key_hex),
        valid_from=settings.ledger.signing_key_since,
    )
    try:
        return KeySet([*retired_keys(settings), current])
    except ValueError as exc:
        raise ConfigError(f"ledger.retired_keys: {exc}") from None


class Certifier:
    """Issues the signed deletion certificate of a completed erasure, naming the
    processor and the customer (by the names configured; a customer no longer configured
    is named by its id only)."""

    def __init__(
        self,
        ledger: Ledger,
        signer: Signer,
        *,
        processor: str = DEFAULT_PROCESSOR_NAME,
        customer_names: Mapping[str, str] | None = None,
    ) -> None:
        self.ledger = ledger
        self.signer = signer
        self.processor = processor
        self.customer_names = dict(customer_names or {})

    def __call__(self, row: ErasureRow, residuals: Sequence[Residual]) -> str:
        masked = row.masked or {}
        facts = CertificateFacts(
            request_id=row.id,
            customer_id=row.customer_id,
            scope=Scope(row.scope),
            identifiers=MaskedIdentifiers(
                emails=tuple(masked.get("emails", ())),
                phones=tuple(masked.get("phones", ())),
                names=tuple(masked.get("names", ())),
            ),
            systems=tuple(
                SystemResult(
                    system=system,
                    outcome=Outcome(result["outcome"]),
                    counts=dict(result["counts"]),
                    verified_absent=bool(result["verified_absent"]),
                    verified_at=datetime.fromisoformat(result["verified_at"]),
                )
                for system, result in sorted(row.outcome.items())
            ),
            residuals=tuple(ResidualWindow.of(r) for r in residuals),
            shared=MaskedIdentifiers(**erasure_evidence.shared_identifiers(row.strengths, masked)),
            left_alone=erasure_evidence.left_alone(row.outcome, masked),
            included=erasure_evidence.included_counts(row.outcome),
            processor=self.processor,
            customer_name=self.customer_names.get(row.customer_id, ""),
            requested_by=row.requested_by,
            reason=row.reason,
            requested_at=row.requested_at,
            completed_at=row.completed_at or datetime.now(UTC),
            issued_at=datetime.now(UTC),
        )
        certificate = issue_certificate(facts, ledger=self.ledger, signer=self.signer)
        return certificate.to_json().decode("utf-8")


def certifier_for(settings: Settings, ledger: Ledger | None) -> Certifier | None:
    signer = signer_from(settings)
    if signer is None or ledger is None:
        return None
    return Certifier(
        ledger,
        signer,
        processor=settings.processor.name,
        customer_names={c.id: c.name for c in settings.customers},
    )
