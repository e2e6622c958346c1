"""App-only tokens for Graph from Entra ID, through one msal ConfidentialClientApplication.

The credential is a certificate (PEM with its key, or PFX; the thumbprint is computed
here) or a client secret. msal does I/O in its constructor (OIDC discovery) and on every
token request, all with `requests`, so both run in a worker thread; the access token is
kept until shortly before it expires and msal's own cache serves in between. A custom
CA bundle (the sandbox's) reaches msal through the `http_client` it is given.

A refused credential raises AuthError with one message that names the tenant, the
client id and the AADSTS code, never the secret or the key.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msal
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from connectors.base import AuthError, FatalError, RetriableError
from connectors.outlook.settings import OutlookSettings

SYSTEM = "outlook"
# Renew this long before the token expires, so no request goes out with a dying token.
EXPIRY_MARGIN = 120.0

_AADSTS = re.compile(r"AADSTS(\d+)")
_HTTP_STATUS = re.compile(r"HTTP status: (\d+)")
# What the common codes mean, so the operator knows what to fix without a web search.
_HINTS: dict[int, str] = {
    90002: "the tenant does not exist",
    700016: "no application with this client id in the tenant",
    7000215: "the client secret is wrong",
    7000222: "the client secret has expired",
    700027: "the certificate is not registered for the app, or the assertion is invalid",
    700024: "the client assertion is outside its validity window (clock skew?)",
    1000031: "the application is disabled",
    500011: "the resource (Graph) is not available in the tenant",
}
_TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error"})
_MSAL_VERSION = tuple(int(p) for p in re.findall(r"\d+", msal.__version__)[:2])


def _discovery_failed(exc: ValueError) -> bool:
    """Whether msal's constructor failed at OIDC discovery (its wording: "Unable to get
    authority configuration", "OIDC Discovery failed"), not at the credential."""
    text = f"{exc} {exc.__context__ or ''} {exc.__cause__ or ''}".casefold()
    return any(
        marker in text
        for marker in ("authority configuration", "oidc discovery", "openid", "tenant")
    )


@dataclass(frozen=True, slots=True)
class Certificate:
    """A certificate credential as msal wants it; `thumbprint` is its SHA-1 (hex)."""

    private_key_pem: str
    certificate_pem: str
    thumbprint: str
    sha256_thumbprint: str


