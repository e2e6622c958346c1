"""Entra ID on the Graph simulator, driven by the real msal and a real TLS client."""

from __future__ import annotations

import ssl
import time

import httpx
import msal
import pytest

from sandbox.graph_sim import GraphSimulator
from tests.fixtures.graph import (
    GRAPH_APP,
    GRAPH_SCOPE,
    GRAPH_SECRET,
    fetch_token,
    graph_ssl_context,
    make_app_certificate,
    msal_http_client,
)


def _app(
    sim: GraphSimulator, credential: str | dict[str, str], client_id: str = GRAPH_APP
) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        client_id,
        authority=sim.authority,
        client_credential=credential,
        http_client=msal_http_client(sim),
        instance_discovery=False,  # the sim is not a Microsoft host msal knows
    )


def test_discovery_document_points_msal_at_the_simulator(graph_sim: GraphSimulator) -> None:
    url = f"{graph_sim.authority}/v2.0/.well-known/openid-configuration"
    document = httpx.get(url, verify=graph_ssl_context(graph_sim)).json()

    assert document["token_endpoint"] == f"{graph_sim.authority}/oauth2/v2.0/token"
    assert document["issuer"] == f"{graph_sim.authority}/v2.0"
    assert document["authorization_endpoint"].startswith(graph_sim.authority)
    keys = httpx.get(document["jwks_uri"], verify=graph_ssl_context(graph_sim)).json()["keys"]
    assert keys[0]["kty"] == "RSA"


@pytest.mark.parametrize("settings", [{"instance_discovery": False}, {"validate_authority": False}])
def test_msal_gets_a_token_with_a_secret(
    graph_sim: GraphSimulator, settings: dict[str, bool]
) -> None:
    graph_sim.add_app(GRAPH_APP, secret=GRAPH_SECRET)
    app = msal.ConfidentialClientApplication(
        GRAPH_APP,
        authority=graph_sim.authority,
        client_credential=GRAPH_SECRET,
        http_client=msal_http_client(graph_sim),
        **settings,
    )

    result = app.acquire_token_for_client(scopes=[GRAPH_SCOPE])

    assert result["token_type"] == "Bearer" and result["expires_in"] == 3600
    me = httpx.get(
        f"{graph_sim.graph_url}/users/ingen@firma.no",
        headers={"Authorization": f"Bearer {result['access_token']}"},
        verify=graph_ssl_context(graph_sim),
    )
    assert me.status_code == 404  # authenticated; the mailbox just does not exist
    assert me.json()["error"]["code"] == "ErrorInvalidUser"
    assert graph_sim.counters["tokens"] == 1


@pytest.mark.parametrize("with_thumbprint", [True, False], ids=["RS256-x5t", "PS256-x5t#S256"])
def test_msal_gets_a_token_with_a_certificate(
    graph_sim: GraphSimulator, with_thumbprint: bool
) -> None:
    cert_pem, key_pem, thumbprint = make_app_certificate()
    graph_sim.add_app(GRAPH_APP, certificate_pem=cert_pem)
    credential = (
        {"private_key": key_pem.decode(), "thumbprint": thumbprint}
        if with_thumbprint
        else {"private_key": key_pem.decode(), "public_certificate": cert_pem.decode()}
    )

    result = _app(graph_sim, credential).acquire_token_for_client(
        scopes=[f"{graph_sim.url}/.default"]
    )

    assert "access_token" in result, result.get("error_description")


def test_a_wrong_secret_is_refused_the_way_entra_refuses_it(graph_sim: GraphSimulator) -> None:
    graph_sim.add_app(GRAPH_APP, secret=GRAPH_SECRET)

    result = _app(graph_sim, "not-the-secret").acquire_token_for_client(scopes=[GRAPH_SCOPE])

    assert result["error"] == "invalid_client"
    assert result["error_description"].startswith("AADSTS7000215: Invalid client secret")
    assert result["error_codes"] == [7000215]
    assert graph_sim.counters["auth_failures"] == 1


def test_a_certificate_the_app_does_not_have_is_refused(graph_sim: GraphSimulator) -> None:
    registered, _, _ = make_app_certificate()
    _, other_key, other_thumbprint = make_app_certificate()
    graph_sim.add_app(GRAPH_APP, certificate_pem=registered)

    result = _app(
        graph_sim, {"private_key": other_key.decode(), "thumbprint": other_thumbprint}
    ).acquire_token_for_client(scopes=[GRAPH_SCOPE])

    assert result["error"] == "invalid_client"
    assert result["error_description"].startswith("AADSTS700027")


