"""Configuration of the Zisson connector: one `ZissonSettings`, one `ZissonBinding` per customer.

Neither model holds a secret: the XML password is a `SecretRef`; the JSON API's refresh
token is given in `refresh_token_file` and then kept by a token vault (connectors/vault.py).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from connectors.bounds import MAX_RESPONSE_BYTES
from connectors.secrets import SecretRef

ZissonApi = Literal["json", "xml"]

_NEEDS: dict[str, tuple[str, ...]] = {
    "xml": ("username", "password"),
    "json": ("user_id", "customer_guid", "refresh_token_file"),
}


class ZissonSettings(BaseModel):
    """System-level settings, shared by every customer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = Field(min_length=1)
    # "manual" (the default) turns every write into a task for an operator, since no
    # public write API is known; "api" uses the assumed write contract in write_api.py.
    write_mode: Literal["api", "manual"] = "manual"
    timeout_seconds: float = Field(default=30, gt=0)
    ca_bundle: Path | None = None
    concurrency: int = Field(default=4, ge=1)  # requests in flight per Zisson account
    page_size: int = Field(default=200, ge=1, le=1000)
    # One answer (a page, GetContacts) larger than this, decompressed, is refused whole.
    max_response_bytes: int = Field(default=MAX_RESPONSE_BYTES, ge=1024)


class ZissonBinding(BaseModel):
    """One customer's Zisson account and the API it is read through."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api: ZissonApi = "json"
    # api = "xml": HTTP Basic.
    username: str | None = None
    password: SecretRef | None = None
    # api = "json": the refresh-token exchange.
    user_id: str | None = None
    customer_guid: str | None = None
    refresh_token_file: Path | None = Field(
        default=None,
        description=(
            "The account's refresh token, as first provisioned. The daemon and the CLI "
            "import it into pdsync's store on the account's first use and keep the rotated "
            "tokens there (encrypted, shared by every instance); from then on the file is "
            "neither read nor rewritten, and a new token is provisioned with "
            "`pdsync zisson set-token`. A connector used without a store reads the token "
            "from this file and rewrites it (atomically, mode 0600) on every rotation."
        ),
    )

    @model_validator(mode="after")
    def _fields_of_the_chosen_api(self) -> ZissonBinding:
        missing = [name for name in _NEEDS[self.api] if not getattr(self, name)]
        if missing:
            raise ValueError(f"api = {self.api!r} needs {', '.join(missing)}")
        other = "json" if self.api == "xml" else "xml"
        stray = [name for name in _NEEDS[other] if getattr(self, name) is not None]
        if stray:
            # Refused rather than ignored: a half-migrated binding is a mistake worth seeing.
            raise ValueError(f"api = {self.api!r} does not use {', '.join(stray)}")
        return self

    @property
    def account(self) -> str:
        """The Zisson account as a quota scope and log label; no personal data.

        The customer guid for the JSON API; for the XML API a digest of the user name,
        which may be an e-mail address.
        """
        if self.api == "json":
            return f"json:{self.customer_guid}"
        digest = hashlib.sha256((self.username or "").encode()).hexdigest()[:12]
        return f"xml:{digest}"
