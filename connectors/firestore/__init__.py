"""The Firestore connector: customer cards and their contacts (see connector.py).

Its names are imported on first use (connectors/lazy.py): the config reads settings.py
alone, without google-cloud-firestore and grpc."""

from __future__ import annotations

from typing import TYPE_CHECKING

from connectors.lazy import lazy_exports

if TYPE_CHECKING:
    from connectors.firestore.connector import (
        FirestoreConnector,
        IncompleteDeletion,
        translate_error,
    )
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

# Not seen by mypy: a module __getattr__ would let it pass any name as Any.
if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "FirestoreConnector": "connector",
            "IncompleteDeletion": "connector",
            "translate_error": "connector",
            "contact_document_id": "mapping",
            "format_version": "mapping",
            "from_document": "mapping",
            "parse_version": "mapping",
            "to_document": "mapping",
            "FirestoreBinding": "settings",
            "FirestoreSettings": "settings",
        },
    )
