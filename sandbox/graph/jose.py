"""The little JOSE the simulated Entra ID needs: RS256 signing, RS256/PS256 checking."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@functools.cache
def signing_key() -> rsa.RSAPrivateKey:
    # One RSA key per process: generating 2048-bit keys costs ~50 ms, and the key only
    # makes tokens look like Entra's (clients must treat them as opaque anyway).
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def key_id() -> str:
    public = (
        signing_key()
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return b64url(hashlib.sha1(public).digest())


def jwks() -> dict[str, Any]:
    numbers = signing_key().public_key().public_numbers()

    def uint(value: int) -> str:
        return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))

    key = {"kty": "RSA", "use": "sig", "kid": key_id(), "n": uint(numbers.n), "e": uint(numbers.e)}
    return {"keys": [key]}


def sign(claims: Mapping[str, Any]) -> str:
    header = {"typ": "JWT", "alg": "RS256", "x5t": key_id(), "kid": key_id()}
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    signature = signing_key().sign(
        signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256()
    )
    return f"{signing_input}.{b64url(signature)}"


def decode(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    """(header, claims, signing input, signature) of a compact JWS; ValueError if malformed."""
    try:
        header_b64, claims_b64, signature_b64 = token.split(".")
        header = json.loads(unb64url(header_b64))
        claims = json.loads(unb64url(claims_b64))
        signature = unb64url(signature_b64)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValueError("malformed JWT") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise ValueError("malformed JWT")
    return header, claims, f"{header_b64}.{claims_b64}".encode("ascii"), signature


def certificate_for(
    certificates: Sequence[x509.Certificate], header: Mapping[str, Any]
) -> x509.Certificate | None:
    """The registered certificate the JWT header's thumbprint names."""
    # msal keeps the base64 padding on x5t; RFC 7515 drops it. Accept both.
    x5t = str(header.get("x5t", "")).rstrip("=")
    x5t_s256 = str(header.get("x5t#S256", "")).rstrip("=")
    for certificate in certificates:
        sha1 = b64url(certificate.fingerprint(hashes.SHA1()))
        sha256 = b64url(certificate.fingerprint(hashes.SHA256()))
        if x5t_s256 == sha256 or x5t == sha1:
            return certificate
    if "x5t" not in header and "x5t#S256" not in header and certificates:
        return certificates[0]
    return None


def signature_valid(
    certificate: x509.Certificate, alg: Any, signing_input: bytes, signature: bytes
) -> bool:
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey) or alg not in ("RS256", "PS256"):
        return False
    try:
        if alg == "RS256":
            key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
        else:
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)
            key.verify(signature, signing_input, pss, hashes.SHA256())
    except InvalidSignature:
        return False
    return True
