"""Ed25519 keys for checkpoints and certificates.

The private key lives in a PEM file (PKCS#8, unencrypted, mode 0600) named in the
configuration; it never enters the store or the logs. A key is known by its key id:
the first 16 hex digits of SHA-256 over the raw 32-byte public key. Anyone holding the
public key (printed on every certificate) can check signatures offline with a Verifier.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64


class KeyFileError(ValueError):
    """The key file is missing, unreadable, or holds no Ed25519 private key."""


def key_id_of(public_key: bytes) -> str:
    """The key id of a raw Ed25519 public key: 16 hex digits of its SHA-256."""
    return hashlib.sha256(public_key).hexdigest()[:16]


class Verifier:
    """Checks signatures made with one Ed25519 key, from its public half only."""

    def __init__(self, public_key: Ed25519PublicKey) -> None:
        self._key = public_key
        self._raw = public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.key_id = key_id_of(self._raw)

    @classmethod
    def from_hex(cls, public_key_hex: str) -> Verifier:
        """From the 64 hex digits of a raw public key (as printed on certificates).

        Raises ValueError when that is not an Ed25519 public key.
        """
        raw = bytes.fromhex(public_key_hex)
        if len(raw) != PUBLIC_KEY_BYTES:
            raise ValueError(f"an Ed25519 public key is {PUBLIC_KEY_BYTES} bytes")
        return cls(Ed25519PublicKey.from_public_bytes(raw))

    @classmethod
    def from_pem(cls, data: bytes) -> Verifier:
        """From a PEM public key (SubjectPublicKeyInfo)."""
        key = serialization.load_pem_public_key(data)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("not an Ed25519 public key")
        return cls(key)

    @property
    def public_key_hex(self) -> str:
        return self._raw.hex()

    def public_key_pem(self) -> bytes:
        return self._key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def verify(self, signature: bytes, message: bytes) -> bool:
        """Whether `signature` is this key's signature over `message`."""
        if len(signature) != SIGNATURE_BYTES:
            return False
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def verify_hex(self, signature_hex: str, message: bytes) -> bool:
        """verify() for a lowercase hex signature; any other text does not verify."""
        if len(signature_hex) != 2 * SIGNATURE_BYTES or signature_hex != signature_hex.lower():
            return False
        try:
            signature = bytes.fromhex(signature_hex)
        except ValueError:
            return False
        return self.verify(signature, message)


class Signer:
    """Signs with an Ed25519 private key; `verifier` is its public half."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.verifier = Verifier(private_key.public_key())

    @classmethod
    def generate(cls) -> Signer:
        """A fresh random key, in memory only (tests, the sandbox)."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, data: bytes) -> Signer:
        """From an unencrypted PEM private key. Raises KeyFileError for anything else."""
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise KeyFileError(f"cannot read the signing key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError("the signing key is not an Ed25519 key")
        return cls(key)

    @property
    def key_id(self) -> str:
        return self.verifier.key_id

    @property
    def public_key_hex(self) -> str:
        return self.verifier.public_key_hex

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def sign_hex(self, message: bytes) -> str:
        return self.sign(message).hex()

    def private_key_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def load_signer(path: str | os.PathLike[str]) -> Signer:
    """The signing key from a PEM file. Raises KeyFileError when it cannot be used."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read the signing key file {os.fspath(path)!r}: {exc}") from None
    return Signer.from_pem(data)


def generate_key_file(path: str | os.PathLike[str]) -> Signer:
    """Create a new signing key in a PEM file readable by its owner only (0600).

    Refuses to overwrite an existing file (FileExistsError): replacing the key of a
    running ledger is a decision, not a side effect.
    """
    signer = Signer.generate()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, signer.private_key_pem())
    finally:
        os.close(fd)
    return signer
