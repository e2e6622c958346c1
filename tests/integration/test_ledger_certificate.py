"""A certificate issued from the real store stays provable as the ledger grows, and names
the processor and the customer as configured."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pypdf
import pytest

from connectors.secrets import SecretRef
from daemon import config
from daemon.certificate import Certificate, issue_certificate, render_pdf, verify_certificate
from daemon.config import LedgerConfig, ProcessorConfig
from daemon.ledger import Ledger, Signer, generate_key_file, merkle
from daemon.proof import certifier_for, open_ledger, trusted_verifiers
from daemon.store import ErasureRow, ErasureState, Store
from tests.unit.test_certificate import make_facts

EXAMPLE = Path(__file__).parents[2] / "config" / "example.toml"


def test_certificate_from_the_store_verifies_and_outlives_the_customer(store: Store) -> None:
    signer = Signer.generate()
    ledger = Ledger(store, signer)
    for i in range(5):
        ledger.record("erasure.step", customer_id="fjordbakeriet", request_id="r", step=i)
    store.customer_key("fjordbakeriet")

    cert = issue_certificate(make_facts(), ledger=ledger, signer=signer)
    assert verify_certificate(cert.to_json(), trusted_key_id=signer.key_id) == []

    store.purge_customer("fjordbakeriet")  # the last step of a whole-customer erasure
    for i in range(9):
        ledger.record("sync.completed", customer_id="other", changed=i)
    later = ledger.checkpoint()

    entry = store.ledger_entries(cert.ledger.seq, cert.ledger.seq + 1)[0]
    assert entry.leaf_data().decode() == cert.ledger.leaf
    old = cert.ledger.checkpoint
    proof = [bytes.fromhex(x) for x in ledger.consistency_proof(old.size, later.size)]
    assert merkle.verify_consistency(
        old.size, later.size, bytes.fromhex(old.root), bytes.fromhex(later.root), proof
    )
    assert ledger.verify().ok
    assert verify_certificate(cert.to_json()) == []


def _completed_erasure(customer_id: str) -> ErasureRow:
    now = datetime.now(UTC)
    return ErasureRow(
        id="7d1f6a0e-2f0e-4a51-9a43-0c1b7f0e9a11",
        customer_id=customer_id,
        scope="subject",
        state=ErasureState.COMPLETED,
        requested_by="kari",  # the operator's account that registered the request
        reason="Kundens instruks – “slett personen”",
        requested_at=now - timedelta(hours=1),
        deadline=now + timedelta(days=30),
        approved_by=None,
        approved_at=None,
        masked={"emails": ["o***@f***.no"], "phones": [], "names": ["Å*** Ø***"]},
        plan={"zisson": {"contact": 1}},
        outcome={
            "zisson": {
                "outcome": "executed",
                "counts": {"contact": 1},
                "verified_absent": True,
                "verified_at": now.isoformat(),
            }
        },
        certificate=None,
        error=None,
        updated_at=now,
        completed_at=now,
        has_identifiers=False,
    )


@pytest.mark.parametrize(
    ("processor", "expected"),
    [(None, "We4you AS"), (ProcessorConfig(name="Fjordtjenester AS"), "Fjordtjenester AS")],
)
def test_the_issued_certificate_names_the_processor_and_the_customer(
    store: Store, tmp_path: Path, processor: ProcessorConfig | None, expected: str
) -> None:
    key_file = tmp_path / "ledger.pem"
    generate_key_file(key_file)
    update: dict[str, object] = {"ledger": LedgerConfig(signing_key=SecretRef(file=key_file))}
    if processor is not None:
        update["processor"] = processor
    settings = config.load(EXAMPLE).model_copy(update=update)
    certify = certifier_for(settings, open_ledger(settings, store))
    assert certify is not None

    data = certify(_completed_erasure("acme"), residuals=()).encode("utf-8")
    assert verify_certificate(data, trusted_key_id=next(iter(trusted_verifiers(settings)))) == []
    cert = Certificate.from_json(data)
    assert cert.facts.version == "pdsync-certificate-v3"
    assert (cert.facts.processor, cert.facts.customer_name) == (expected, "Acme AS")
    assert json.loads(data)["processor"] == expected
    text = " ".join(_pdf_text(render_pdf(cert)).split())
    assert f"Databehandler / Processor {expected}" in text
    assert "Kunde / Customer Acme AS (acme)" in text
    assert "Registrert av / Registered by kari" in text
    assert "Kundens instruks – “slett personen”" in text

    # A customer no longer configured is named by its id only.
    gone = Certificate.from_json(certify(_completed_erasure("nedlagt"), residuals=()).encode())
    assert gone.facts.customer_name == "" and gone.facts.processor == expected
    assert "Kunde / Customer nedlagt" in " ".join(_pdf_text(render_pdf(gone)).split())


def _pdf_text(pdf: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    return "\n".join(page.extract_text() for page in reader.pages)
