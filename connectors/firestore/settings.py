"""Configuration of the Firestore connector: one system-level model, one per-customer binding."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Firestore's rules for a document id, plus no white space at either end (a typo that
# would silently address another document).
_RESERVED_ID = re.compile(r"^__.*__$")


def check_document_id(value: str) -> str:
    if not value or value != value.strip():
        raise ValueError("must be a non-empty id without surrounding white space")
    if "/" in value or value in (".", ".."):
        raise ValueError("must not contain '/' or be '.' or '..'")
    if _RESERVED_ID.match(value):
        raise ValueError("must not have the form __name__ (reserved by Firestore)")
    if len(value.encode()) > 1500:
        raise ValueError("must be at most 1500 bytes")
    return value


class FirestoreSettings(BaseModel):
    """How to reach one Firestore database.

    `emulator_host` ("127.0.0.1:8080") sends every call to Google's emulator with
    anonymous credentials. Otherwise `credentials_file` names a service-account JSON
    key, and without it application default credentials are used (and, as everywhere
    with Google's client, a FIRESTORE_EMULATOR_HOST in the environment still wins).
    `concurrency` bounds the calls in flight to the database; more than `bulk_threshold`
    operations in one `apply` go through a BulkWriter.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    project: str = Field(min_length=1)
    database: str = Field(default="(default)", min_length=1)
    emulator_host: str | None = None
    credentials_file: Path | None = None
    concurrency: int = Field(default=8, ge=1, le=500)
    bulk_threshold: int = Field(default=20, ge=0)

    @field_validator("emulator_host")
    @classmethod
    def _host_and_port(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:8080")
        return value

    @property
    def scope(self) -> str:
        """The quota scope: Firestore limits apply per database."""
        return f"{self.project}/{self.database}"


class FirestoreBinding(BaseModel):
    """Where one customer's card lives: `customers/{customer_id}`.

    `retention_days` (O3): per subcollection of the card (call notes, messages, ...),
    how many days a document is kept after it last changed; the retention schedule
    deletes older ones. The synced `contacts` subcollection is not among them: a
    contact goes when it leaves the card.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    customer_id: str
    retention_days: dict[str, int] = Field(default_factory=dict)

    @field_validator("customer_id")
    @classmethod
    def _document_id(cls, value: str) -> str:
        return check_document_id(value)

    @field_validator("retention_days")
    @classmethod
    def _rules(cls, value: dict[str, int]) -> dict[str, int]:
        for collection, days in value.items():
            try:
                check_document_id(collection)
            except ValueError as exc:
                raise ValueError(f"subcollection {collection!r}: {exc}") from None
            if collection == "contacts":
                raise ValueError(
                    "'contacts' is the synced directory: a contact is deleted when it leaves"
                    " the card, not by age"
                )
            if days < 1:
                raise ValueError(f"subcollection {collection!r}: days must be at least 1")
        return value
