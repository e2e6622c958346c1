"""Zisson, the telephony directory: the XML and JSON read APIs and an assumed write API.

Its names are imported on first use (connectors/lazy.py): the config reads settings.py
alone, without the connector and its API clients."""

from __future__ import annotations

from typing import TYPE_CHECKING

from connectors.lazy import lazy_exports

if TYPE_CHECKING:
    from connectors.zisson.connector import ZissonApiView, ZissonConnector
    from connectors.zisson.settings import ZissonApi, ZissonBinding, ZissonSettings

__all__ = ["ZissonApi", "ZissonApiView", "ZissonBinding", "ZissonConnector", "ZissonSettings"]

# Not seen by mypy: a module __getattr__ would let it pass any name as Any.
if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "ZissonApiView": "connector",
            "ZissonConnector": "connector",
            "ZissonApi": "settings",
            "ZissonBinding": "settings",
            "ZissonSettings": "settings",
        },
    )
