"""Who may call what: the one table of every endpoint and the roles allowed to call it.

Roles nest for everything but erasure: an admin may do all an operator may, and an
operator all an auditor may; only admins erase. Anything not in the table is refused
(create_app checks at start that every route is listed, so a new endpoint cannot be
forgotten). `None` marks the few public endpoints, which return no data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from daemon.store.tokens import Role

Endpoint = tuple[str, str]  # (method, path template)
Allowed = frozenset[Role] | None  # None: public, no token needed

ADMINS: Final = frozenset({Role.ADMIN})
OPERATORS: Final = frozenset({Role.ADMIN, Role.OPERATOR})
READERS: Final = frozenset({Role.ADMIN, Role.OPERATOR, Role.AUDITOR})
PUBLIC: Final = None

METRICS: Final[Endpoint] = ("GET", "/metrics")

# fmt: off
ACCESS: Final[Mapping[Endpoint, Allowed]] = {
    # probes, documentation, the dashboard's login page: no data in them
    ("GET",  "/healthz"):                                PUBLIC,
    ("GET",  "/readyz"):                                 PUBLIC,
    ("GET",  "/openapi.json"):                           PUBLIC,
    ("GET",  "/docs"):                                   PUBLIC,
    ("GET",  "/dashboard/login"):                        PUBLIC,
    ("POST", "/dashboard/login"):                        PUBLIC,
    ("POST", "/dashboard/logout"):                       PUBLIC,
    ("GET",  "/dashboard/style.css"):                    PUBLIC,
    # Prometheus: public unless [api] metrics_public = false (see allowed_roles)
    METRICS:                                             READERS,
    # reading what happened (auditors)
    ("GET",  "/api/v1/customers"):                       READERS,
    ("GET",  "/api/v1/customers/{customer_id}/report"):  READERS,
    ("GET",  "/api/v1/runs"):                            READERS,
    ("GET",  "/api/v1/runs/{run_id}"):                   READERS,
    ("GET",  "/api/v1/logs"):                            READERS,
    ("GET",  "/api/v1/erasures"):                        READERS,
    ("GET",  "/api/v1/erasures/{request_id}"):           READERS,
    ("GET",  "/api/v1/disputes"):                        READERS,
    ("GET",  "/api/v1/tasks"):                           READERS,
    ("GET",  "/api/v1/certificates/{request_id}"):       READERS,
    ("GET",  "/api/v1/ledger/verify"):                   READERS,
    ("POST", "/api/v1/ledger/verify"):                   READERS,
    ("GET",  "/api/v1/audit"):                           READERS,
    ("GET",  "/dashboard"):                              READERS,
    ("GET",  "/dashboard/runs"):                         READERS,
    ("GET",  "/dashboard/casework"):                     READERS,
    ("GET",  "/dashboard/erasures"):                     READERS,
    ("GET",  "/dashboard/incidents"):                    READERS,
    ("GET",  "/dashboard/customers/{customer_id}"):      READERS,
    # operating the sync (operators); a task's instruction names a person
    ("GET",  "/api/v1/tasks/{task_id}"):                 OPERATORS,
    ("POST", "/api/v1/tasks/{task_id}/done"):            OPERATORS,
    ("POST", "/api/v1/disputes/{dispute_id}/resolve"):   OPERATORS,
    ("POST", "/api/v1/sync"):                            OPERATORS,
    # erasure (admins; the approver must not be the requester)
    ("POST", "/api/v1/erasures"):                        ADMINS,
    ("POST", "/api/v1/erasures/{request_id}/approve"):   ADMINS,
    ("POST", "/api/v1/erasures/{request_id}/cancel"):    ADMINS,
    ("POST", "/api/v1/erasures/{request_id}/include"):   ADMINS,
}
# fmt: on

# Liveness and readiness probes (every few seconds) and the stylesheet are not audited;
# every other call is, with or without a token.
NOT_AUDITED: Final = frozenset({"/healthz", "/readyz", "/dashboard/style.css"})


def allowed_roles(endpoint: Endpoint, *, metrics_public: bool) -> Allowed:
    """The roles that may call `endpoint`, None when public. KeyError: not in the table."""
    if endpoint == METRICS and metrics_public:
        return PUBLIC
    return ACCESS[endpoint]


def describe(allowed: Allowed) -> str:
    """`admin, operator` or `public`, for the docs page and error messages."""
    if allowed is None:
        return "public"
    return ", ".join(role.value for role in Role if role in allowed)
