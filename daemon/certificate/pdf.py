"""The certificate as a PDF for people, in Norwegian and English.

The PDF is a readable copy; the signed JSON file is the proof, and the PDF prints its
SHA-256 and how to check it. Text is set in Fira Sans, a Unicode TrueType font shipped
by the `fontpkg-fira-sans` package and embedded (subset) in the PDF: Norwegian and Sami
letters, €, dashes and curly quotes print as they are. Hex digests and the verify
command are set in the core font Courier (ASCII). A character the font lacks is printed
without its accent, or as "?" (the JSON keeps it as is).
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Callable, Iterable
from datetime import datetime
from importlib import resources
from pathlib import Path

from fontTools.ttLib import TTFont
from fpdf import FPDF
from fpdf.enums import XPos, YPos

from daemon.certificate.model import Certificate, Outcome, Scope

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


# The text font: the package that ships it, and its files per style ("" and bold).
FONT_FAMILY = "FiraSans"
_FONT_PACKAGE = "fontpkg_fira_sans"
_FONT_FILES = {"": "FiraSans-Regular.ttf", "B": "FiraSans-Bold.ttf"}
_MONO = "Courier"  # a core font: Latin-1


@functools.cache
def font_files() -> dict[str, Path]:
    """The text font's files per style; raises FileNotFoundError when not installed."""
    root = resources.files(_FONT_PACKAGE).joinpath("files")
    paths = {style: Path(str(root.joinpath(name))) for style, name in _FONT_FILES.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"the certificate font is missing: {', '.join(missing)}")
    return paths


@functools.cache
def _font_covers() -> frozenset[int]:
    """The code points every style of the text font has a glyph for."""
    covered: frozenset[int] | None = None
    for path in font_files().values():
        font = TTFont(path, lazy=True)
        try:
            cmap = frozenset(font.getBestCmap())
        finally:
            font.close()
        covered = cmap if covered is None else covered & cmap
    return covered or frozenset()


def _printable(text: str, covered: Callable[[int], bool]) -> str:
    """`text` with what the font lacks replaced: accents dropped where that helps, else
    "?". Line breaks stay."""
    out: list[str] = []
    for ch in text:
        if ch == "\n" or covered(ord(ch)):
            out.append(ch)
            continue
        base = "".join(
            c
            for c in unicodedata.normalize("NFKD", ch)
            if covered(ord(c)) and not unicodedata.combining(c)
        )
        out.append(base or "?")
    return "".join(out)


def _in_font(text: str) -> str:
    return _printable(text, _font_covers().__contains__)


def _latin1(text: str) -> str:
    """`text` in the core fonts' Latin-1: accents dropped where needed, else "?"."""
    return _printable(text, lambda code: code < 256)


