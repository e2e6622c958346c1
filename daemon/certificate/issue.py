"""Issuing a certificate: ledger the facts' digest, checkpoint, prove, sign."""

from __future__ import annotations

import dataclasses

from daemon.certificate.model import (
    CERTIFICATE_KIND,
    Certificate,
    CertificateFacts,
    Issuer,
    LedgerProof,
)
from daemon.ledger import Ledger, LedgerError, Signer


def issue_certificate(facts: CertificateFacts, *, ledger: Ledger, signer: Signer) -> Certificate:
    """The signed certificate for `facts`, its digest recorded in the ledger.

    Appends a "certificate.issued" entry (customer id, request id and the facts'
    SHA-256; nothing else of the facts enters the ledger), writes a checkpoint that
    covers it, and signs everything with `signer`, which must be the ledger's key.
    Raises LedgerError when the checkpoint returned is signed by another key (instances
    configured with different keys), and whatever Ledger.record and checkpoint raise.
    """
    entry = ledger.record(
        CERTIFICATE_KIND,
        customer_id=facts.customer_id,
        request_id=facts.request_id,
        certificate_sha256=facts.digest(),
    )
    checkpoint = ledger.checkpoint()
    if checkpoint.key_id != signer.key_id:
        raise LedgerError(
            f"checkpoint {checkpoint.size} is signed by key {checkpoint.key_id}, not by "
            f"the certificate's key {signer.key_id}: give every instance the same key"
        )
    unsigned = Certificate(
        facts=facts,
        ledger=LedgerProof(
            seq=entry.seq,
            leaf=entry.leaf_data().decode("utf-8"),
            inclusion_proof=tuple(ledger.inclusion_proof(entry.seq, checkpoint.size)),
            checkpoint=checkpoint,
        ),
        issuer=Issuer(key_id=signer.key_id, public_key=signer.public_key_hex),
        signature="",
    )
    return dataclasses.replace(unsigned, signature=signer.sign_hex(unsigned.signed_bytes()))