def test_a_key_that_does_not_match_the_registered_thumbprint_fails_the_signature(
    graph_sim: GraphSimulator,
) -> None:
    registered, _, thumbprint = make_app_certificate()
    _, other_key, _ = make_app_certificate()
    graph_sim.add_app(GRAPH_APP, certificate_pem=registered)

    result = _app(
        graph_sim, {"private_key": other_key.decode(), "thumbprint": thumbprint}
    ).acquire_token_for_client(scopes=[GRAPH_SCOPE])

    assert result["error"] == "invalid_client"
    assert "signature validation" in result["error_description"]


def test_unknown_client_bad_scope_and_wrong_tenant(graph_sim: GraphSimulator) -> None:
    graph_sim.add_app(GRAPH_APP, secret=GRAPH_SECRET)
    unknown = _app(graph_sim, "x", client_id="ukjent").acquire_token_for_client(
        scopes=[GRAPH_SCOPE]
    )
    bad_scope = _app(graph_sim, GRAPH_SECRET).acquire_token_for_client(
        scopes=["https://graph.microsoft.com/Mail.Read"]
    )
    wrong_tenant = httpx.post(
        f"{graph_sim.url}/annen-tenant/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "client_id": GRAPH_APP},
        verify=graph_ssl_context(graph_sim),
    )

    assert unknown["error"] == "unauthorized_client"
    assert "AADSTS700016" in unknown["error_description"]
    assert bad_scope["error"] == "invalid_scope"
    assert wrong_tenant.status_code == 400 and "AADSTS90002" in wrong_tenant.text


def test_graph_wants_a_valid_unexpired_token() -> None:
    # A lifetime long enough for the first three calls on a busy machine (with 1 s, a
    # loaded CI machine saw the fresh token expire before the first call).
    with GraphSimulator(token_ttl_seconds=4) as sim:
        sim.add_app(GRAPH_APP, secret=GRAPH_SECRET)
        sim.add_mailbox("sentral@firma.no")
        token = fetch_token(sim)
        with httpx.Client(base_url=sim.graph_url, verify=graph_ssl_context(sim)) as client:
            url = "/users/sentral@firma.no/mailFolders/inbox"
            missing = client.get(url)
            forged = client.get(url, headers={"Authorization": "Bearer abc.def.ghi"})
            fine = client.get(url, headers={"Authorization": f"Bearer {token}"})
            time.sleep(4.05)
            expired = client.get(url, headers={"Authorization": f"Bearer {token}"})

    assert fine.status_code == 200
    for response in (missing, forged, expired):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "InvalidAuthenticationToken"
        assert "WWW-Authenticate" in response.headers
    assert "expired" in expired.json()["error"]["message"]


def test_revoked_tokens_are_refused(graph_sim: GraphSimulator, graph_client: httpx.Client) -> None:
    graph_sim.add_mailbox("sentral@firma.no")
    assert graph_client.get("/users/sentral@firma.no").status_code == 200

    graph_sim.revoke_access_tokens()

    assert graph_client.get("/users/sentral@firma.no").status_code == 401


def test_a_client_without_the_ca_fails_verification(graph_sim: GraphSimulator) -> None:
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(graph_sim.authority + "/v2.0/.well-known/openid-configuration")
    with pytest.raises(httpx.ConnectError):
        httpx.get(graph_sim.url, verify=ssl.create_default_context())

    for _ in range(200):  # the failed handshakes are counted by the handler threads
        if graph_sim.counters["tls_failures"] >= 2:
            break
        time.sleep(0.01)
    assert graph_sim.counters["tls_failures"] >= 2


@pytest.mark.parametrize("http2", [True, False])
def test_the_certificate_is_valid_for_localhost_and_both_http_versions_are_served(
    graph_sim: GraphSimulator, http2: bool
) -> None:
    localhost = graph_sim.url.replace("127.0.0.1", "localhost")
    with httpx.Client(verify=graph_ssl_context(graph_sim), http2=http2) as client:
        response = client.get(
            f"{localhost}/{graph_sim.tenant_id}/v2.0/.well-known/openid-configuration"
        )

    assert response.status_code == 200
    assert response.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
    assert response.headers["request-id"] and response.json()["issuer"]
