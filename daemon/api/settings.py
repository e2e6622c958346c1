"""The `[api]` section of the config file.

    [api]
    listen = "127.0.0.1:8787"   # absent: no HTTP server (the default)
    metrics_public = true       # /metrics without a token (aggregates only, no personal data)
    cookie_secure = false       # true when a TLS-terminating proxy sits in front
    session_hours = 12          # a dashboard sign-in lasts this long (or until sign-out)
    audit_retention_days = 90   # audit records older than this are deleted, daily
    auth_failures_burst = 10    # failed authentications a client may make in a row,
    auth_failures_per_minute = 10  # and then this many a minute; beyond: 429
    trusted_proxies = []        # proxies (addresses or networks) whose X-Forwarded-For
                                # names the client; none: the client is the TCP peer

Kept free of FastAPI so daemon/config.py can import it.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ApiConfig(BaseModel):
    """Where the admin API listens, and its few switches."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # HOST:PORT; None keeps the API off. Loopback by default: put a TLS proxy in front
    # to expose it (tokens travel in the Authorization header).
    listen: str | None = None
    # Prometheus scrapes without credentials; false makes /metrics need an auditor token.
    metrics_public: bool = True
    # The dashboard's login cookie gets the Secure flag (only sent over HTTPS).
    cookie_secure: bool = False
    # How long a dashboard session lasts (kept in the store; ended by signing out, and
    # with its token).
    session_hours: float = Field(default=12, gt=0, le=24 * 30)
    # The audit log of API calls keeps this many days; the daemon deletes older records
    # (and expired sessions) once a day.
    audit_retention_days: int = Field(default=90, ge=1)
    # Failed authentications per client address: this many in a row, then this many a
    # minute; beyond that the client gets 429 with Retry-After.
    auth_failures_burst: int = Field(default=10, ge=1)
    auth_failures_per_minute: float = Field(default=10, gt=0)
    # Reverse proxies in front of the API (addresses or CIDR networks). A request from
    # one of them is taken to come from the address its X-Forwarded-For header ends
    # with (the right-most that is not itself a trusted proxy), and its
    # X-Forwarded-Proto is believed: the failure limit counts per client behind the
    # proxy. Empty (the default): the client is the TCP peer, and the headers are
    # ignored from anyone, as anyone can send them.
    trusted_proxies: tuple[str, ...] = ()

    @field_validator("listen")
    @classmethod
    def _host_and_port(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:8787")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        networks = []
        for entry in value:
            try:
                networks.append(str(ipaddress.ip_network(entry.strip(), strict=False)))
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address or network (e.g. 10.0.0.5 or 10.0.0.0/24)"
                ) from None
        return tuple(networks)

    @property
    def host(self) -> str:
        assert self.listen is not None
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        assert self.listen is not None
        return int(self.listen.rpartition(":")[2])


def api_config(settings: Any) -> ApiConfig:
    """The settings' `[api]` section; the defaults while Settings has none."""
    config = getattr(settings, "api", None)
    return config if isinstance(config, ApiConfig) else ApiConfig()
