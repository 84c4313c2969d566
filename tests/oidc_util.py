"""A local OpenID Connect issuer made by the tests (no identity provider runs here).

:class:`LocalIssuer` holds signing keys (RSA, or EC), writes their public JWKS to a file
(``jwks_url`` = ``file://...``) and signs tokens; ``rotate()`` publishes a new key.
:class:`HTTPIssuer` also serves, on a free loopback port in a thread:

* ``/.well-known/openid-configuration`` (discovery),
* ``/authorize``: approves at once (no login page) and redirects to ``redirect_uri`` with
  ``code`` and ``state``; it requires ``code_challenge_method=S256``,
* ``/token``: the authorization code grant; checks that ``SHA-256(code_verifier)`` equals
  the challenge (PKCE) and the redirect URI, returns a signed access token,
* ``/jwks``: the public keys (each fetch counted in ``jwks_fetches``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

__all__ = ["LocalIssuer", "HTTPIssuer", "http_issuer", "AUDIENCE", "ISSUER"]

AUDIENCE = "dcmstream"
ISSUER = "https://idp.test/realms/radiology"


class LocalIssuer:
    """Signing keys, a JWKS file and token minting."""

    def __init__(self, folder: Path, issuer: str = ISSUER, audience: str = AUDIENCE) -> None:
        self.issuer = issuer
        self.audience = audience
        self.jwks_path = folder / "jwks.json"
        self.keys: list[Any] = []
        self.rotate()

    @property
    def jwks_url(self) -> str:
        return self.jwks_path.as_uri()

    @property
    def key(self) -> Any:
        """The current signing key (the last one published)."""
        return self.keys[-1]

    def rotate(self, *, kind: str = "RSA", keep_old: bool = True) -> Any:
        """Publish a new signing key (and drop the old ones unless ``keep_old``)."""
        kid = f"k{len(self.keys) + 1}"
        key = RSAKey.generate_key(2048, parameters={"kid": kid}) if kind == "RSA" else \
            ECKey.generate_key("P-256", parameters={"kid": kid})
        self.keys = [*self.keys, key] if keep_old else [key]
        self.publish()
        return key

    def public_jwks(self) -> dict[str, Any]:
        return KeySet(self.keys).as_dict(private=False)

    def publish(self) -> None:
        self.jwks_path.write_text(json.dumps(self.public_jwks()))

    def token(self, sub: str = "alice", roles: list[str] | None = None, *, key: Any = None,
              alg: str | None = None, **claims: Any) -> str:
        """A signed access token; ``claims`` override the defaults (iss, aud, exp, iat, roles)."""
        key = key or self.key
        now = int(time.time())
        body: dict[str, Any] = {"iss": self.issuer, "aud": self.audience, "sub": sub, "iat": now,
                                "exp": now + 300, "roles": roles if roles is not None else ["reader"]}
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        alg = alg or ("RS256" if key.key_type == "RSA" else "ES256")
        return jwt.encode({"alg": alg, "kid": key.kid, "typ": "JWT"}, body, key)

    def unsigned_token(self, **claims: Any) -> str:
        """``alg: none``: a token anyone can make."""
        now = int(time.time())
        body = {"iss": self.issuer, "aud": self.audience, "sub": "mallory", "exp": now + 300, "roles": ["admin"], **claims}
        return f"{_b64(json.dumps({'alg': 'none', 'typ': 'JWT'}))}.{_b64(json.dumps(body))}."


def _b64(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class HTTPIssuer(LocalIssuer):
    """A LocalIssuer that also answers over HTTP on 127.0.0.1 (see the module docstring)."""

    def __init__(self, folder: Path, *, roles: list[str] | None = None, client_id: str = "dcmstream-viewer") -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.issuer = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        super().__init__(folder, issuer=self.url + "/realms/test")
        self.client_id = client_id
        self.roles = roles if roles is not None else ["reader"]
        self.codes: dict[str, dict[str, str]] = {}
        self.jwks_fetches = 0
        self.token_requests: list[dict[str, str]] = []
        self.authorize_requests: list[dict[str, str]] = []
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "userinfo_endpoint": f"{self.issuer}/userinfo",
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            "subject_types_supported": ["public"],
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "grant_types_supported": ["authorization_code"],
        }


@contextmanager
def http_issuer(folder: Path, **kwargs: Any) -> Iterator[HTTPIssuer]:
    issuer = HTTPIssuer(folder, **kwargs)
    try:
        yield issuer
    finally:
        issuer.close()


class _Handler(BaseHTTPRequestHandler):
    server: Any

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        # The viewer's token request comes from the server's origin (another port).
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_OPTIONS(self) -> None:  # noqa: N802 - http.server's naming
        self.send_response(204)
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Allow-Methods", "GET, POST")
        self.send_header("Access-Control-Allow-Headers", "Content-Type, Authorization")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        issuer: HTTPIssuer = self.server.issuer
        url = urlparse(self.path)
        prefix = urlparse(issuer.issuer).path
        path = url.path[len(prefix):] if url.path.startswith(prefix) else url.path
        if path == "/.well-known/openid-configuration":
            self._send(200, issuer.discovery())
        elif path == "/jwks":
            issuer.jwks_fetches += 1
            self._send(200, issuer.public_jwks())
        elif path == "/userinfo":
            self._send(200, {"sub": "viewer-user", "name": "Viewer User"})
        elif path == "/authorize":
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            issuer.authorize_requests.append(q)
            ok = (q.get("response_type") == "code" and q.get("client_id") == issuer.client_id
                  and q.get("code_challenge_method") == "S256" and q.get("code_challenge") and q.get("redirect_uri"))
            if not ok:
                self._send(400, {"error": "invalid_request"})
                return
            code = secrets.token_urlsafe(16)
            issuer.codes[code] = q
            target = q["redirect_uri"] + ("&" if "?" in q["redirect_uri"] else "?") + urlencode(
                {"code": code, "state": q.get("state", "")})
            self._send(302, None, {"Location": target})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        issuer: HTTPIssuer = self.server.issuer
        length = int(self.headers.get("Content-Length") or 0)
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        issuer.token_requests.append(form)
        if not urlparse(self.path).path.endswith("/token"):
            self._send(404, {"error": "not found"})
            return
        asked = issuer.codes.pop(form.get("code", ""), None)
        if form.get("grant_type") != "authorization_code" or asked is None:
            self._send(400, {"error": "invalid_grant"})
            return
        verifier = form.get("code_verifier", "")
        challenge = _b64(hashlib.sha256(verifier.encode()).digest())
        if not verifier or challenge != asked["code_challenge"]:
            self._send(400, {"error": "invalid_grant", "error_description": "PKCE verification failed"})
            return
        if form.get("redirect_uri") != asked["redirect_uri"] or form.get("client_id") != issuer.client_id:
            self._send(400, {"error": "invalid_grant", "error_description": "redirect_uri or client_id differ"})
            return
        token = issuer.token("viewer-user", issuer.roles)
        # An ID token for OIDC clients (OHIF's oidc-client checks it): audience = the client.
        id_token = issuer.token("viewer-user", issuer.roles, aud=issuer.client_id, nonce=asked.get("nonce"))
        self._send(200, {"access_token": token, "id_token": id_token, "token_type": "Bearer", "expires_in": 300,
                         "scope": asked.get("scope", "")})
