"""Outlook through Microsoft Graph: contacts as a directory, mail as erasable data."""

from __future__ import annotations

from connectors.outlook.auth import Certificate, TokenProvider, load_certificate
from connectors.outlook.connector import OutlookConnector
from connectors.outlook.directory import ContactDirectory
from connectors.outlook.graph import GraphClient
from connectors.outlook.mail import MailStore
from connectors.outlook.mapping import FIELDS, MARKER, from_contact, project
from connectors.outlook.matching import SubjectMatcher
from connectors.outlook.settings import OutlookBinding, OutlookSettings
from connectors.outlook.wire import BatchItem, ItemResponse, NotSent, ResyncRequired, Throttled

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
