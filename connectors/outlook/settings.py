"""Configuration of the Outlook connector: one `OutlookSettings`, one `OutlookBinding` per customer.

Neither model holds a secret: the client secret and the certificate's password are
`SecretRef`s, the certificate a file path. Exactly one way to authenticate is given; a
certificate is preferred (Microsoft's advice for daemons), a secret allowed.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from connectors.secrets import SecretRef

# Graph's service limits for Outlook resources, per app and mailbox.
GRAPH_MAILBOX_CONCURRENCY = 4
GRAPH_BATCH_LIMIT = 20
# The most hits one `$search` on messages returns. Microsoft's pages disagree: the
# $search page (https://learn.microsoft.com/en-us/graph/search-query-parameter) names
# 1,000, older pages and client libraries 250. A cap set higher than the real one would
# leave mail unerased (and a verification by the same query blind to it), so 250 by
# default: a search that returns that many is distrusted and the area listed instead.
GRAPH_SEARCH_CAP = 250

_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]*$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")


def _https_url(value: str, field: str) -> str:
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"{field} must be an https:// URL")
    if parts.query or parts.fragment:
        raise ValueError(f"{field} must not have a query or fragment")
    return value.rstrip("/")


class OutlookSettings(BaseModel):
    """How to reach one Entra tenant and Microsoft Graph as one app registration.

    `authority_host` and `graph_url` default to Microsoft's global cloud; the sandbox
    points them at its simulator (and `ca_bundle` at its CA). The limits say how hard
    the connector may push one mailbox: at most `mailbox_concurrency` requests in flight
    and `request_budget` requests (each $batch item counts) per `budget_window_seconds`,
    Graph's documented Outlook limits by default. `search_cap` is the most hits Graph
    returns for one `$search` (conservatively 250, see GRAPH_SEARCH_CAP); a query that
    reaches it is treated as cut short, and the area is listed and matched here.
    `http2` (on by default) lets httpx offer HTTP/2, which Graph and the sandbox's
    simulator serve; where a server offers only HTTP/1.1, httpx falls back to it.
    """

    # A secret pasted where a SecretRef belongs must not come back in the error text.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    tenant_id: str = Field(min_length=1)
    client_id: str = Field(min_length=1)
    authority_host: str = "https://login.microsoftonline.com"
    graph_url: str = "https://graph.microsoft.com/v1.0"
    client_secret: SecretRef | None = None
    certificate_file: Path | None = None  # PEM with the private key, or PFX/PKCS#12
    certificate_password: SecretRef | None = None
    ca_bundle: Path | None = None
    mailbox_concurrency: int = Field(default=GRAPH_MAILBOX_CONCURRENCY, ge=1, le=16)
    request_budget: int = Field(default=10_000, ge=1)
    budget_window_seconds: float = Field(default=600.0, gt=0)
    batch_size: int = Field(default=GRAPH_BATCH_LIMIT, ge=1, le=GRAPH_BATCH_LIMIT)
    http2: bool = True
    timeout_seconds: float = Field(default=30.0, gt=0)
    page_size: int = Field(default=100, ge=1, le=1000)
    search_cap: int = Field(default=GRAPH_SEARCH_CAP, ge=1)

    @field_validator("tenant_id")
    @classmethod
    def _tenant(cls, value: str) -> str:
        if not _TENANT.match(value):
            raise ValueError("must be a tenant GUID or domain name (letters, digits, '.', '-')")
        return value

    @field_validator("client_id")
    @classmethod
    def _client(cls, value: str) -> str:
        if value != value.strip() or any(ch.isspace() or ch == "/" for ch in value):
            raise ValueError("must be the application (client) id, without spaces or '/'")
        return value

    @field_validator("authority_host")
    @classmethod
    def _authority_host(cls, value: str) -> str:
        return _https_url(value, "authority_host")

    @field_validator("graph_url")
    @classmethod
    def _graph_url(cls, value: str) -> str:
        return _https_url(value, "graph_url")

    @model_validator(mode="after")
    def _one_credential(self) -> OutlookSettings:
        if self.client_secret is None and self.certificate_file is None:
            raise ValueError("give a credential: certificate_file (preferred) or client_secret")
        if self.client_secret is not None and self.certificate_file is not None:
            raise ValueError(
                "give exactly one credential: certificate_file or client_secret, not both"
            )
        if self.certificate_password is not None and self.certificate_file is None:
            raise ValueError("certificate_password is only used with certificate_file")
        return self

    @property
    def authority(self) -> str:
        """The tenant's authority URL, as msal wants it."""
        return f"{self.authority_host}/{self.tenant_id}"

    @property
    def scope(self) -> str:
        """The client-credentials scope: every application permission granted to Graph.

        Derived from `graph_url`, so national clouds (graph.microsoft.us, ...) and the
        simulator get their own resource.
        """
        parts = urlsplit(self.graph_url)
        return f"{parts.scheme}://{parts.netloc}/.default"


class OutlookBinding(BaseModel):
    """Where one customer lives in Outlook.

    `mailbox` is the service mailbox (UPN) holding the customer's mail and contacts;
    `contact_folder` the display name of the customer's contact folder in it (created
    when missing). `mail_folders` are folders that belong to this customer alone and are
    erased whole when the contract ends; `domains` the customer's e-mail domains (mail
    from or to them anywhere in the mailbox is the customer's too). `retention_days`
    maps a folder's display name or well-known name ("inbox", "sentitems", ...) to the
    days its mail is kept.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mailbox: str
    contact_folder: str = Field(min_length=1)
    mail_folders: tuple[str, ...] = ()
    domains: tuple[str, ...]
    retention_days: dict[str, int] = Field(default_factory=dict)

    @field_validator("mailbox")
    @classmethod
    def _upn(cls, value: str) -> str:
        local, at, domain = value.partition("@")
        if (
            not at
            or not local
            or "." not in domain
            or any(ch.isspace() or ch in "/?#'\"" for ch in value)
        ):
            raise ValueError("must be the mailbox's user principal name, e.g. svc@example.no")
        return value

    @field_validator("contact_folder")
    @classmethod
    def _folder_name(cls, value: str) -> str:
        if value != value.strip():
            raise ValueError("must not start or end with white space")
        return value

    @field_validator("mail_folders")
    @classmethod
    def _folder_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for index, name in enumerate(value):
            if not name or name != name.strip():
                raise ValueError(f"[{index}] must be a folder name without surrounding spaces")
        return value

    @field_validator("domains")
    @classmethod
    def _domains(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        cleaned: list[str] = []
        for index, domain in enumerate(value):
            candidate = domain.strip().lstrip("@").lower()
            if not _DOMAIN.match(candidate):
                raise ValueError(f"[{index}] is not a domain name like example.no")
            cleaned.append(candidate)
        return tuple(dict.fromkeys(cleaned))

    @field_validator("retention_days")
    @classmethod
    def _days(cls, value: dict[str, int]) -> dict[str, int]:
        for folder, days in value.items():
            if not folder.strip():
                raise ValueError("folder names must not be empty")
            if days < 1:
                raise ValueError(f"{folder!r}: must be at least 1 day")
        return value

    @property
    def scope(self) -> str:
        """The quota scope: Graph's Outlook limits apply per app and mailbox."""
        return self.mailbox.casefold()

    @property
    def label(self) -> str:
        """The mailbox as a log label (a digest: a UPN is an e-mail address)."""
        return "mbx:" + hashlib.sha256(self.scope.encode()).hexdigest()[:12]
