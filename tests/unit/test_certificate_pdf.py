"""The PDF: Norwegian and English, æ ø å, €, dashes and curly quotes intact (a Unicode
font is embedded), the same facts as the JSON, the processor and the customer named."""

from __future__ import annotations

import dataclasses
import io
import re

import pypdf
import pytest

from daemon.certificate import Certificate, MaskedIdentifiers, issue_certificate, render_pdf
from daemon.ledger import Ledger, MemoryLedgerStore, Signer
from tests.unit.test_certificate import evidence_facts, make_facts


@pytest.fixture(scope="module")
def cert() -> Certificate:
    signer = Signer.generate()
    return issue_certificate(
        make_facts(), ledger=Ledger(MemoryLedgerStore(), signer), signer=signer
    )


def text_of(pdf: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    return "\n".join(page.extract_text() for page in reader.pages)


def test_the_pdf_states_the_facts_in_both_languages(cert: Certificate) -> None:
    pdf = render_pdf(cert)
    assert pdf.startswith(b"%PDF-")
    text = text_of(pdf)
    flat = re.sub(r"\s+", "", text)

    for phrase in (
        "Slettebekreftelse / Deletion certificate",
        "Forespørsel / Request",
        "Bekreftet fraværende / Verified absent",
        "Databehandler / Processor",
        "Registrert av / Registered by",
        "Gjenværende lagring / Residual retention",
        "venter på manuell sletting / manual deletion pending",
        "Nøkkel-ID / Key id",
        "pdsync certificate verify FILE",
    ):
        assert phrase in text, phrase
    facts = cert.facts
    for fact in (
        facts.request_id,
        facts.customer_id,
        "o***@f***.no",
        "+47 ** ** ** 55",
        "Å*** B*** Ø***",
        "Recoverable Items (Purges)",
        "message: 12",
        "2025-01-30 08:15:00 UTC",
        f"#{cert.ledger.seq}",
        cert.issuer.key_id,
    ):
        assert fact in text, fact
    for digest in (cert.sha256(), cert.ledger.checkpoint.root, cert.issuer.public_key):
        assert digest in flat
    assert "Ødegård" not in text


def test_euro_dashes_quotes_and_norwegian_letters_print_as_they_are(cert: Certificate) -> None:
    odd = dataclasses.replace(
        cert.facts,
        identifiers=MaskedIdentifiers(names=("Ł*** Ŋ*** Ž***", "Č*** Á*** Đ***")),
        reason="Kundens instruks – “slett alt” ‘nå’ — gebyr 0 € — æøå ÆØÅ",
    )
    text = text_of(render_pdf(dataclasses.replace(cert, facts=odd)))
    assert "Kundens instruks – “slett alt” ‘nå’ — gebyr 0 € — æøå ÆØÅ" in text
    for ch in "€–“”‘’æøåÆØÅ":
        assert ch in text, ch
    assert "Ł*** Ŋ*** Ž***, Č*** Á*** Đ***" in text  # Sami and other Latin letters too
    assert "?" not in text.replace("?***", "")


def test_what_the_font_lacks_is_replaced_not_dropped(cert: Certificate) -> None:
    odd = dataclasses.replace(cert.facts, reason="Ḉ ① 漢字 ok")
    text = text_of(render_pdf(dataclasses.replace(cert, facts=odd)))
    assert "C 1 ?? ok" in text


def test_the_pdf_names_the_processor_and_the_customer(cert: Certificate) -> None:
    text = text_of(render_pdf(cert))
    assert "Databehandler / Processor We4you AS" in text
    assert "Kunde / Customer Fjordbakeriet AS – “Bakeriet” (fjordbakeriet)" in text
    assert "at We4you AS som databehandler" in " ".join(text.split())
    assert "on behalf of Fjordbakeriet AS – “Bakeriet” (the controller)" in " ".join(text.split())


def test_older_certificates_render_as_they_were_issued() -> None:
    signer = Signer.generate()
    facts = make_facts(version="pdsync-certificate-v2", processor="", customer_name="")
    cert = issue_certificate(facts, ledger=Ledger(MemoryLedgerStore(), signer), signer=signer)
    text = text_of(render_pdf(cert))
    assert "Processor" not in text and "Kunde / Customer fjordbakeriet" in text
    assert "Ikke slettet: tvetydige treff" in text


def test_the_pdf_lists_what_was_left_alone_and_why() -> None:
    signer = Signer.generate()
    cert = issue_certificate(
        evidence_facts(), ledger=Ledger(MemoryLedgerStore(), signer), signer=signer
    )
    text = text_of(render_pdf(cert))
    for phrase in (
        "Ikke slettet: tvetydige treff / Left alone: ambiguous matches",
        "Delte / Shared",
        "+47 ** ** ** 55 (delt / shared)",
        "zisson: contact: 3",
        "Å*** B*** Ø*** (bare navn / name only)",
        "zisson:abcdefgh",
        "Tatt med / Included",
    ):
        assert phrase in text, phrase
