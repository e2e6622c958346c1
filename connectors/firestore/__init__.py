"""The Firestore connector: customer cards and their contacts (see connector.py)."""

from __future__ import annotations

from connectors.firestore.connector import FirestoreConnector, IncompleteDeletion, translate_error
from connectors.firestore.mapping import (
    contact_document_id,
    format_version,
    from_document,
    parse_version,
    to_document,
)
from connectors.firestore.settings import FirestoreBinding, FirestoreSettings

__all__ = [
    "FirestoreBinding",
    "FirestoreConnector",
    "FirestoreSettings",
    "IncompleteDeletion",
    "contact_document_id",
    "format_version",
    "from_document",
    "parse_version",
    "to_document",
    "translate_error",
]
