"""A package's public names, imported on first use (PEP 562).

The connector packages name their connector next to their settings, but the daemon's
config reads `connectors.<system>.settings` on every load: importing the connector
there too would bring in each client stack (google-cloud-firestore and grpc, msal and
requests) for `pdsync --help`, and into a daemon that may never use them.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, sources: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The `__getattr__` and `__dir__` of `package`, whose name X (a key of `sources`) is
    `package.sources[X].X`, imported when first asked for and kept in the package."""

    def __getattr__(name: str) -> Any:
        module = sources.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *sources})

    return __getattr__, __dir__
