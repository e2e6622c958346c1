"""The `[api]` section of the config file.

    [api]
    listen = "127.0.0.1:8787"   # absent: no HTTP server (the default)
    metrics_public = true       # /metrics without a token (aggregates only, no personal data)
    cookie_secure = false       # true when a TLS-terminating proxy sits in front

Kept free of FastAPI so daemon/config.py can import it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator


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

    @field_validator("listen")
    @classmethod
    def _host_and_port(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:8787")
        return value

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
