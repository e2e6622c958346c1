"""The certificate as a PDF for people, in Norwegian and English.

The PDF is a readable copy; the signed JSON file is the proof, and the PDF prints its
SHA-256 and how to check it. Text is set in the PDF core fonts (Helvetica, Courier),
whose Latin-1 covers Norwegian (æ ø å Æ Ø Å) and needs no font file; a character
outside Latin-1 is printed without its accent, or as "?" (the JSON keeps it as is).
"""

from __future__ import annotations

import unicodedata
from datetime import datetime

from fpdf import FPDF
from fpdf.enums import XPos, YPos

from daemon.certificate.model import CERTIFICATE_VERSION_1, Certificate, Outcome, Scope

TITLE = "Slettebekreftelse / Deletion certificate"
VERIFY_COMMAND = "pdsync certificate verify FILE"

_OUTCOME = {
    Outcome.EXECUTED: "slettet / deleted",
    Outcome.NO_MATCH: "ingen treff / nothing found",
    Outcome.MANUAL_PENDING: "venter på manuell sletting / manual deletion pending",
    Outcome.FAILED: "feilet / failed",
}
_SCOPE = {
    Scope.SUBJECT: "én registrert person / one data subject",
    Scope.CUSTOMER: "hele kunden / the whole customer",
}
_STRENGTH = {"shared": "delt / shared", "name": "bare navn / name only"}
# Item ids printed per group; the JSON file lists them all.
_IDS_SHOWN = 60
_LINE = 5.0
_LABEL_WIDTH = 76.0  # mm: "Bekreftet fraværende / Verified absent" in 10 pt bold
_HEX_PER_LINE = 64


def _latin1(text: str) -> str:
    """`text` in the core fonts' Latin-1: accents dropped where needed, else "?"."""
    out: list[str] = []
    for ch in text:
        if ord(ch) < 256:
            out.append(ch)
            continue
        base = "".join(
            c
            for c in unicodedata.normalize("NFKD", ch)
            if ord(c) < 256 and not unicodedata.combining(c)
        )
        out.append(base or "?")
    return "".join(out)


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


