"""Builds the connectors named in the config; the one place that knows every backend.

Each backend is imported only when the config names its system: a deployment without
Firestore never loads google-cloud-firestore and grpc, one without Outlook neither msal
nor requests."""

from __future__ import annotations

from contextlib import AsyncExitStack

from connectors.base import Connector
from daemon.config import Settings
from daemon.erasure import DirectoryEraser, Eraser, OutlookEraser
from daemon.store import Store

# The systems whose connector has Capability.RETENTION (a class attribute of each; a test
# holds the two together), known without importing a backend.
RETENTION_SYSTEMS = frozenset({"firestore", "outlook"})


def configured_systems(settings: Settings) -> list[str]:
    """The systems the config names, as open_connectors would open them."""
    return sorted(settings.systems.model_dump(exclude_none=True))


def retention_capable(settings: Settings) -> set[str]:
    """The configured systems that run retention rules."""
    return set(configured_systems(settings)) & RETENTION_SYSTEMS


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
        from connectors.firestore.connector import FirestoreConnector

        connectors["firestore"] = FirestoreConnector(settings.systems.firestore)
    if settings.systems.zisson is not None:
        from connectors.zisson.connector import ZissonConnector
        from daemon.token_vault import StoreTokenVault

        vault = StoreTokenVault(store) if store is not None else None
        connectors["zisson"] = ZissonConnector(settings.systems.zisson, vault=vault)
    if settings.systems.outlook is not None:
        from connectors.outlook.connector import OutlookConnector

        connectors["outlook"] = OutlookConnector(settings.systems.outlook)
    for connector in connectors.values():
        stack.push_async_callback(connector.aclose)
    return connectors


def erasers_for(connectors: dict[str, Connector]) -> dict[str, Eraser]:
    """How each system is erased: through its directory, plus what only it holds."""
    return {system: _eraser(system, connector) for system, connector in connectors.items()}


def _eraser(system: str, connector: Connector) -> Eraser:
    # A backend's class is imported for its own system only (see the module docstring).
    if system == "outlook":
        from connectors.outlook.connector import OutlookConnector

        if isinstance(connector, OutlookConnector):
            return OutlookEraser(connector)
    elif system == "firestore":
        from connectors.firestore.connector import FirestoreConnector

        if isinstance(connector, FirestoreConnector):
            return DirectoryEraser(
                connector, has_card=connector.has_card, delete_card=connector.delete_card
            )
    return DirectoryEraser(connector)
