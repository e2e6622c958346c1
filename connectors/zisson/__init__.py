"""Zisson, the telephony directory: the XML and JSON read APIs and an assumed write API."""

from __future__ import annotations

from connectors.zisson.connector import ZissonApiView, ZissonConnector
from connectors.zisson.settings import ZissonApi, ZissonBinding, ZissonSettings

__all__ = ["ZissonApi", "ZissonApiView", "ZissonBinding", "ZissonConnector", "ZissonSettings"]
