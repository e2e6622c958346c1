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
    """The ledger, signing with the configured key; None when no key is configured."""
    signer = signer_from(settings)
    return None if signer is None else Ledger(store, signer)


def trusted_verifiers(settings: Settings) -> dict[str, Verifier]:
    signer = signer_from(settings)
    if signer is None:
        raise ConfigError("ledger.signing_key is not configured: nothing to verify against")
    verifier = Verifier.from_hex(signer.public_key_hex)
    return {signer.key_id: verifier}


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
