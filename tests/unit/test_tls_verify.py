"""A CA bundle the config names but that cannot be loaded stops a connector at once,
naming the system and the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.base import FatalError
from connectors.outlook import OutlookConnector, OutlookSettings
from connectors.zisson import ZissonSettings
from connectors.zisson.connector import ZissonConnector


@pytest.mark.parametrize("content", [None, "not a certificate"])
def test_a_bad_ca_bundle_is_named(tmp_path: Path, content: str | None) -> None:
    bundle = tmp_path / "ca.pem"
    if content is not None:
        bundle.write_text(content)
    outlook = OutlookSettings.model_validate(
        {"tenant_id": "t", "client_id": "c", "client_secret": {"env": "U"}, "ca_bundle": bundle}
    )
    with pytest.raises(FatalError, match=rf"^outlook: ca_bundle {bundle} cannot be loaded"):
        OutlookConnector(outlook)
    zisson = ZissonSettings(base_url="https://zisson.example", ca_bundle=bundle)
    with pytest.raises(FatalError, match=rf"^zisson: ca_bundle {bundle} cannot be loaded"):
        ZissonConnector(zisson)
