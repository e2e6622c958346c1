"""`pdsync certificate verify FILE`: check a certificate offline, against trusted keys.

Checked: the file is canonical JSON of a well-formed certificate; the issuer's full
public key is one of the trusted keys (pinned by the whole key, never by its 64-bit id)
and was in use when the certificate and its checkpoint were signed; the issuer's key id
is its public key's; the signature; that the ledger entry is this certificate's (kind,
seq, customer, request, the facts' digest); the inclusion proof of that entry against
the checkpoint's root; the checkpoint's signature by the same trusted key.

The trusted keys come from outside the certificate: the processor's published key set
(daemon.ledger.keys.KeySet, `pdsync ledger keys export`). Without them only the
certificate's consistency in itself is checked, which anyone with any key can achieve:
the CLI refuses to do that.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from daemon.certificate.model import CERTIFICATE_KIND, Certificate
from daemon.ledger import canonical, merkle
from daemon.ledger.keys import KeySet
from daemon.ledger.signing import Verifier

_LEAF_FIELDS = {"seq", "ts", "kind", "customer_id", "payload"}


def verify_certificate(
    data: bytes | Mapping[str, Any],
    keys: Mapping[str, Verifier] | None = None,
    *,
    trusted_key_id: str | None = None,
) -> list[str]:
    """The problems found with a certificate (file bytes or parsed JSON); empty = valid.

    `keys`: the trusted keys (a KeySet, or verifiers by key id); the issuer's full
    public key must be one of them. `trusted_key_id` (older callers) only compares the
    id. With neither, the certificate is only checked to be consistent in itself.
    """
    problems: list[str] = []
    parsed: Any = data
    if isinstance(data, bytes | bytearray):
        try:
            parsed = canonical.loads(bytes(data).decode("utf-8"))
            if canonical.encode(parsed) != bytes(data):
                problems.append(_not_canonical(bytes(data), canonical.encode(parsed)))
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
    if keys is not None:
        pinned = _pinned(keys, cert.issuer.public_key)
        if pinned is None:
            return [
                *problems,
                f"issued with a key that is not trusted (key id {cert.issuer.key_id}, public "
                f"key {cert.issuer.public_key}): it is not in the trusted key set",
            ]
        verifier = pinned
        published = keys.published(verifier.key_id) if isinstance(keys, KeySet) else None
        if published is not None:
            for what, when in (
                ("issued", cert.facts.issued_at),
                ("its checkpoint was signed", cert.ledger.checkpoint.ts),
            ):
                if not published.covers(when):
                    problems.append(
                        f"{what} at {canonical.format_ts(when)}, outside the time key "
                        f"{verifier.key_id} was in use ({published.validity()})"
                    )
    if not verifier.verify_hex(cert.signature, cert.signed_bytes()):
        problems.append("the signature does not match the certificate")
    problems.extend(_ledger_problems(cert, verifier))
    return problems


def _pinned(keys: Mapping[str, Verifier], public_key_hex: str) -> Verifier | None:
    """The trusted key that is this whole public key (an id alone can be matched)."""
    for verifier in keys.values():
        if verifier.public_key_hex == public_key_hex:
            return verifier
    return None


def _not_canonical(data: bytes, canonical_form: bytes) -> str:
    if data.rstrip(b"\r\n") == canonical_form:
        return (
            "the file ends with a line break that is not part of the signed certificate "
            "(save it with `pdsync certificate export ID -o FILE`, or remove the last line break)"
        )
    return "the file is not in canonical form: it was changed after signing"


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
