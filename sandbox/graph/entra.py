"""The simulated Entra ID: OIDC discovery, the v2.0 token endpoint, app-only tokens.

Only the client credentials grant is served, with either a client secret (in the body
or as HTTP Basic, which is what msal sends) or a certificate: a `client_assertion`
JWT (RS256 with `x5t`, or PS256 with `x5t#S256` as msal >= 1.35 sends when it knows
the certificate) signed by the app's private key, checked against the registered
certificate, with `aud` = the token endpoint, `iss` = `sub` = the client id, and
`exp`/`nbf` in range.

Access tokens are RS256 JWTs shaped like Entra's app-only Graph tokens (`aud`
https://graph.microsoft.com, `appid`, `roles`, `tid`, `exp`), signed by a key
published at the jwks_uri. Graph accepts a token only if this simulator issued it,
it has not expired and it was not revoked.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from cryptography import x509

from sandbox.graph import jose
from sandbox.graph.errors import EntraError, GraphError

GRAPH_RESOURCE = "https://graph.microsoft.com"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ROLES = ("Mail.ReadWrite", "Contacts.ReadWrite", "User.Read.All")
CLOCK_SKEW = 300  # seconds Entra tolerates on nbf/exp of an assertion


@dataclass
class App:
    client_id: str
    secret: str | None = None
    certificates: list[x509.Certificate] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    client_id: str
    expires_at: float


class Entra:
    """Apps, OIDC metadata and tokens for one tenant. Thread-safe."""

    def __init__(self, tenant_id: str, token_ttl_seconds: float) -> None:
        self.tenant_id = tenant_id
        self.token_ttl_seconds = token_ttl_seconds
        self.base_url = ""  # set once the server has its port
        self._lock = threading.Lock()
        self._apps: dict[str, App] = {}
        self._tokens: dict[str, IssuedToken] = {}

    # -- apps -----------------------------------------------------------------------------

    def add_app(
        self, client_id: str, *, secret: str | None = None, certificate_pem: bytes | None = None
    ) -> None:
        if secret is None and certificate_pem is None:
            raise ValueError("an app needs a secret, a certificate or both")
        certificates = []
        if certificate_pem is not None:
            certificates.append(x509.load_pem_x509_certificate(certificate_pem))
        with self._lock:
            self._apps[client_id] = App(client_id, secret, certificates)

    def app_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._apps)

    # -- OIDC -----------------------------------------------------------------------------

    @property
    def token_endpoint(self) -> str:
        return f"{self.base_url}/{self.tenant_id}/oauth2/v2.0/token"

    def openid_configuration(self) -> dict[str, Any]:
        root = f"{self.base_url}/{self.tenant_id}"
        return {
            "token_endpoint": self.token_endpoint,
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "jwks_uri": f"{root}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{root}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{self.base_url}/oidc/userinfo",
            "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{root}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "ver"],
            "kerberos_endpoint": f"{root}/kerberos",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "pdsync.sandbox",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": self.base_url.removeprefix("https://"),
            "rbac_url": "https://pas.windows.net",
        }

    def jwks(self) -> dict[str, Any]:
        return jose.jwks()

    # -- the token endpoint ---------------------------------------------------------------

    def issue(self, form: Mapping[str, str], authorization: str | None) -> dict[str, Any]:
        """Answer a token request (form fields already decoded); raises EntraError."""
        grant = form.get("grant_type")
        if grant != "client_credentials":
            raise EntraError(
                400,
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{grant}'.",
            )
        client_id, basic_secret = _basic_credentials(authorization)
        client_id = client_id or form.get("client_id", "")
        if not client_id:
            raise EntraError(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_id'.",
            )
        with self._lock:
            app = self._apps.get(client_id)
        if app is None:
            raise EntraError(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{self.tenant_id}'. This can happen if the application has not been installed "
                "by the administrator of the tenant or consented to by any user in the tenant. "
                "You may have sent your authentication request to the wrong tenant.",
            )
        secret = basic_secret if basic_secret is not None else form.get("client_secret")
        if secret is not None:
            self._check_secret(app, secret)
            method = "1"
        elif form.get("client_assertion") is not None:
            if form.get("client_assertion_type") != ASSERTION_TYPE:
                raise EntraError(
                    400,
                    "invalid_request",
                    700021,
                    f"Client assertion type is invalid. Expected '{ASSERTION_TYPE}'.",
                )
            self._check_assertion(app, form["client_assertion"])
            method = "2"
        else:
            raise EntraError(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' "
                "or 'client_secret'.",
            )
        resource = self._resource(form.get("scope", ""))
        return self._token_response(app, resource, method)

    def _check_secret(self, app: App, secret: str) -> None:
        if app.secret is None or not hmac.compare_digest(
            secret.encode("utf-8"), app.secret.encode("utf-8")
        ):
            raise EntraError(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request "
                "is the client secret value, not the client secret ID, for a secret added to "
                f"app '{app.client_id}'.",
            )

    def _check_assertion(self, app: App, assertion: str) -> None:
        try:
            header, claims, signing_input, signature = jose.decode(assertion)
        except ValueError:
            raise EntraError(
                401, "invalid_client", 50027, "JWT token is invalid or malformed."
            ) from None
        certificate = jose.certificate_for(app.certificates, header)
        if certificate is None:
            thumbprint = header.get("x5t#S256") or header.get("x5t") or "<none>"
            raise EntraError(
                401,
                "invalid_client",
                700027,
                f"The certificate with identifier used to sign the client assertion is not "
                f"registered on application. [Reason - The key was not found., Thumbprint of "
                f"key used by client: '{thumbprint}']",
            )
        if not jose.signature_valid(certificate, header.get("alg"), signing_input, signature):
            raise EntraError(
                401, "invalid_client", 700027, "Client assertion failed signature validation."
            )
        now = time.time()
        if claims.get("aud") != self.token_endpoint:
            raise EntraError(
                401,
                "invalid_client",
                50013,
                f"Assertion failed signature validation. [Reason - The audience "
                f"'{claims.get('aud')}' is not the token endpoint.]",
            )
        if claims.get("iss") != app.client_id or claims.get("sub") != app.client_id:
            raise EntraError(
                401,
                "invalid_client",
                700023,
                "Client assertion audience claim does not match Realm issuer; "
                "'iss' and 'sub' must both be the client id.",
            )
        expires, not_before = claims.get("exp"), claims.get("nbf", 0)
        if (
            not isinstance(expires, int | float)
            or expires + CLOCK_SKEW < now
            or (isinstance(not_before, int | float) and not_before - CLOCK_SKEW > now)
        ):
            raise EntraError(
                401,
                "invalid_client",
                700024,
                "Client assertion is not within its valid time range.",
            )

    def _resource(self, scope: str) -> str:
        wanted = [s for s in scope.split() if s not in ("openid", "profile", "offline_access")]
        accepted = {f"{GRAPH_RESOURCE}/.default": GRAPH_RESOURCE}
        accepted[f"{self.base_url}/.default"] = GRAPH_RESOURCE
        if len(wanted) == 1 and wanted[0] in accepted:
            return accepted[wanted[0]]
        if len(wanted) == 1 and wanted[0].endswith("/.default"):
            raise EntraError(
                400,
                "invalid_resource",
                500011,
                f"The resource principal named {wanted[0].removesuffix('/.default')} was not "
                f"found in the tenant named {self.tenant_id}.",
            )
        raise EntraError(
            400,
            "invalid_scope",
            1002012,
            f"The provided value for scope {scope} is not valid. Client credential flows must "
            "have a scope value with /.default suffixed to the resource identifier "
            "(application ID URI).",
        )

    def _token_response(self, app: App, resource: str, method: str) -> dict[str, Any]:
        now = int(time.time())
        ttl = int(self.token_ttl_seconds)
        claims = {
            "aud": resource,
            "iss": f"https://sts.windows.net/{self.tenant_id}/",
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "aio": secrets.token_urlsafe(12),
            "app_displayname": app.client_id,
            "appid": app.client_id,
            "appidacr": method,
            "idp": f"https://sts.windows.net/{self.tenant_id}/",
            "idtyp": "app",
            "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, app.client_id)),
            "roles": list(ROLES),
            "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, app.client_id)),
            "tid": self.tenant_id,
            "uti": secrets.token_urlsafe(16),
            "ver": "1.0",
        }
        token = jose.sign(claims)
        with self._lock:
            self._tokens[token] = IssuedToken(app.client_id, now + self.token_ttl_seconds)
        return {
            "token_type": "Bearer",
            "expires_in": ttl,
            "ext_expires_in": ttl,
            "access_token": token,
        }

    # -- Graph's side ---------------------------------------------------------------------

    def authenticate(self, authorization: str | None) -> str:
        """The client id a Graph request's bearer token was issued to; else a 401."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthenticated("Access token is empty.")
        with self._lock:
            issued = self._tokens.get(token.strip())
        if issued is None:
            raise _unauthenticated("IDX14100: JWT is not well formed or was not issued here.")
        if issued.expires_at <= time.time():
            raise _unauthenticated("Lifetime validation failed, the token is expired.")
        return issued.client_id

    def revoke_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "tenant_id": self.tenant_id,
                "apps": sorted(self._apps),
                "tokens_outstanding": sum(
                    1 for t in self._tokens.values() if t.expires_at > time.time()
                ),
            }


def _unauthenticated(message: str) -> GraphError:
    return GraphError(
        401,
        "InvalidAuthenticationToken",
        message,
        headers={
            "WWW-Authenticate": 'Bearer realm="", authorization_uri="https://login.microsoftonline.'
            'com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"'
        },
    )


def _basic_credentials(authorization: str | None) -> tuple[str | None, str | None]:
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise EntraError(
            401, "invalid_client", 7000216, "Malformed HTTP Basic client credentials."
        ) from None
    client_id, _, secret = decoded.partition(":")
    # RFC 6749 2.3.1: both parts are form-urlencoded before Basic encoding.
    return unquote_plus(client_id), unquote_plus(secret)
