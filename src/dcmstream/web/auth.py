"""Who is asking, and may they: bearer tokens (OIDC JWTs), API keys and roles.

:class:`AuthMiddleware` runs before every handler when ``[auth] mode`` is not "none":

* The request's credentials: ``Authorization: Bearer <JWT>`` (mode "oidc": verified with
  joserfc against the issuer's JWKS; ``iss``, ``aud``, ``exp`` and ``nbf`` checked, only
  asymmetric algorithms), or an API key (``Authorization: Bearer <key>`` or
  ``X-API-Key: <key>``), whose SHA-256 is compared in constant time with the configured
  hashes. The key itself is never stored, logged or echoed.
* The role it needs (:func:`required_role`): ``reader`` to search and retrieve
  (``GET``/``HEAD`` under the DICOMweb root), ``uploader`` to store (``POST``), ``admin``
  to delete (``DELETE`` and any other method), for ``/metrics`` and for admin routes.
  ``/healthz``, ``/openapi.json``, the viewers' static files (``/viewer``, ``/ohif``: no patient data) and
  CORS preflights (``OPTIONS``) are open; every other path needs at least ``reader``.
* No or unusable credentials: 401 with ``WWW-Authenticate: Bearer realm="dcmstream"``
  (plus ``error="invalid_token"`` when a token was sent but failed, RFC 6750 3.1); a valid
  identity without the role: 403 naming the role needed.

The JWKS is cached; a token signed with an unknown ``kid`` refetches it (at most once per
``refetch_interval`` seconds), so an issuer's key rotation needs no restart and a flood
of made-up ``kid`` values cannot turn the server into a fetch amplifier.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from starlette.concurrency import run_in_threadpool

from ..config import ROLES, AuthConfig
from ..errors import DcmstreamError
from .common import error

__all__ = [
    "AuthMiddleware",
    "Identity",
    "ANONYMOUS",
    "IDENTITY_KEY",
    "IssuerError",
    "OIDCIssuer",
    "hash_api_key",
    "identity",
    "required_role",
    "has_role",
]

log = logging.getLogger(__name__)

#: The ASGI scope key holding the request's :class:`Identity` (read by the audit trail).
IDENTITY_KEY = "dcmstream.identity"
REALM = "dcmstream"
_FETCH_TIMEOUT = 10.0
_MAX_DOCUMENT = 1 << 20


@dataclass(frozen=True)
class Identity:
    """Who made a request: ``user`` is the token's ``sub`` (or the API key's name),
    ``role`` the strongest role it holds (None: none of ours), ``via`` how it was proven."""

    user: str
    role: str | None
    via: str  # "oidc", "api-key" or "none"


#: Mode "none": nobody is identified, everything is allowed.
ANONYMOUS = Identity("anonymous", None, "none")


class IssuerError(DcmstreamError, RuntimeError):
    """The issuer's discovery document or JWKS could not be fetched or read."""


class _Unauthorized(DcmstreamError):
    """A credential was sent but is not acceptable (the reason is safe to show)."""


def hash_api_key(key: str) -> str:
    """The SHA-256 hex of an API key: what ``[auth.api_keys]`` holds instead of the key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def has_role(held: str | None, needed: str) -> bool:
    """``admin`` > ``uploader`` > ``reader``: a role includes the weaker ones."""
    return held in ROLES and ROLES.index(held) >= ROLES.index(needed)


def required_role(method: str, path: str, root: str) -> str | None:
    """The role a request needs, or None when the path is open to anyone.

    A whitelist of open paths; everything else (including paths no route serves, so a
    404 tells an anonymous client nothing) needs at least ``reader``.
    """
    if method == "OPTIONS" or path in ("/healthz", "/openapi.json"):  # (the API's description: how to log in)
        return None
    for open_root in ("/viewer", "/ohif"):
        if path == open_root or path.startswith(open_root + "/"):
            return None
    if path == "/metrics" or path.startswith(("/admin/", "/lifecycle")):
        return "admin"
    if path == root or path.startswith(root + "/"):
        if method in ("GET", "HEAD"):
            return "reader"
        if method == "POST":
            return "uploader"
        return "admin"  # DELETE, and any other method that would change the archive
    return "reader"


def identity(scope: Mapping[str, Any]) -> Identity:
    """The identity the middleware found for a request (:data:`ANONYMOUS` without auth)."""
    found = scope.get(IDENTITY_KEY)
    return found if isinstance(found, Identity) else ANONYMOUS


def _read_url(url: str) -> bytes:
    """A small document from https://, loopback http:// or file:// (the JWKS, discovery)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        try:
            return Path(unquote(parsed.path)).read_bytes()[:_MAX_DOCUMENT]
        except OSError as exc:
            raise IssuerError(f"cannot read {url}: {exc.strerror or exc}") from exc
    if parsed.scheme not in ("https", "http"):
        raise IssuerError(f"cannot fetch {url!r}: expected https:// or file://")
    request = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "dcmstream"})
    try:
        with urllib.request.urlopen(request, timeout=_FETCH_TIMEOUT) as response:  # noqa: S310 - scheme checked
            return bytes(response.read(_MAX_DOCUMENT))
    except OSError as exc:  # URLError, HTTPError, timeouts
        raise IssuerError(f"cannot fetch {url}: {exc}") from exc


