"""Deletion certificates (O6): signed JSON with a ledger inclusion proof, and a PDF.

    facts = CertificateFacts(request_id=..., identifiers=MaskedIdentifiers.of(subject), ...)
    cert = issue_certificate(facts, ledger=ledger, signer=signer)
    path.write_bytes(cert.to_json()); pdf_path.write_bytes(render_pdf(cert))
    problems = verify_certificate(path.read_bytes(), KeySet.load("keys.json"))  # [] = valid

Modules: masking (identifiers), evidence (what a subject erasure left alone, and why),
model (the certificate and its JSON), issue (ledger, checkpoint, sign), verify (the
offline check), pdf (the document for people).

The PDF module (fpdf, fontTools, PIL: tens of MB) is imported on the first render, not
with this package, so a daemon that never renders a PDF does not carry it.
"""

from __future__ import annotations

from daemon.certificate.evidence import LeftAlone, MatchedIdentifier
from daemon.certificate.issue import issue_certificate
from daemon.certificate.masking import mask_email, mask_name, mask_phone
from daemon.certificate.model import (
    CERTIFICATE_KIND,
    CERTIFICATE_VERSION,
    Certificate,
    CertificateFacts,
    Issuer,
    LedgerProof,
    MaskedIdentifiers,
    Outcome,
    ResidualWindow,
    Scope,
    SystemResult,
)
from daemon.certificate.verify import verify_certificate


def render_pdf(cert: Certificate) -> bytes:
    """The certificate as one PDF document (A4), Norwegian and English side by side."""
    from daemon.certificate.pdf import render_pdf as render

    return render(cert)


__all__ = [
    "CERTIFICATE_KIND",
    "CERTIFICATE_VERSION",
    "Certificate",
    "CertificateFacts",
    "Issuer",
    "LedgerProof",
    "LeftAlone",
    "MaskedIdentifiers",
    "MatchedIdentifier",
    "Outcome",
    "ResidualWindow",
    "Scope",
    "SystemResult",
    "issue_certificate",
    "mask_email",
    "mask_name",
    "mask_phone",
    "render_pdf",
    "verify_certificate",
]