class _Document:
    def __init__(self, cert: Certificate) -> None:
        self.pdf = FPDF(format="A4")
        self.pdf.set_margins(18, 18, 18)
        self.pdf.set_auto_page_break(auto=True, margin=18)
        self.pdf.set_creation_date(cert.facts.issued_at)
        self.pdf.set_title(TITLE)
        self.pdf.set_subject(f"{cert.facts.customer_id} {cert.facts.request_id}")
        self.pdf.set_creator("pdsync")
        self.pdf.add_page()

    def text(self, text: str, *, size: float = 10, bold: bool = False, mono: bool = False) -> None:
        self.pdf.set_font("Courier" if mono else "Helvetica", style="B" if bold else "", size=size)
        self.pdf.multi_cell(
            0,
            _LINE if size <= 10 else size * 0.6,
            _latin1(text),
            new_x=XPos.LMARGIN,
            new_y=YPos.NEXT,
        )

    def heading(self, text: str) -> None:
        self.pdf.ln(3)
        self.text(text, size=12, bold=True)

    def field(self, label: str, value: str) -> None:
        self.pdf.set_font("Helvetica", style="B", size=10)
        self.pdf.cell(_LABEL_WIDTH, _LINE, _latin1(label))
        self.pdf.set_font("Helvetica", size=10)
        self.pdf.multi_cell(0, _LINE, _latin1(value) or "-", new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def hex(self, label: str, value: str) -> None:
        self.text(label, bold=True)
        for start in range(0, len(value), _HEX_PER_LINE):
            self.text(value[start : start + _HEX_PER_LINE], size=8, mono=True)


def _left_alone(doc: _Document, cert: Certificate) -> None:
    facts = cert.facts
    doc.heading("Ikke slettet: tvetydige treff / Left alone: ambiguous matches")
    doc.text(
        "Funnet bare ved identifikatorer flere deler (et sentralbordnummer, en "
        "rolleadresse) eller ved navn, og derfor ikke slettet. / Found only by identifiers "
        "several people share (a switchboard number, a role address) or by a name, and so "
        "not erased."
    )
    if not facts.left_alone:
        doc.text("Ingen / None")
    for group in facts.left_alone:
        counts = ", ".join(f"{kind}: {n}" for kind, n in sorted(group.counts.items()))
        matched = ", ".join(f"{m.identifier} ({_STRENGTH[m.strength]})" for m in group.matched)
        doc.text(f"{group.system}: {counts}", bold=True)
        doc.field("Treff på / Matched", matched)
        shown = ", ".join(group.items[:_IDS_SHOWN])
        more = len(group.items) - _IDS_SHOWN
        if more > 0:
            shown += f" ... +{more} (JSON)"
        doc.text(shown, size=8, mono=True)
    for system, n in sorted(facts.included.items()):
        doc.field(
            "Tatt med / Included",
            f"{system}: {n} (av en administrator, slettet / by an admin, erased)",
        )


def render_pdf(cert: Certificate) -> bytes:
    """The certificate as one PDF document (A4), Norwegian and English side by side."""
    facts, proof = cert.facts, cert.ledger
    doc = _Document(cert)
    doc.text(TITLE, size=18, bold=True)
    doc.text(
        "Denne bekreftelsen dokumenterer at personopplysninger er slettet på kundens vegne, "
        "hvor, når og hvordan det er kontrollert. / This certificate documents that personal "
        "data was deleted on the customer's behalf: where, when, and how it was checked."
    )

    doc.heading("Forespørsel / Request")
    doc.field("Forespørsel / Request", facts.request_id)
    doc.field("Kunde / Customer", facts.customer_id)
    doc.field("Omfang / Scope", _SCOPE[facts.scope])
    ids = facts.identifiers
    doc.field("E-post / E-mail", ", ".join(ids.emails))
    doc.field("Telefon / Phone", ", ".join(ids.phones))
    doc.field("Navn / Name", ", ".join(ids.names))
    if facts.version != CERTIFICATE_VERSION_1:
        shared = [*facts.shared.emails, *facts.shared.phones]
        doc.field("Delte / Shared", ", ".join(shared) or "ingen / none")
    doc.field("Bestilt av / Requested by", facts.requested_by)
    doc.field("Begrunnelse / Reason", facts.reason)
    doc.field("Mottatt / Requested", _when(facts.requested_at))
    doc.field("Fullført / Completed", _when(facts.completed_at))
    doc.field("Utstedt / Issued", _when(facts.issued_at))
    doc.text("Identifikatorene er maskert. / The identifiers are masked.", size=8)

    doc.heading("Systemer / Systems")
    for result in facts.systems:
        counts = ", ".join(f"{kind}: {n}" for kind, n in sorted(result.counts.items()))
        absent = "ja / yes" if result.verified_absent else "nei / no"
        doc.text(result.system, bold=True)
        doc.field("Resultat / Outcome", _OUTCOME[result.outcome])
        doc.field("Slettet / Deleted", counts or "0")
        doc.field("Bekreftet fraværende / Verified absent", absent)
        doc.field("Kontrollert / Checked", _when(result.verified_at))

    if facts.version != CERTIFICATE_VERSION_1:
        _left_alone(doc, cert)

    doc.heading("Gjenværende lagring / Residual retention")
    if not facts.residuals:
        doc.text("Ingen / None")
    for residual in facts.residuals:
        note = f" ({residual.note})" if residual.note else ""
        doc.text(f"{residual.system}: {residual.what}, {residual.retention}{note}")

    doc.heading("Bevis / Proof")
    doc.field("Loggoppføring / Ledger entry", f"#{proof.seq}")
    doc.field(
        "Sjekkpunkt / Checkpoint",
        f"{proof.checkpoint.size} oppføringer / entries, {_when(proof.checkpoint.ts)}",
    )
    doc.field("Nøkkel-ID / Key id", cert.issuer.key_id)
    doc.hex("Merkle-rot / Merkle root", proof.checkpoint.root)
    doc.hex("Offentlig nøkkel / Public key (Ed25519)", cert.issuer.public_key)
    doc.hex("SHA-256 av JSON-filen / SHA-256 of the JSON file", cert.sha256())

    doc.heading("Slik kontrollerer du / How to verify")
    doc.text(
        "Den signerte JSON-filen er beviset; denne PDF-en er en lesbar kopi. Kontroller at "
        "filens SHA-256 er som over, og kjør: / The signed JSON file is the proof; this PDF is "
        "a readable copy. Check that the file's SHA-256 is the one above, and run:"
    )
    doc.text(VERIFY_COMMAND, mono=True)
    doc.text(
        "Kontrollen trenger ingen tilgang til våre systemer: den sjekker signaturen, "
        "loggoppføringen og Merkle-beviset mot det signerte sjekkpunktet. / The check needs no "
        "access to our systems: it verifies the signature, the ledger entry and the Merkle "
        "proof against the signed checkpoint."
    )
    return bytes(doc.pdf.output())