def _read_json(url: str) -> dict[str, Any]:
    try:
        data = json.loads(_read_url(url))
    except ValueError as exc:
        raise IssuerError(f"{url}: not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise IssuerError(f"{url}: expected a JSON object")
    return data


class OIDCIssuer:
    """The issuer's endpoints (configured, else discovered) and its signing keys (cached).

    Thread-safe; the blocking fetches run in the caller's thread (the middleware hands
    them to the thread pool).
    """

    def __init__(self, config: AuthConfig, *, refetch_interval: float = 30.0,
                 discovery_max_age: float = 3600.0) -> None:
        self.config = config
        self.refetch_interval = refetch_interval
        self.discovery_max_age = discovery_max_age
        self._lock = threading.RLock()  # keys() -> endpoint() -> discovery()
        self._discovery: dict[str, Any] | None = None
        self._discovered_at = 0.0
        self._keys: KeySet | None = None
        self._kids: frozenset[str] = frozenset()
        self._fetched_at = -float("inf")

    # -- endpoints -----------------------------------------------------------------------
    def discovery(self) -> dict[str, Any]:
        """``{issuer}/.well-known/openid-configuration`` (cached for an hour)."""
        issuer = self.config.issuer
        if issuer is None:
            raise IssuerError("[auth] has no issuer to discover endpoints from")
        with self._lock:
            if self._discovery is None or time.monotonic() - self._discovered_at > self.discovery_max_age:
                document = _read_json(issuer.rstrip("/") + "/.well-known/openid-configuration")
                if document.get("issuer") not in (None, issuer):
                    raise IssuerError(f"the discovery document names issuer {document.get('issuer')!r}, "
                                      f"not the configured {issuer!r}")
                self._discovery, self._discovered_at = document, time.monotonic()
            return self._discovery

    def endpoint(self, name: str) -> str:
        """``jwks_uri``, ``authorization_endpoint`` or ``token_endpoint``: configured, else discovered."""
        configured = {"jwks_uri": self.config.jwks_url, "authorization_endpoint": self.config.authorization_endpoint,
                      "token_endpoint": self.config.token_endpoint}.get(name)
        if configured:
            return configured
        value = self.discovery().get(name)
        if not isinstance(value, str) or not value:
            raise IssuerError(f"the issuer's discovery document has no {name}")
        return value

    def browser_settings(self) -> dict[str, Any] | None:
        """What a browser viewer needs to log in (no secrets), or None without OIDC or a client id."""
        if self.config.mode != "oidc" or not self.config.client_id:
            return None
        return {
            "issuer": self.config.issuer,
            "client_id": self.config.client_id,
            "authorization_endpoint": self.endpoint("authorization_endpoint"),
            "token_endpoint": self.endpoint("token_endpoint"),
            "scope": self.config.scope,
        }

    # -- keys ----------------------------------------------------------------------------
    def _fetch_keys(self) -> None:
        document = _read_json(self.endpoint("jwks_uri"))
        try:
            keys = KeySet.import_key_set(document)  # type: ignore[arg-type]  # checked by joserfc itself
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise IssuerError(f"the issuer's JWKS cannot be read: {exc}") from exc
        self._keys = keys
        self._kids = frozenset(str(k.kid) for k in keys.keys if k.kid)
        self._fetched_at = time.monotonic()

    def keys(self, kid: str | None) -> KeySet:
        """The key set, fetched when missing, refetched when it lacks ``kid`` (rate limited)."""
        with self._lock:
            stale = kid is not None and kid not in self._kids
            if self._keys is None or (stale and time.monotonic() - self._fetched_at >= self.refetch_interval):
                self._fetch_keys()
            assert self._keys is not None
            return self._keys

    def needs_fetch(self, kid: str | None) -> bool:
        """Whether :meth:`keys` would fetch (so the caller moves to a thread first)."""
        return self._keys is None or (
            kid is not None and kid not in self._kids and time.monotonic() - self._fetched_at >= self.refetch_interval
        )

    # -- tokens --------------------------------------------------------------------------
    def verify(self, token: str, keys: KeySet) -> Identity:
        """The identity of a valid token; :class:`_Unauthorized` with a reason otherwise."""
        config = self.config
        assert config.issuer is not None and config.audience is not None  # required by mode "oidc"
        try:
            decoded = jwt.decode(token, keys, algorithms=list(config.algorithms))
        except JoseError as exc:
            raise _Unauthorized(_reason(exc)) from exc
        except (ValueError, TypeError) as exc:
            raise _Unauthorized("the token is malformed") from exc
        claims = decoded.claims
        registry = jwt.JWTClaimsRegistry(
            leeway=config.leeway_seconds,
            iss={"essential": True, "value": config.issuer},
            aud={"essential": True, "value": config.audience},
            exp={"essential": True},
        )
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise _Unauthorized(_reason(exc)) from exc
        subject = claims.get("sub")
        user = subject if isinstance(subject, str) and subject else "unknown-subject"
        return Identity(user[:200], _strongest(_claim(claims, config.roles_claim)), "oidc")


def _reason(exc: JoseError) -> str:
    """A short, safe reason (joserfc's messages name claims, never their values)."""
    name = type(exc).__name__
    if name == "ExpiredTokenError":
        return "the token has expired"
    if name == "InvalidTokenError":
        return "the token is not valid yet"
    if name in ("InvalidClaimError", "MissingClaimError"):
        return f"the token's claims are not accepted ({exc.description})"
    if name in ("BadSignatureError",):
        return "the token's signature does not verify"
    if name in ("UnsupportedAlgorithmError",):
        return "the token's signature algorithm is not accepted"
    if name == "InvalidKeyIdError":
        return "the token was signed by a key the issuer does not publish"
    return "the token is not valid"


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _strongest(value: Any) -> str | None:
    """The strongest of our roles in a claim (a list of strings, or one space-separated string)."""
    names = value.split() if isinstance(value, str) else value if isinstance(value, list) else []
    held = [ROLES.index(n) for n in names if isinstance(n, str) and n in ROLES]
    return ROLES[max(held)] if held else None


def _header(scope: Mapping[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _challenge(error_code: str | None = None, description: str | None = None) -> dict[str, str]:
    value = f'Bearer realm="{REALM}"'
    if error_code:
        value += f', error="{error_code}"'
    if description:
        value += ', error_description="' + description.replace('"', "'") + '"'
    return {"WWW-Authenticate": value}


class AuthMiddleware:
    """Authenticate every request that needs a role and refuse those that lack it."""

    def __init__(self, app: Any, config: AuthConfig, root: str, issuer: OIDCIssuer | None = None) -> None:
        self.app = app
        self.config = config
        self.root = root
        self.issuer = issuer if issuer is not None else OIDCIssuer(config) if config.mode == "oidc" else None
        self._keys = [(bytes.fromhex(k.sha256), k) for k in config.api_keys]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        needed = required_role(scope["method"], scope["path"], self.root)
        if needed is None:
            await self.app(scope, receive, send)
            return
        try:
            who = await self._authenticate(scope)
        except _Unauthorized as exc:
            response = error(401, f"authentication failed: {exc}", _challenge("invalid_token", str(exc)))
            await response(scope, receive, send)
            return
        except IssuerError as exc:
            log.error("cannot verify tokens: %s", exc)
            response = error(503, "the identity provider's keys cannot be fetched; try again later", {"Retry-After": "5"})
            await response(scope, receive, send)
            return
        if who is None:
            response = error(401, "authentication required: send Authorization: Bearer <token>"
                                  + (" or X-API-Key" if self._keys else ""), _challenge())
            await response(scope, receive, send)
            return
        scope[IDENTITY_KEY] = who
        if not has_role(who.role, needed):
            held = f"role {who.role!r}" if who.role else "none of the roles reader, uploader, admin"
            response = error(403, f"{scope['method']} {_route_kind(scope['path'], self.root)} needs the role "
                                  f"{needed!r}; {who.user} has {held}", _challenge("insufficient_scope"))
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _authenticate(self, scope: Mapping[str, Any]) -> Identity | None:
        api_key = _header(scope, b"x-api-key")
        if api_key is not None:
            return self._api_key(api_key)
        authorization = _header(scope, b"authorization")
        if authorization is None:
            return None
        scheme, _, value = authorization.strip().partition(" ")
        value = value.strip()
        if scheme.lower() != "bearer" or not value:
            return None  # another scheme (Basic, ...): as if no credentials were sent
        if self.issuer is not None and value.count(".") == 2:
            return await self._token(value)
        return self._api_key(value)

    def _api_key(self, key: str) -> Identity:
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
        found = None
        for expected, entry in self._keys:  # every entry compared: the time says nothing
            if hmac.compare_digest(digest, expected):
                found = entry
        if found is None:
            raise _Unauthorized("the API key is not known" if self._keys else "the credential is not accepted")
        return Identity(found.name, found.role, "api-key")

    async def _token(self, token: str) -> Identity:
        assert self.issuer is not None
        try:
            header = jws.extract_compact(token.encode("ascii")).headers()
        except (JoseError, ValueError, TypeError, UnicodeError) as exc:
            if self._keys:  # not a JWT at all: perhaps an API key with two dots in it
                return self._api_key(token)
            raise _Unauthorized("the token is malformed") from exc
        if header.get("alg") not in self.config.algorithms:
            raise _Unauthorized("the token's signature algorithm is not accepted")
        kid = header.get("kid")
        kid = kid if isinstance(kid, str) else None
        if self.issuer.needs_fetch(kid):
            keys = await run_in_threadpool(self.issuer.keys, kid)
        else:
            keys = self.issuer.keys(kid)
        return self.issuer.verify(token, keys)


def _route_kind(path: str, root: str) -> str:
    """A path named without its UIDs (for messages): the first segment under the root."""
    if path.startswith(root + "/"):
        return f"{root}/{path[len(root) + 1:].split('/', 1)[0]}"
    return path if len(path) <= 40 else path[:40] + "..."
