"""Certificate loading and how a refused token request is reported (no network)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from connectors.base import AuthError, FatalError, RetriableError
from connectors.outlook import OutlookSettings, TokenProvider, load_certificate
from tests.fixtures.graph import make_app_certificate


@pytest.fixture(scope="module")
def app_certificate() -> tuple[bytes, bytes, str]:
    return make_app_certificate()


def test_pem_with_key_and_certificate(
    tmp_path: Path, app_certificate: tuple[bytes, bytes, str]
) -> None:
    cert, key, sha1 = app_certificate
    path = tmp_path / "app.pem"
    path.write_bytes(key + cert)
    loaded = load_certificate(path, None)
    assert loaded.thumbprint == sha1.upper()
    assert loaded.certificate_pem.encode() == cert
    assert "PRIVATE KEY" in loaded.private_key_pem


def test_pfx_with_password(tmp_path: Path, app_certificate: tuple[bytes, bytes, str]) -> None:
    cert_pem, key_pem, sha1 = app_certificate
    key = serialization.load_pem_private_key(key_pem, None)
    assert isinstance(key, rsa.RSAPrivateKey)
    cert = x509.load_pem_x509_certificate(cert_pem)
    path = tmp_path / "app.pfx"
    path.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"app", key, cert, None, serialization.BestAvailableEncryption("pfx-pass-æøå".encode())
        )
    )
    loaded = load_certificate(path, "pfx-pass-æøå")
    assert loaded.thumbprint == sha1.upper()
    assert loaded.sha256_thumbprint == cert.fingerprint(hashes.SHA256()).hex().upper()
    with pytest.raises(FatalError) as caught:
        load_certificate(path, "wrong-pass-1234")
    assert "wrong or missing certificate_password" in str(caught.value)
    assert "wrong-pass-1234" not in str(caught.value)


def test_a_file_without_its_key_or_unreadable_is_named(
    tmp_path: Path, app_certificate: tuple[bytes, bytes, str]
) -> None:
    cert, _, _ = app_certificate
    only_cert = tmp_path / "cert.pem"
    only_cert.write_bytes(cert)
    with pytest.raises(FatalError, match=r"cert\.pem cannot be loaded"):
        load_certificate(only_cert, None)
    with pytest.raises(FatalError, match=r"missing.pem cannot be read"):
        load_certificate(tmp_path / "missing.pem", None)


def provider() -> TokenProvider:
    settings = OutlookSettings.model_validate(
        {"tenant_id": "contoso-tenant", "client_id": "app-42", "client_secret": {"env": "X"}}
    )
    return TokenProvider(settings)


def test_a_refusal_names_tenant_client_and_aadsts_code_only() -> None:
    result = {
        "error": "invalid_client",
        "error_description": "AADSTS7000215: Invalid client secret provided. s3cr3t-value\r\n"
        "Trace ID: 1",
        "error_codes": [7000215],
    }
    error = provider()._refused(result)
    assert isinstance(error, AuthError)
    assert str(error) == (
        "outlook: Entra ID refused a token for tenant contoso-tenant, client app-42: "
        "invalid_client (AADSTS7000215: the client secret is wrong)"
    )
    from_text = provider()._refused(
        {"error": "unauthorized_client", "error_description": "AADSTS700016: x"}
    )
    assert "AADSTS700016: no application with this client id" in str(from_text)
    transient = provider()._refused({"error": "temporarily_unavailable", "error_codes": [50196]})
    assert isinstance(transient, RetriableError) and "AADSTS50196" in str(transient)
