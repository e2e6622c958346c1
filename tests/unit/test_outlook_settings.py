"""OutlookSettings and OutlookBinding: one credential, clear messages, no secret values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from connectors.outlook import OutlookBinding, OutlookSettings

BASE: dict[str, Any] = {"tenant_id": "contoso.onmicrosoft.com", "client_id": "app-1"}


def errors(model: type[Any], data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return str(caught.value)


def test_defaults_are_graphs_limits() -> None:
    settings = OutlookSettings.model_validate({**BASE, "certificate_file": "/etc/app.pem"})
    assert settings.mailbox_concurrency == 4
    assert (settings.request_budget, settings.budget_window_seconds) == (10_000, 600)
    assert settings.batch_size == 20 and settings.http2
    assert settings.authority == "https://login.microsoftonline.com/contoso.onmicrosoft.com"
    assert settings.scope == "https://graph.microsoft.com/.default"


def test_exactly_one_credential() -> None:
    assert "give a credential" in errors(OutlookSettings, BASE)
    both = {**BASE, "client_secret": {"env": "S"}, "certificate_file": "/x.pem"}
    assert "exactly one credential" in errors(OutlookSettings, both)
    password_only = {**BASE, "client_secret": {"env": "S"}, "certificate_password": {"env": "P"}}
    assert "certificate_password is only used with certificate_file" in errors(
        OutlookSettings, password_only
    )


def test_a_secret_written_inline_is_refused_without_echoing_it() -> None:
    message = errors(OutlookSettings, {**BASE, "client_secret": "hunter2-very-secret"})
    assert "may not be written in the config file" in message
    assert "hunter2" not in message


def test_limits_and_urls_are_checked() -> None:
    ok = {**BASE, "client_secret": {"env": "S"}}
    assert "less than or equal to 20" in errors(OutlookSettings, {**ok, "batch_size": 21})
    assert "https://" in errors(OutlookSettings, {**ok, "graph_url": "http://graph.local/v1.0"})
    assert "tenant" in errors(OutlookSettings, {**ok, "tenant_id": "a/b"}).lower()
    assert "extra" in errors(OutlookSettings, {**ok, "secret": "x"}).lower()
    sandbox = OutlookSettings.model_validate(
        {
            **ok,
            "graph_url": "https://127.0.0.1:8443/v1.0/",
            "authority_host": "https://127.0.0.1:8443",
        }
    )
    assert sandbox.graph_url == "https://127.0.0.1:8443/v1.0"
    assert sandbox.scope == "https://127.0.0.1:8443/.default"
    assert sandbox.ca_bundle is None and isinstance(Path("."), Path)


def test_binding_normalises_domains_and_checks_the_rest() -> None:
    binding = OutlookBinding.model_validate(
        {
            "mailbox": "svc@we4you.no",
            "contact_folder": "Kunde A",
            "mail_folders": ["Kunde A"],
            "domains": ["@Kunde.NO", "kunde.no", "avd.kunde.no"],
            "retention_days": {"inbox": 90},
        }
    )
    assert binding.domains == ("kunde.no", "avd.kunde.no")
    assert binding.scope == "svc@we4you.no"
    assert binding.label.startswith("mbx:") and "we4you" not in binding.label
    bad: dict[str, Any] = {"mailbox": "svc", "contact_folder": "K", "domains": []}
    assert "user principal name" in errors(OutlookBinding, bad)
    bad = {"mailbox": "svc@we4you.no", "contact_folder": " K", "domains": []}
    assert "white space" in errors(OutlookBinding, bad)
    bad = {"mailbox": "svc@we4you.no", "contact_folder": "K", "domains": ["kunde"]}
    assert "[0] is not a domain name" in errors(OutlookBinding, bad)
    bad = {
        "mailbox": "svc@we4you.no",
        "contact_folder": "K",
        "domains": [],
        "retention_days": {"inbox": 0},
    }
    assert "at least 1 day" in errors(OutlookBinding, bad)
    assert "domains" in errors(OutlookBinding, {"mailbox": "svc@we4you.no", "contact_folder": "K"})
