"""ZissonSettings and ZissonBinding: validation, clear messages, no secrets in fields."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from connectors.secrets import SecretRef
from connectors.zisson import ZissonBinding, ZissonSettings


def test_settings_defaults() -> None:
    settings = ZissonSettings(base_url="https://app2.zisson.com")
    assert settings.write_mode == "manual"
    assert (settings.timeout_seconds, settings.concurrency, settings.page_size) == (30, 4, 200)
    assert settings.ca_bundle is None


def test_settings_refuse_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ValidationError, match="extra"):
        ZissonSettings(base_url="https://x", password="hunter2")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        ZissonSettings(base_url="https://x", write_mode="auto")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        ZissonSettings(base_url="https://x", concurrency=0)


def test_json_binding(tmp_path: Path) -> None:
    binding = ZissonBinding(
        user_id="api-1", customer_guid="guid-1", refresh_token_file=tmp_path / "rt"
    )
    assert binding.api == "json"
    assert binding.account == "json:guid-1"


def test_xml_binding_account_label_hides_the_username() -> None:
    binding = ZissonBinding(
        api="xml", username="kari@kunde.no", password=SecretRef(env="ZISSON_PW")
    )
    assert binding.account.startswith("xml:")
    assert "kari" not in binding.account


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"api": "json", "user_id": "u"}, "api = 'json' needs customer_guid, refresh_token_file"),
        (
            {"user_id": "u", "refresh_token_file": "/tmp/rt"},
            "api = 'json' needs customer_guid",
        ),
        ({"api": "xml", "username": "u"}, "api = 'xml' needs password"),
        ({"api": "xml"}, "api = 'xml' needs username, password"),
        (
            {
                "api": "xml",
                "username": "u",
                "password": {"env": "X"},
                "customer_guid": "g",
            },
            "api = 'xml' does not use customer_guid",
        ),
    ],
)
def test_binding_names_what_the_chosen_api_is_missing(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        ZissonBinding.model_validate(fields)
    assert message in str(caught.value)


def test_binding_refuses_a_password_in_clear() -> None:
    with pytest.raises(ValidationError):
        ZissonBinding.model_validate({"api": "xml", "username": "u", "password": "hunter2"})
    with pytest.raises(ValidationError, match="extra"):
        ZissonBinding.model_validate(
            {"user_id": "u", "customer_guid": "g", "refresh_token_file": "/x", "refresh_token": "t"}
        )


def test_a_binding_holds_no_secret_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZISSON_PW", "the-real-password")
    binding = ZissonBinding(api="xml", username="u", password=SecretRef(env="ZISSON_PW"))
    assert "the-real-password" not in binding.model_dump_json()
    assert "the-real-password" not in repr(binding)
