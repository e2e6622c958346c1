"""`pdsync certificate verify FILE`: check a certificate offline, with nothing but the file.

Checked: the file is canonical JSON of a well-formed certificate; the issuer's key id
is its public key's (and the trusted one, when given); the signature; that the ledger
entry is this certificate's (kind, seq, customer, request, the facts' digest); the
inclusion proof of that entry against the checkpoint's root; the checkpoint's
signature by the same key. Trusting the issuer's key is the reader's decision: pass
`trusted_key_id` (published by the processor) to make it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from daemon.certificate.model import CERTIFICATE_KIND, Certificate
from daemon.ledger import canonical, merkle
from daemon.ledger.signing import Verifier

_LEAF_FIELDS = {"seq", "ts", "kind", "customer_id", "payload"}


def verify_certificate(
    data: bytes | Mapping[str, Any], trusted_key_id: str | None = None
) -> list[str]:
    """The problems found with a certificate (file bytes or parsed JSON); empty = valid."""
    problems: list[str] = []
    parsed: Any = data
    if isinstance(data, bytes | bytearray):
        try:
            parsed = canonical.loads(bytes(data).decode("utf-8"))
            if canonical.encode(parsed) != bytes(data):
                problems.append("the file is not in canonical form: it was changed after signing")
        except (ValueError, TypeError) as exc:
            return [f"the file is not a JSON certificate: {exc}"]
    try:
        cert = Certificate.from_dict(parsed)
    except (ValueError, TypeError) as exc:
        return [*problems, f"malformed certificate: {exc}"]

    try:
        verifier = Verifier.from_hex(cert.issuer.public_key)
    except ValueError:
        return [*problems, "the issuer's public key is not an Ed25519 key"]
    if verifier.key_id != cert.issuer.key_id:
        problems.append("the issuer's key id does not belong to its public key")
    if trusted_key_id is not None and verifier.key_id != trusted_key_id:
        problems.append(f"issued with key {verifier.key_id}, not the trusted key {trusted_key_id}")
    if not verifier.verify_hex(cert.signature, cert.signed_bytes()):
        problems.append("the signature does not match the certificate")
    problems.extend(_ledger_problems(cert, verifier))
    return problems


def _entry_is_ours(cert: Certificate) -> bool:
    """Whether the ledger entry records this certificate: its kind, seq, customer,
    request and the digest of its facts, in canonical form."""
    try:
        leaf = canonical.loads(cert.ledger.leaf)
        canonical_form = canonical.dumps(leaf) == cert.ledger.leaf
    except (ValueError, TypeError):
        return False
    if not isinstance(leaf, dict) or set(leaf) != _LEAF_FIELDS:
        return False
    payload = leaf["payload"]
    return (
        canonical_form
        and isinstance(payload, dict)
        and leaf["kind"] == CERTIFICATE_KIND
        and leaf["seq"] == cert.ledger.seq
        and leaf["customer_id"] == cert.facts.customer_id
        and payload.get("request_id") == cert.facts.request_id
        and payload.get("certificate_sha256") == cert.facts.digest()
    )


def _ledger_problems(cert: Certificate, verifier: Verifier) -> list[str]:
    problems: list[str] = []
    proof, checkpoint = cert.ledger, cert.ledger.checkpoint
    if not _entry_is_ours(cert):
        problems.append("the ledger entry is not this certificate's (or does not hold its digest)")
    included = merkle.verify_inclusion(
        proof.seq,
        checkpoint.size,
        merkle.leaf_hash(proof.leaf.encode("utf-8", "surrogatepass")),
        [bytes.fromhex(h) for h in proof.inclusion_proof],
        bytes.fromhex(checkpoint.root),
    )
    if not included:
        problems.append("the inclusion proof does not lead from the entry to the checkpoint's root")
    if checkpoint.key_id != verifier.key_id:
        problems.append("the checkpoint is signed by another key than the certificate")
    elif not verifier.verify_hex(checkpoint.signature, checkpoint.statement()):
        problems.append("the checkpoint's signature does not match it")
    return problems
