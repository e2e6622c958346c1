"""Signing keys: a 0600 PEM file, key ids, and offline verification from the public key."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from daemon.ledger import KeyFileError, Signer, Verifier, generate_key_file, key_id_of, load_signer


def test_a_generated_key_file_is_private_and_loads_back(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "ledger.pem"
    signer = generate_key_file(path)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = load_signer(path)
    assert loaded.key_id == signer.key_id
    raw = bytes.fromhex(signer.public_key_hex)
    assert signer.key_id == key_id_of(raw) == hashlib.sha256(raw).hexdigest()[:16]
    with pytest.raises(FileExistsError):
        generate_key_file(path)


def test_signatures_verify_from_the_public_key_only() -> None:
    signer = Signer.generate()
    signature = signer.sign(b"statement")
    for verifier in (
        Verifier.from_hex(signer.public_key_hex),
        Verifier.from_pem(signer.verifier.public_key_pem()),
    ):
        assert verifier.key_id == signer.key_id
        assert verifier.verify(signature, b"statement")
        assert not verifier.verify(signature, b"statemenT")
        assert not verifier.verify(signature[:-1], b"statement")
        assert verifier.verify_hex(signature.hex(), b"statement")
        assert not verifier.verify_hex(signature.hex().upper(), b"statement")
        assert not verifier.verify_hex("zz" * 64, b"statement")
    assert not Signer.generate().verifier.verify(signature, b"statement")


@pytest.mark.parametrize(
    "content",
    [b"", b"not a key", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"],
)
def test_unusable_key_files_are_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pem"
    path.write_bytes(content)
    with pytest.raises(KeyFileError):
        load_signer(path)
    with pytest.raises(KeyFileError, match="cannot read"):
        load_signer(tmp_path / "missing.pem")


def test_other_key_types_are_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "ec.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(KeyFileError, match="not an Ed25519 key"):
        load_signer(path)
    with pytest.raises(ValueError):
        Verifier.from_hex("00" * 31)
