"""The connector packages import their names on first use (connectors/lazy.py), and
still offer every one of them as before."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = ["connectors.firestore", "connectors.outlook", "connectors.zisson"]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_is_importable_from_the_package(package: str) -> None:
    module = importlib.import_module(package)
    star: dict[str, object] = {}
    exec(f"from {package} import *", star)
    for name in module.__all__:
        assert star[name] is getattr(module, name)
        assert name in dir(module)


@pytest.mark.parametrize("package", PACKAGES)
def test_an_unknown_name_is_an_attribute_error(package: str) -> None:
    module = importlib.import_module(package)
    with pytest.raises(AttributeError, match="no_such_name"):
        module.no_such_name  # noqa: B018
    with pytest.raises(ImportError):
        exec(f"from {package} import no_such_name", {})


def test_a_submodule_is_still_imported_from_its_package() -> None:
    from connectors.outlook import kql
    from connectors.zisson import json_api

    assert kql.__name__ == "connectors.outlook.kql"
    assert json_api.__name__ == "connectors.zisson.json_api"
