"""Deletion certificates: issue, sign, verify offline; every changed byte is caught."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest

from daemon.certificate import (
    CERTIFICATE_VERSION,
    Certificate,
    CertificateFacts,
    LeftAlone,
    MaskedIdentifiers,
    MatchedIdentifier,
    Outcome,
    ResidualWindow,
    Scope,
    SystemResult,
    issue_certificate,
    verify_certificate,
)
from daemon.domain import Residual, Subject
from daemon.ledger import Ledger, LedgerError, MemoryLedgerStore, Signer, canonical

T0 = datetime(2025, 1, 30, 8, 15, 0, 123456, tzinfo=UTC)
SUBJECT = Subject(
    emails=("ola.nordmann@fjordbakeriet.no",),
    phones=("+47 912 34 555",),
    names=("Åse Bjørg Ødegård",),
)


def make_facts(**changes: object) -> CertificateFacts:
    facts = CertificateFacts(
        request_id="7d1f6a0e-2f0e-4a51-9a43-0c1b7f0e9a11",
        customer_id="fjordbakeriet",
        scope=Scope.SUBJECT,
        identifiers=MaskedIdentifiers.of(SUBJECT),
        systems=(
            SystemResult(
                system="firestore",
                outcome=Outcome.EXECUTED,
                counts={"contact": 1},
                verified_absent=True,
                verified_at=T0 + timedelta(minutes=3),
            ),
            SystemResult(
                system="outlook",
                outcome=Outcome.EXECUTED,
                counts={"contact": 1, "message": 12},
                verified_absent=True,
                verified_at=T0 + timedelta(minutes=4),
            ),
            SystemResult(system="zisson", outcome=Outcome.MANUAL_PENDING, counts={"contact": 1}),
        ),
        residuals=(
            ResidualWindow.of(
                Residual(
                    system="outlook",
                    what="Recoverable Items (Purges)",
                    retention="up to 14 days",
                    note="unless a hold applies",
                )
            ),
            ResidualWindow(system="firestore", what="point-in-time recovery", retention="7 days"),
        ),
        requested_by="admin:kari",
        reason="Kundens instruks: slett personen / the customer's instruction",
        requested_at=T0,
        completed_at=T0 + timedelta(minutes=5),
        issued_at=T0 + timedelta(minutes=6),
        processor="We4you AS",
        customer_name="Fjordbakeriet AS – “Bakeriet”",
    )
    return dataclasses.replace(facts, **changes)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer.generate()


@pytest.fixture(scope="module")
def issued(signer: Signer) -> Certificate:
    ledger = Ledger(MemoryLedgerStore(), signer)
    for i in range(6):
        ledger.record("sync.completed", customer_id="fjordbakeriet", run=f"r{i}")
    return issue_certificate(make_facts(), ledger=ledger, signer=signer)


def test_a_certificate_verifies_offline_and_round_trips(
    issued: Certificate, signer: Signer
) -> None:
    data = issued.to_json()

    assert verify_certificate(data) == []
    assert verify_certificate(json.loads(data)) == []
    assert verify_certificate(data, trusted_key_id=signer.key_id) == []
    assert Certificate.from_json(data) == issued
    assert issued.ledger.seq == 6 and issued.ledger.checkpoint.size == 7
    assert issued.issuer.public_key == signer.public_key_hex
    leaf = json.loads(issued.ledger.leaf)
    assert leaf["kind"] == "certificate.issued"
    assert leaf["payload"] == {
        "certificate_sha256": issued.facts.digest(),
        "request_id": issued.facts.request_id,
    }


def test_the_file_is_canonical_json(issued: Certificate) -> None:
    data = issued.to_json()
    assert data == json.dumps(
        json.loads(data), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")
    assert "Ødegård".encode() not in data  # masked
    assert "Ø***".encode() in data  # and UTF-8, not \\u escapes


@pytest.mark.parametrize("flip", [0x01, 0x20, 0x80])
def test_any_changed_byte_is_reported(issued: Certificate, flip: int) -> None:
    data = issued.to_json()
    missed = []
    for i in range(len(data)):
        changed = bytearray(data)
        changed[i] ^= flip
        if not verify_certificate(bytes(changed)):
            missed.append((i, data[max(0, i - 20) : i + 20]))
    assert missed == []


def test_each_part_that_is_changed_is_named(issued: Certificate) -> None:
    def problems_after(change: dict[str, object]) -> list[str]:
        data = issued.to_dict()
        _set(data, change)
        return verify_certificate(canonical.encode(data))

    assert any("signature" in p for p in problems_after({"systems.1.counts.message": 11}))
    assert any(
        "inclusion proof" in p for p in problems_after({"ledger.inclusion_proof.0": "0" * 64})
    )
    assert any("ledger entry" in p for p in problems_after({"ledger.seq": 5}))
    assert any("checkpoint's signature" in p for p in problems_after({"ledger.checkpoint.size": 8}))
    assert any("malformed" in p for p in problems_after({"scope": "everything"}))
    assert any("malformed" in p for p in problems_after({"surprise": 1}))
    assert any("key id" in p for p in problems_after({"issuer.key_id": "0" * 16}))


def _set(data: dict[str, object], change: dict[str, object]) -> None:
    for path, value in change.items():
        *parents, last = path.split(".")
        node: object = data
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]  # type: ignore[index]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value  # type: ignore[index]


def test_another_certificates_proof_does_not_fit(signer: Signer) -> None:
    ledger = Ledger(MemoryLedgerStore(), signer)
    first = issue_certificate(make_facts(), ledger=ledger, signer=signer)
    second = issue_certificate(
        make_facts(request_id="0b4f3c3e-0d45-4a47-8f1a-5f3d2b9f8e77"), ledger=ledger, signer=signer
    )
    assert verify_certificate(second.to_json()) == []
    # Whoever holds the key can re-sign, but the ledger entry still names the other one.
    swapped = dataclasses.replace(first, ledger=second.ledger)
    swapped = dataclasses.replace(swapped, signature=signer.sign_hex(swapped.signed_bytes()))
    assert verify_certificate(swapped.to_json()) == [
        "the ledger entry is not this certificate's (or does not hold its digest)"
    ]


def test_a_forger_with_their_own_key_fails_against_the_trusted_key(
    issued: Certificate, signer: Signer
) -> None:
    forger = Signer.generate()
    forged_ledger = Ledger(MemoryLedgerStore(), forger)
    forged = issue_certificate(
        make_facts(systems=(SystemResult(system="outlook", outcome=Outcome.NO_MATCH),)),
        ledger=forged_ledger,
        signer=forger,
    )
    assert verify_certificate(forged.to_json()) == []  # consistent in itself...
    problems = verify_certificate(forged.to_json(), trusted_key_id=signer.key_id)
    assert problems == [f"issued with key {forger.key_id}, not the trusted key {signer.key_id}"]
    # ...and the real ledger's checkpoint cannot be borrowed by another key.
    borrowed = dataclasses.replace(forged, ledger=issued.ledger)
    borrowed = dataclasses.replace(borrowed, signature=forger.sign_hex(borrowed.signed_bytes()))
    assert "the checkpoint is signed by another key than the certificate" in verify_certificate(
        borrowed.to_json()
    )


def test_the_checkpoint_must_be_signed_with_the_certificates_key(signer: Signer) -> None:
    ledger_with_other_key = Ledger(MemoryLedgerStore(), Signer.generate())
    with pytest.raises(LedgerError, match="signed by key"):
        issue_certificate(make_facts(), ledger=ledger_with_other_key, signer=signer)


@pytest.mark.parametrize(
    "data",
    [b"", b"not json", b"[]", b'{"version":"pdsync-certificate-v1"}', b"\xff\xfe", b'{"a":1.5}'],
)
def test_garbage_is_reported_not_raised(data: bytes) -> None:
    problems = verify_certificate(data)
    assert problems and all(isinstance(p, str) for p in problems)


def test_raw_identifiers_cannot_go_on_a_certificate() -> None:
    with pytest.raises(ValueError, match="e-mail 0 is not masked"):
        MaskedIdentifiers(emails=("ola@firma.no",))
    with pytest.raises(ValueError, match="phone 0 is not masked"):
        MaskedIdentifiers(phones=("+47 91234555",))
    with pytest.raises(ValueError, match="name 0 is not masked"):
        MaskedIdentifiers(names=("Åse",))
    assert MaskedIdentifiers.of(SUBJECT) == MaskedIdentifiers(
        emails=("o***@f***.no",), phones=("+47 ** ** ** 55",), names=("Å*** B*** Ø***",)
    )


def test_a_whole_customer_certificate_has_no_identifiers(signer: Signer) -> None:
    facts = make_facts(scope=Scope.CUSTOMER, identifiers=MaskedIdentifiers())
    cert = issue_certificate(facts, ledger=Ledger(MemoryLedgerStore(), signer), signer=signer)
    assert verify_certificate(cert.to_json()) == []
    assert cert.to_dict()["identifiers"] == {"emails": [], "names": [], "phones": []}


# -- what a subject erasure left alone (v2) -------------------------------------------------

BOARD = MatchedIdentifier(kind="phone", identifier="+47 ** ** ** 55", strength="shared")


def evidence_facts(**changes: object) -> CertificateFacts:
    return make_facts(
        shared=MaskedIdentifiers(phones=("+47 ** ** ** 55",)),
        left_alone=(
            LeftAlone(
                system="zisson",
                matched=(BOARD,),
                counts={"contact": 3},
                items=("zisson:abcdefgh", "zisson:bcdefghi", "zisson:cdefghij"),
            ),
            LeftAlone(
                system="outlook",
                matched=(
                    MatchedIdentifier(kind="name", identifier="Å*** B*** Ø***", strength="name"),
                ),
                counts={"message": 1},
                items=("outlook:defghijk",),
            ),
        ),
        included={"zisson": 1},
        **changes,
    )


def test_items_left_alone_and_shared_identifiers_are_certified(signer: Signer) -> None:
    cert = issue_certificate(
        evidence_facts(), ledger=Ledger(MemoryLedgerStore(), signer), signer=signer
    )
    data = cert.to_json()
    assert verify_certificate(data, trusted_key_id=signer.key_id) == []
    again = Certificate.from_json(data)
    assert again == cert and again.facts.version == CERTIFICATE_VERSION
    assert again.facts.left_alone[0].matched == (BOARD,)
    assert again.facts.shared.phones == ("+47 ** ** ** 55",) and again.facts.included == {
        "zisson": 1
    }

    def problems_after(change: dict[str, object]) -> list[str]:
        changed = cert.to_dict()
        _set(changed, change)
        return verify_certificate(canonical.encode(changed))

    fewer = {"left_alone.0.counts.contact": 2, "left_alone.0.items": ["zisson:abcdefgh"] * 2}
    assert any("signature" in p for p in problems_after(fewer))
    assert any("signature" in p for p in problems_after({"included.zisson": 0}))
    assert any("malformed" in p for p in problems_after({"left_alone.0.counts.contact": 4}))
    assert any(
        "malformed" in p for p in problems_after({"left_alone.0.matched.0.identifier": "22334455"})
    )
    assert any(
        "malformed" in p for p in problems_after({"left_alone.0.matched.0.strength": "personal"})
    )


def test_a_v1_certificate_still_reads_and_verifies(signer: Signer) -> None:
    facts = make_facts(version="pdsync-certificate-v1", processor="", customer_name="")
    cert = issue_certificate(facts, ledger=Ledger(MemoryLedgerStore(), signer), signer=signer)
    data = cert.to_json()
    assert b"left_alone" not in data and b'"pdsync-certificate-v1"' in data
    assert verify_certificate(data, trusted_key_id=signer.key_id) == []
    assert Certificate.from_json(data) == cert
    with pytest.raises(ValueError, match="no evidence fields"):
        evidence_facts(version="pdsync-certificate-v1", processor="", customer_name="")
    # A v1 file given the new fields is not a v1 certificate any more.
    extended = cert.to_dict()
    extended["included"] = {}
    assert any("malformed" in p for p in verify_certificate(canonical.encode(extended)))


def test_raw_identifiers_cannot_be_listed_as_left_alone() -> None:
    with pytest.raises(ValueError, match="not masked"):
        MatchedIdentifier(kind="email", identifier="post@firma.no", strength="shared")
    with pytest.raises(ValueError, match="not shared or name"):
        MatchedIdentifier(kind="phone", identifier="+47 ** ** ** 55", strength="personal")
    with pytest.raises(ValueError, match="do not add up"):
        LeftAlone(system="zisson", matched=(BOARD,), counts={"contact": 2}, items=("zisson:x",))


# -- the processor and the customer by name (v3) ----------------------------------------


def test_the_certificate_names_the_processor_and_the_customer(signer: Signer) -> None:
    cert = issue_certificate(
        make_facts(), ledger=Ledger(MemoryLedgerStore(), signer), signer=signer
    )
    data = cert.to_json()
    assert verify_certificate(data, trusted_key_id=signer.key_id) == []
    parsed = json.loads(data)
    assert parsed["version"] == CERTIFICATE_VERSION == "pdsync-certificate-v3"
    assert parsed["processor"] == "We4you AS"
    assert parsed["customer_name"] == "Fjordbakeriet AS – “Bakeriet”"
    assert "Fjordbakeriet AS – “Bakeriet”".encode() in data  # UTF-8, not escapes
    assert Certificate.from_json(data) == cert

    def problems_after(change: dict[str, object]) -> list[str]:
        changed = cert.to_dict()
        _set(changed, change)
        return verify_certificate(canonical.encode(changed))

    assert any("signature" in p for p in problems_after({"processor": "Someone Else AS"}))
    assert any("signature" in p for p in problems_after({"customer_name": "Acme AS"}))
    without = cert.to_dict()
    del without["processor"]
    assert any("processor is missing" in p for p in verify_certificate(canonical.encode(without)))
    with pytest.raises(ValueError, match="processor is empty"):
        make_facts(processor=" ")


def test_a_v2_certificate_still_reads_and_verifies(signer: Signer) -> None:
    facts = evidence_facts(version="pdsync-certificate-v2", processor="", customer_name="")
    cert = issue_certificate(facts, ledger=Ledger(MemoryLedgerStore(), signer), signer=signer)
    data = cert.to_json()
    assert b'"pdsync-certificate-v2"' in data and b"left_alone" in data
    assert b"processor" not in data and b"customer_name" not in data
    assert verify_certificate(data, trusted_key_id=signer.key_id) == []
    assert Certificate.from_json(data) == cert
    with pytest.raises(ValueError, match="no processor or customer name"):
        evidence_facts(version="pdsync-certificate-v2")
    # A v2 file given the names is not a v2 certificate.
    extended = cert.to_dict()
    extended["processor"] = "We4you AS"
    assert any("malformed" in p for p in verify_certificate(canonical.encode(extended)))