def _joined(values: Iterable[str]) -> str:
    return ", ".join(values)


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
        for style, path in font_files().items():
            self.pdf.add_font(FONT_FAMILY, style=style, fname=path)
        self.pdf.add_page()

    def text(self, text: str, *, size: float = 10, bold: bool = False, mono: bool = False) -> None:
        self.pdf.set_font(_MONO if mono else FONT_FAMILY, style="B" if bold else "", size=size)
        self.pdf.multi_cell(
            0,
            _LINE if size <= 10 else size * 0.6,
            _latin1(text) if mono else _in_font(text),
            new_x=XPos.LMARGIN,
            new_y=YPos.NEXT,
        )

    def heading(self, text: str) -> None:
        self.pdf.ln(3)
        self.text(text, size=12, bold=True)

    def field(self, label: str, value: str) -> None:
        self.pdf.set_font(FONT_FAMILY, style="B", size=10)
        self.pdf.cell(_LABEL_WIDTH, _LINE, _in_font(label))
        self.pdf.set_font(FONT_FAMILY, size=10)
        self.pdf.multi_cell(0, _LINE, _in_font(value) or "-", new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def hex(self, label: str, value: str) -> None:
        self.text(label, bold=True)
        for start in range(0, len(value), _HEX_PER_LINE):
            self.text(value[start : start + _HEX_PER_LINE], size=8, mono=True)


def _left_alone(doc: _Document, cert: Certificate) -> None:
    facts = cert.facts
    whole = facts.scope is Scope.CUSTOMER
    if whole:
        doc.heading("Ikke slettet: også en annen kundes / Left alone: another customer's too")
        doc.text(
            "Også en annen kundes data i den samme postkassen (e-post mellom de to, eller i "
            "den andre kundens mapper), og derfor ikke slettet uten at en administrator tok "
            "det med. / Another customer's data too in the same mailbox (mail between the "
            "two, or in that customer's folders), and so not erased unless an admin included "
            "it."
        )
    else:
        doc.heading("Ikke slettet: tvetydige treff / Left alone: ambiguous matches")
        doc.text(
            "Funnet bare ved identifikatorer flere deler (et sentralbordnummer, en "
            "rolleadresse) eller ved navn, og derfor ikke slettet. / Found only by "
            "identifiers several people share (a switchboard number, a role address) or by "
            "a name, and so not erased."
        )
    if not facts.left_alone:
        doc.text("Ingen / None")
    for group in facts.left_alone:
        counts = ", ".join(f"{kind}: {n}" for kind, n in sorted(group.counts.items()))
        doc.text(f"{group.system}: {counts}", bold=True)
        if not whole:
            matched = ", ".join(f"{m.identifier} ({_STRENGTH[m.strength]})" for m in group.matched)
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
    if facts.has_names:
        customer = facts.customer_name or facts.customer_id
        doc.text(
            f"Denne bekreftelsen dokumenterer at {facts.processor} som databehandler har "
            f"slettet personopplysninger på vegne av {customer} (behandlingsansvarlig): hvor, "
            f"når og hvordan det er kontrollert. / This certificate documents that "
            f"{facts.processor}, as data processor, deleted personal data on behalf of "
            f"{customer} (the controller): where, when, and how it was checked."
        )
    else:
        doc.text(
            "Denne bekreftelsen dokumenterer at personopplysninger er slettet på kundens "
            "vegne, hvor, når og hvordan det er kontrollert. / This certificate documents that "
            "personal data was deleted on the customer's behalf: where, when, and how it was "
            "checked."
        )

    doc.heading("Forespørsel / Request")
    doc.field("Forespørsel / Request", facts.request_id)
    if facts.has_names:
        doc.field("Databehandler / Processor", facts.processor)
        name = f"{facts.customer_name} ({facts.customer_id})" if facts.customer_name else ""
        doc.field("Kunde / Customer", name or facts.customer_id)
    else:
        doc.field("Kunde / Customer", facts.customer_id)
    doc.field("Omfang / Scope", _SCOPE[facts.scope])
    ids = facts.identifiers
    doc.field("E-post / E-mail", _joined(ids.emails))
    doc.field("Telefon / Phone", _joined(ids.phones))
    doc.field("Navn / Name", _joined(ids.names))
    if facts.has_evidence:
        shared = [*facts.shared.emails, *facts.shared.phones]
        doc.field("Delte / Shared", _joined(shared) or "ingen / none")
    # Who registered the request at the processor (an operator's account), not the
    # customer: the customer is named above.
    doc.field("Registrert av / Registered by", facts.requested_by)
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

    if facts.has_evidence:
        _left_alone(doc, cert)

    doc.heading("Gjenværende lagring / Residual retention")
    if not facts.residuals:
        doc.text("Ingen / None")
    from daemon.report import translated

    for residual in facts.residuals:
        # Norwegian first, then English, as every other section.
        for language in ("no", "en"):
            what = translated(residual.what, language)
            kept = translated(residual.retention, language)
            note = f" ({translated(residual.note, language)})" if residual.note else ""
            doc.text(f"{residual.system}: {what}, {kept}{note}", size=10 if language == "no" else 9)

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
