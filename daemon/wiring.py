"""Builds the connectors named in the config; the one place that knows every backend."""

from __future__ import annotations

from contextlib import AsyncExitStack

from connectors.base import Connector
from connectors.firestore.connector import FirestoreConnector
from connectors.outlook import OutlookConnector
from connectors.zisson.connector import ZissonConnector
from daemon.config import Settings
from daemon.erasure import DirectoryEraser, Eraser, OutlookEraser
from daemon.store import Store
from daemon.token_vault import StoreTokenVault


async def open_connectors(
    settings: Settings, stack: AsyncExitStack, *, store: Store | None = None
) -> dict[str, Connector]:
    """One connector per configured system, closed when `stack` closes.

    With `store`, rotating tokens (Zisson's JSON API) are kept in it, encrypted and
    shared by every instance on it; without, in each binding's token file, which suits
    one process only.
    """
    connectors: dict[str, Connector] = {}
    if settings.systems.firestore is not None:
        connectors["firestore"] = FirestoreConnector(settings.systems.firestore)
    if settings.systems.zisson is not None:
        vault = StoreTokenVault(store) if store is not None else None
        connectors["zisson"] = ZissonConnector(settings.systems.zisson, vault=vault)
    if settings.systems.outlook is not None:
        connectors["outlook"] = OutlookConnector(settings.systems.outlook)
    for connector in connectors.values():
        stack.push_async_callback(connector.aclose)
    return connectors


def erasers_for(connectors: dict[str, Connector]) -> dict[str, Eraser]:
    """How each system is erased: through its directory, plus what only it holds."""
    erasers: dict[str, Eraser] = {}
    for system, connector in connectors.items():
        if isinstance(connector, OutlookConnector):
            erasers[system] = OutlookEraser(connector)
        elif isinstance(connector, FirestoreConnector):
            erasers[system] = DirectoryEraser(
                connector,
                has_card=connector.has_card,
                delete_card=connector.delete_card,
            )
        else:
            erasers[system] = DirectoryEraser(connector)
    return erasers