def load_certificate(path: Path, password: str | None) -> Certificate:
    """Key and certificate from a PEM file (both in one file) or a PFX/PKCS#12 file.

    Raises FatalError naming the file and what is wrong; never the password.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FatalError(
            f"outlook: certificate_file {path} cannot be read ({exc.strerror})", system=SYSTEM
        ) from None
    secret = password.encode() if password else None
    key: Any
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, secret)
            certificates = x509.load_pem_x509_certificates(data)
            cert = next((c for c in certificates if c.public_key() == key.public_key()), None)
        else:
            key, cert, _ = pkcs12.load_key_and_certificates(data, secret)
    except (ValueError, TypeError) as exc:
        # cryptography's messages say "bad decrypt", "no certificate" and the like.
        reason = type(exc).__name__
        if "password" in str(exc).lower() or "decrypt" in str(exc).lower():
            reason = "wrong or missing certificate_password"
        raise FatalError(
            f"outlook: certificate_file {path} cannot be loaded ({reason})", system=SYSTEM
        ) from None
    if key is None or cert is None:
        raise FatalError(
            f"outlook: certificate_file {path} must hold the private key and its certificate",
            system=SYSTEM,
        )
    if not isinstance(key, rsa.RSAPrivateKey):
        # msal signs the client assertion with PS256 or RS256: an RSA key or nothing
        # (and Entra ID takes only RSA certificates for app credentials).
        kind = type(key).__name__.removeprefix("_").replace("PrivateKey", "") or "non-RSA"
        raise FatalError(
            f"outlook: certificate_file {path} holds an {kind} key; msal and Entra ID need "
            "an RSA key (2048 bits or more)",
            system=SYSTEM,
        )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    return Certificate(
        private_key_pem=key_pem,
        certificate_pem=cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        thumbprint=cert.fingerprint(hashes.SHA1()).hex().upper(),  # Entra's x5t
        sha256_thumbprint=cert.fingerprint(hashes.SHA256()).hex().upper(),
    )


class TokenProvider:
    """Access tokens for Graph, app-only, for one app registration in one tenant."""

    def __init__(
        self, settings: OutlookSettings, *, http_client: requests.Session | None = None
    ) -> None:
        self.settings = settings
        self._http_client = http_client
        self._app: msal.ConfidentialClientApplication | None = None
        self._app_lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock: asyncio.Lock | None = None
        self.acquired = 0  # tokens msal handed out (from its cache or the wire)
        self.thumbprint: str | None = None

    @property
    def who(self) -> str:
        return f"tenant {self.settings.tenant_id}, client {self.settings.client_id}"

    async def token(self) -> str:
        """A valid access token; a new one only when the current one is near expiry."""
        if self._token is not None and time.monotonic() < self._expires_at:
            return self._token
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            current = self._token
            if current is not None and time.monotonic() < self._expires_at:
                return current  # another task renewed it while this one waited
            token, lifetime = await asyncio.to_thread(self._acquire)
            margin = min(EXPIRY_MARGIN, lifetime / 10)
            self._token = token
            self._expires_at = time.monotonic() + max(0.0, lifetime - margin)
            return token

    def invalidate(self) -> None:
        """Forget the token (Graph answered 401): the next call asks Entra again.

        msal will not force a refresh for client credentials, so its cache is replaced.
        """
        self._token = None
        self._expires_at = 0.0
        if self._app is not None:
            self._app.token_cache = msal.TokenCache()

    def close(self) -> None:
        if self._http_client is not None:
            self._http_client.close()

    # -- in a worker thread ---------------------------------------------------------

    def _acquire(self) -> tuple[str, float]:
        app = self._application()
        try:
            result = app.acquire_token_for_client(scopes=[self.settings.scope])
        except requests.exceptions.SSLError:
            raise FatalError(
                f"outlook: TLS verification of the token endpoint failed ({self.who}); "
                "check ca_bundle",
                system=SYSTEM,
            ) from None
        except requests.exceptions.RequestException as exc:
            raise RetriableError(
                f"outlook: token request failed in transport ({type(exc).__name__}; {self.who})",
                system=SYSTEM,
            ) from None
        except (ValueError, TypeError) as exc:  # msal refuses the credential before sending
            raise self._unusable_credential(exc) from None
        if not isinstance(result, dict) or "access_token" not in result:
            raise self._refused(result if isinstance(result, dict) else {})
        self.acquired += 1
        lifetime = float(result.get("expires_in") or 300)
        return str(result["access_token"]), lifetime

    def _unusable_credential(self, exc: Exception) -> AuthError:
        """msal refused the credential itself (nothing was sent): say so, and what to do."""
        if self.settings.certificate_file is None:
            return AuthError(
                f"outlook: msal cannot use the client secret for {self.who} ({type(exc).__name__})",
                system=SYSTEM,
            )
        # msal's messages name what it missed ("thumbprint", "public_certificate"), never
        # key material; only the first line, and only its words, are kept.
        reason = re.sub(r"[^A-Za-z0-9 '._-]", " ", str(exc).splitlines()[0] if str(exc) else "")
        reason = " ".join(reason.split())[:160] or type(exc).__name__
        hint = f"certificate_file {self.settings.certificate_file} must hold an RSA key"
        if _MSAL_VERSION < (1, 35):
            hint = (
                f"msal {msal.__version__} needs a thumbprint with the certificate; "
                "install msal>=1.35 as pdsync requires"
            )
        return AuthError(
            f"outlook: msal cannot use the certificate for {self.who} ({reason}); {hint}",
            system=SYSTEM,
        )

    def _refused(self, result: dict[str, Any]) -> Exception:
        error = str(result.get("error") or "unknown_error")
        codes = result.get("error_codes") or []
        code: int | None = int(codes[0]) if codes and str(codes[0]).isdigit() else None
        if code is None:
            found = _AADSTS.search(str(result.get("error_description") or ""))
            code = int(found.group(1)) if found else None
        aadsts = f"AADSTS{code}" if code is not None else "no AADSTS code"
        hint = _HINTS.get(code or 0)
        message = f"outlook: Entra ID refused a token for {self.who}: {error} ({aadsts}"
        message += f": {hint})" if hint else ")"
        if error in _TRANSIENT_ERRORS:
            return RetriableError(message, system=SYSTEM)
        return AuthError(message, system=SYSTEM)

    def _application(self) -> msal.ConfidentialClientApplication:
        with self._app_lock:
            if self._app is None:
                self._app = self._build()
            return self._app

    def _build(self) -> msal.ConfidentialClientApplication:
        settings = self.settings
        credential: str | dict[str, str]
        if settings.certificate_file is not None:
            password = _reveal(settings.certificate_password, "certificate_password", self.who)
            certificate = load_certificate(settings.certificate_file, password)
            self.thumbprint = certificate.thumbprint
            # public_certificate lets msal sign with PS256 and the SHA-256 thumbprint
            # (x5t#S256), which Entra prefers over the SHA-1 thumbprint alone.
            credential = {
                "private_key": certificate.private_key_pem,
                "public_certificate": certificate.certificate_pem,
            }
        else:
            credential = _reveal(settings.client_secret, "client_secret", self.who) or ""
        if self._http_client is None:
            session = _Session(settings.timeout_seconds)
            if settings.ca_bundle is not None:
                session.verify = str(settings.ca_bundle)
            self._http_client = session
        host = urlsplit(settings.authority_host).hostname or ""
        microsoft = host in _MICROSOFT_HOSTS
        try:
            return msal.ConfidentialClientApplication(
                settings.client_id,
                client_credential=credential,
                authority=settings.authority,
                # Another authority (the simulator, a sovereign proxy) is not in
                # Microsoft's instance list: skip the instance check, keep OIDC discovery.
                validate_authority=microsoft,
                instance_discovery=None if microsoft else False,
                http_client=self._http_client,
            )
        except requests.exceptions.SSLError:
            raise FatalError(
                f"outlook: TLS verification of the authority failed ({self.who}); check ca_bundle",
                system=SYSTEM,
            ) from None
        except requests.exceptions.RequestException as exc:
            raise RetriableError(
                f"outlook: OIDC discovery failed in transport ({type(exc).__name__}; {self.who})",
                system=SYSTEM,
            ) from None
        except ValueError as exc:
            if not _discovery_failed(exc):
                # msal checks the credential after discovery, in the same constructor.
                raise self._unusable_credential(exc) from None
            # msal wraps the discovery error in a generic one; the answer is in the chain.
            text = f"{exc} {exc.__context__ or ''} {exc.__cause__ or ''}"
            status = _HTTP_STATUS.search(text)
            detail = f"HTTP {status.group(1)}" if status else "no OpenID configuration"
            code = _AADSTS.search(text)
            aadsts = f", AADSTS{code.group(1)}" if code else ""
            raise AuthError(
                f"outlook: OIDC discovery failed for {self.who} ({detail}{aadsts}); "
                "check tenant_id and authority_host",
                system=SYSTEM,
            ) from None


class _Session(requests.Session):
    """A requests session with a default timeout (msal passes none of its own) whose
    `verify` is passed on every request: requests would otherwise let a
    REQUESTS_CA_BUNDLE in the environment override the session's CA bundle."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", self._timeout)
        kwargs.setdefault("verify", self.verify)
        return super().request(method, url, *args, **kwargs)


_MICROSOFT_HOSTS = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoft.com",
        "login.windows.net",
        "login.microsoftonline.us",
        "login.chinacloudapi.cn",
        "login.partner.microsoftonline.cn",
    }
)


def _reveal(ref: Any, name: str, who: str) -> str | None:
    if ref is None:
        return None
    try:
        return str(ref.reveal())
    except LookupError as exc:
        # The LookupError names the variable or file, never a value.
        raise AuthError(
            f"outlook: {name} for {who} is not available ({exc})", system=SYSTEM
        ) from None
