"""Outlook through Microsoft Graph: contacts as a directory, mail as erasable data.

Its names are imported on first use (connectors/lazy.py): the config reads settings.py
alone, without msal, requests and the Graph client."""

from __future__ import annotations

from typing import TYPE_CHECKING

from connectors.lazy import lazy_exports

if TYPE_CHECKING:
    from connectors.outlook.auth import Certificate, TokenProvider, load_certificate
    from connectors.outlook.connector import OutlookConnector
    from connectors.outlook.directory import ContactDirectory
    from connectors.outlook.graph import GraphClient
    from connectors.outlook.mail import MailStore
    from connectors.outlook.mapping import FIELDS, MARKER, from_contact, project
    from connectors.outlook.matching import SubjectMatcher
    from connectors.outlook.settings import OutlookBinding, OutlookSettings
    from connectors.outlook.wire import (
        BatchItem,
        ItemResponse,
        NotSent,
        ResyncRequired,
        Throttled,
    )

__all__ = [
    "FIELDS",
    "MARKER",
    "BatchItem",
    "Certificate",
    "ContactDirectory",
    "GraphClient",
    "ItemResponse",
    "MailStore",
    "NotSent",
    "OutlookBinding",
    "OutlookConnector",
    "OutlookSettings",
    "ResyncRequired",
    "SubjectMatcher",
    "Throttled",
    "TokenProvider",
    "from_contact",
    "load_certificate",
    "project",
]

# Not seen by mypy: a module __getattr__ would let it pass any name as Any.
if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "Certificate": "auth",
            "TokenProvider": "auth",
            "load_certificate": "auth",
            "OutlookConnector": "connector",
            "ContactDirectory": "directory",
            "GraphClient": "graph",
            "MailStore": "mail",
            "FIELDS": "mapping",
            "MARKER": "mapping",
            "from_contact": "mapping",
            "project": "mapping",
            "SubjectMatcher": "matching",
            "OutlookBinding": "settings",
            "OutlookSettings": "settings",
            "BatchItem": "wire",
            "ItemResponse": "wire",
            "NotSent": "wire",
            "ResyncRequired": "wire",
            "Throttled": "wire",
        },
    )
