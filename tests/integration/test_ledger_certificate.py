"""A certificate issued from the real store stays provable as the ledger grows."""

from __future__ import annotations

from daemon.certificate import issue_certificate, verify_certificate
from daemon.ledger import Ledger, Signer, merkle
from daemon.store import Store
from tests.unit.test_certificate import make_facts


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
