"""A protocol-level simulator of Entra ID and Microsoft Graph (Outlook mail and contacts).

Served over HTTPS on loopback, with a CA generated per simulator (`ca_file`), in
HTTP/2 to clients that offer it (ALPN, `sandbox.graph.h2serve`) and HTTP/1.1 otherwise.

Entra ID (see `sandbox.graph.entra`)
    GET  /{tenant}/v2.0/.well-known/openid-configuration, GET /{tenant}/discovery/v2.0/keys,
    POST /{tenant}/oauth2/v2.0/token: client credentials with a secret or a certificate
    (client_assertion); scope "https://graph.microsoft.com/.default" or "{url}/.default".
    msal: `ConfidentialClientApplication(client_id, authority=sim.authority,
    client_credential=..., http_client=session, instance_discovery=False)` (or
    validate_authority=False), where `session` is a requests.Session with
    `verify = str(sim.ca_file)` and `trust_env = False` (else REQUESTS_CA_BUNDLE, when
    set, silently replaces the session's verify).

Graph v1.0, app-only, under /v1.0/users/{upn or id}/ (see `sandbox.graph.mail`,
`sandbox.graph.contacts`, `sandbox.graph.batch`)
    mailFolders (list, create, get by id or well-known name, childFolders),
    messages and mailFolders/{id}/messages ($select, $top, $skip, $filter, $orderby,
    $search, paging by @odata.nextLink), messages/{id} (GET, DELETE, POST move,
    POST permanentDelete), mailFolders/{id}/messages/delta, contactFolders (list,
    create, get, delete), contactFolders/{id}/contacts and contacts (list, create,
    get, PATCH and DELETE with If-Match; single-value extended properties set in the
    body, found with `$filter=singleValueExtendedProperties/Any(...)`, shown with
    `$expand=singleValueExtendedProperties($filter=id eq '...')`),
    contactFolders/{id}/contacts/delta (delta also as `delta()`, with `$top`), and
    POST /v1.0/$batch. Lists page with `$skip` in @odata.nextLink. Expired delta
    tokens answer 410 with Location, or 404/400 with a sync-state code;
    `national_cloud=True` has no permanentDelete. Ids are "regular" unless a request says
    `Prefer: IdType="ImmutableId"`; bodies are HTML unless it says
    `Prefer: outlook.body-content-type="text"`.

Throttling per (app, mailbox) as Exchange does it, 429 + Retry-After
(`sandbox.graph.throttle`); seeded faults (latency, 5xx, 429, drops) on Graph calls
only; /_sim/ for inspection and seeding from another process (`sandbox.graph.admin`).
"""

from __future__ import annotations

from sandbox.graph.errors import GraphError
from sandbox.graph.simulator import GraphSimulator
from sandbox.zisson.faults import Faults

__all__ = ["Faults", "GraphError", "GraphSimulator"]
