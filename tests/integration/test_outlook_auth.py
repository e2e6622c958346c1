"""Tokens from the simulated Entra ID through msal: certificate, secret, and clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from connectors.base import AuthError
from connectors.outlook import OutlookConnector, OutlookSettings
from sandbox.graph_sim import GraphSimulator
from tests.fixtures.graph import make_app_certificate
from tests.integration import test_outlook_harness as harness
from tests.integration.test_outlook_harness import FAST_RETRIES, Connect

# Fixtures shared by the test_outlook_* modules (tests/fixtures/ is another engineer's).
outlook_connect = harness.outlook_connect


async def test_a_certificate_gets_a_token_that_is_reused(
    graph_sim: GraphSimulator, outlook_connect: Connect
) -> None:
    world = outlook_connect(graph_sim, credential="certificate")
    for _ in range(3):
        await world.connector.read(world.customer)
    assert graph_sim.counters["tokens"] == 1  # one msal app, its token kept until expiry
    assert world.connector.tokens.thumbprint is not None


async def test_a_client_secret_gets_a_token(
    graph_sim: GraphSimulator, outlook_connect: Connect
) -> None:
    world = outlook_connect(graph_sim, credential="secret")
    assert (await world.connector.read(world.customer)).records == ()
    assert graph_sim.counters["tokens"] == 1


async def test_a_pfx_certificate_with_a_password(
    graph_sim: GraphSimulator,
    outlook_connect: Connect,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = outlook_connect(graph_sim, credential="secret")
    cert_pem, key_pem, _ = make_app_certificate()
    graph_sim.add_app(world.client_id, certificate_pem=cert_pem)  # now with a certificate
    path = tmp_path / "app.pfx"
    path.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"app",
            serialization.load_pem_private_key(key_pem, None),  # type: ignore[arg-type]
            x509.load_pem_x509_certificate(cert_pem),
            None,
            serialization.BestAvailableEncryption(b"pfx-pass"),
        )
    )
    monkeypatch.setenv("PDSYNC_TEST_PFX_PASSWORD", "pfx-pass")
    settings = OutlookSettings.model_validate(
        {
            **world.connector.settings.model_dump(exclude={"client_secret"}),
            "certificate_file": path,
            "certificate_password": {"env": "PDSYNC_TEST_PFX_PASSWORD"},
        }
    )
    connector = OutlookConnector(settings, retry_policy=FAST_RETRIES)
    try:
        assert (await connector.read(world.customer)).records == ()
    finally:
        await connector.aclose()


async def refused(world_connector: OutlookConnector, customer: object) -> str:
    with pytest.raises(AuthError) as caught:
        await world_connector.read(customer)  # type: ignore[arg-type]
    return str(caught.value)


async def test_a_wrong_secret_is_one_clear_error_without_the_secret(
    graph_sim: GraphSimulator, outlook_connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = outlook_connect(graph_sim, credential="secret")
    variable = world.connector.settings.client_secret
    assert variable is not None and variable.env is not None
    monkeypatch.setenv(variable.env, "not-the-secret-ÆØÅ-4711")
    message = await refused(world.connector, world.customer)
    assert graph_sim.tenant_id in message and world.client_id in message
    assert "AADSTS7000215" in message and "the client secret is wrong" in message
    assert "not-the-secret" not in message and "4711" not in message


async def test_an_unregistered_certificate_and_an_unknown_client(
    graph_sim: GraphSimulator, outlook_connect: Connect
) -> None:
    world = outlook_connect(graph_sim, credential="certificate")
    other_cert, _, _ = make_app_certificate("another-app")
    graph_sim.add_app(world.client_id, certificate_pem=other_cert)  # re-registered: key rotated
    message = await refused(world.connector, world.customer)
    assert "AADSTS700027" in message and world.client_id in message
    assert "PRIVATE KEY" not in message

    stranger = outlook_connect(graph_sim, credential="secret")
    settings = stranger.connector.settings.model_copy(update={"client_id": "no-such-app"})
    connector = OutlookConnector(settings, retry_policy=FAST_RETRIES)
    try:
        message = await refused(connector, stranger.customer)
    finally:
        await connector.aclose()
    assert "AADSTS700016" in message and "client no-such-app" in message


async def test_a_wrong_tenant_is_named(graph_sim: GraphSimulator, outlook_connect: Connect) -> None:
    world = outlook_connect(graph_sim, credential="secret")
    settings = world.connector.settings.model_copy(update={"tenant_id": "wrong-tenant"})
    connector = OutlookConnector(settings, retry_policy=FAST_RETRIES)
    try:
        message = await refused(connector, world.customer)
    finally:
        await connector.aclose()
    assert "tenant wrong-tenant" in message and world.client_id in message
    assert "AADSTS90002" in message


async def test_revoked_tokens_are_replaced_once(
    graph_sim: GraphSimulator, outlook_connect: Connect
) -> None:
    world = outlook_connect(graph_sim, credential="secret")
    await world.connector.read(world.customer)
    graph_sim.revoke_access_tokens()
    await world.connector.read(world.customer)  # 401, a new token, the same call again
    assert graph_sim.counters["tokens"] == 2
