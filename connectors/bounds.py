"""Bounds every connector holds to, in a module of their own: the config's settings
import them without the HTTP stack (httpx, tenacity) that connectors/base.py brings."""

from __future__ import annotations

# Bytes of one answer, decompressed, that a connector reads at most (see
# connectors.base.cap_responses).
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
