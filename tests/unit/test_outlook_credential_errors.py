"""A credential msal refuses is reported as such, not as a failed OIDC discovery (issue
11, item 4): msal's constructor does discovery first and checks the credential after,
and both raise ValueError."""

from __future__ import annotations

from connectors.outlook import OutlookSettings, TokenProvider
from connectors.outlook.auth import _discovery_failed

SETTINGS = {"tenant_id": "contoso.onmicrosoft.com", "client_id": "app-1"}


def test_msals_credential_complaints_name_the_certificate_not_the_tenant() -> None:
    provider = TokenProvider(
        OutlookSettings.model_validate({**SETTINGS, "certificate_file": "/etc/pdsync/app.pem"})
    )
    # msal < 1.35, given a certificate without a thumbprint:
    refused = ValueError(
        "You must provide either 'thumbprint' or 'public_certificate' from which the "
        "thumbprint can be calculated."
    )
    assert not _discovery_failed(refused)
    message = str(provider._unusable_credential(refused))
    assert "msal cannot use the certificate" in message and "/etc/pdsync/app.pem" in message
    assert "thumbprint" in message
    assert "OIDC" not in message and "tenant_id" not in message


def test_a_failed_discovery_is_still_told_apart() -> None:
    discovery = ValueError(
        "Unable to get authority configuration for https://login.example/t. Authority "
        "would typically be in a format of https://login.microsoftonline.com/your_tenant"
    )
    assert _discovery_failed(discovery)
