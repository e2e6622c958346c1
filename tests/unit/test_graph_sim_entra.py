"""The simulated Entra ID's checks of client assertions and secrets, without HTTP."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from sandbox.graph.entra import ASSERTION_TYPE, Entra
from sandbox.graph.errors import EntraError, GraphError
from tests.fixtures.graph import make_app_certificate

CLIENT = "app-1"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def assertion(key_pem: bytes, cert_pem: bytes, **overrides: Any) -> str:
    entra_endpoint = "https://sim/tenant/oauth2/v2.0/token"
    now = int(time.time())
    claims = {"aud": entra_endpoint, "iss": CLIENT, "sub": CLIENT, "exp": now + 600, "nbf": now}
    claims.update(overrides)
    certificate = x509.load_pem_x509_certificate(cert_pem)
    header = {"alg": "RS256", "typ": "JWT", "x5t": b64(certificate.fingerprint(hashes.SHA1()))}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    key = serialization.load_pem_private_key(key_pem, password=None)
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr, call-arg, arg-type]
    return f"{signing_input}.{b64(signature)}"


@pytest.fixture(scope="module")
def app_keys() -> tuple[bytes, bytes, str]:
    return make_app_certificate()


@pytest.fixture
def entra(app_keys: tuple[bytes, bytes, str]) -> Entra:
    entra = Entra("tenant", token_ttl_seconds=60)
    entra.base_url = "https://sim"
    entra.add_app(CLIENT, secret="hemmelig ø+/", certificate_pem=app_keys[0])
    return entra


def form(**fields: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_id": CLIENT,
        "scope": "https://graph.microsoft.com/.default",
        **fields,
    }


def test_a_valid_assertion_gets_a_token_graph_accepts(
    entra: Entra, app_keys: tuple[bytes, bytes, str]
) -> None:
    token = entra.issue(
        form(
            client_assertion_type=ASSERTION_TYPE,
            client_assertion=assertion(app_keys[1], app_keys[0]),
        ),
        None,
    )
    assert entra.authenticate(f"Bearer {token['access_token']}") == CLIENT


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"exp": int(time.time()) - 3600}, 700024),
        ({"nbf": int(time.time()) + 3600}, 700024),
        ({"aud": "https://login.microsoftonline.com/tenant/oauth2/v2.0/token"}, 50013),
        ({"iss": "someone-else"}, 700023),
    ],
)
def test_bad_assertions(
    entra: Entra, app_keys: tuple[bytes, bytes, str], overrides: dict[str, Any], code: int
) -> None:
    with pytest.raises(EntraError) as raised:
        entra.issue(
            form(
                client_assertion_type=ASSERTION_TYPE,
                client_assertion=assertion(app_keys[1], app_keys[0], **overrides),
            ),
            None,
        )
    assert (raised.value.status, raised.value.error, raised.value.aadsts) == (
        401,
        "invalid_client",
        code,
    )


def test_malformed_assertion_and_wrong_assertion_type(entra: Entra) -> None:
    with pytest.raises(EntraError) as malformed:
        entra.issue(form(client_assertion_type=ASSERTION_TYPE, client_assertion="a.b"), None)
    with pytest.raises(EntraError) as wrong_type:
        entra.issue(form(client_assertion_type="saml", client_assertion="a.b.c"), None)
    assert malformed.value.aadsts == 50027
    assert wrong_type.value.aadsts == 700021


def test_secrets_in_the_body_or_as_http_basic(entra: Entra) -> None:
    basic = base64.b64encode(b"app-1:hemmelig+%C3%B8%2B%2F").decode()  # form-encoded, RFC 6749
    assert "access_token" in entra.issue(form(client_secret="hemmelig ø+/"), None)
    assert "access_token" in entra.issue(form(), f"Basic {basic}")
    with pytest.raises(EntraError) as raised:
        entra.issue(form(client_secret="hemmelig"), None)
    assert raised.value.aadsts == 7000215


def test_other_grants_and_missing_credentials(entra: Entra) -> None:
    with pytest.raises(EntraError) as grant:
        entra.issue(form(grant_type="password"), None)
    with pytest.raises(EntraError) as nothing:
        entra.issue(form(), None)
    assert grant.value.error == "unsupported_grant_type"
    assert nothing.value.error == "invalid_client"


def test_graph_refuses_what_entra_did_not_issue(entra: Entra) -> None:
    for header in (None, "Basic abc", "Bearer ", "Bearer forged"):
        with pytest.raises(GraphError) as raised:
            entra.authenticate(header)
        assert raised.value.status == 401
