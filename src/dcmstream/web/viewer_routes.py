"""Browser viewers next to the DICOMweb API: our viewer at ``/viewer``, OHIF at ``/ohif``.

* ``/viewer`` is dcmstream's own stack viewer, built from ``viewer/`` in the repository
  into ``static/viewer/`` (committed, shipped as package data, so ``pip install`` alone
  serves it). Its ``index.html`` is served for ``/viewer`` and ``/viewer/`` with the
  ``<base href>`` and the DICOMweb root filled in for the path the app is mounted at,
  so deep links (``/viewer?StudyInstanceUIDs=UID``) need no redirect.
* ``/ohif`` is the prebuilt OHIF viewer (npm ``@ohif/app``, its ``dist/``), too large to
  commit: ``bash scripts/install-ohif.sh`` puts it in ``third_party/ohif/`` (gitignored),
  already rewritten for the ``/ohif/`` sub-path with an ``app-config.js`` pointing at
  ``/dicomweb``. It is mounted when present (``DCMSTREAM_OHIF_DIR`` names another folder).
  Client-side routes (``/ohif/viewer?StudyInstanceUIDs=...``) get ``index.html``.

Both are same-origin with the DICOMweb root, so neither needs CORS.

With ``[auth] mode = "oidc"`` and a ``client_id``, both log in at the issuer (authorization
code + PKCE) and send the access token: ``/viewer``'s page carries the issuer's public
settings (``<script id="dcm-auth">``, read by ``viewer/src/auth.ts``; its redirect URI is
``{origin}/viewer/``), and ``/ohif/app-config.js`` gets OHIF's ``oidc`` block (redirect
URI ``{origin}/ohif/callback``). Register both redirect URIs at the issuer. With any auth
mode the page no longer inlines the study's instance search (the page itself is open; the
data is not).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from ..archive.uids import is_valid_uid
from . import qido
from .auth import IssuerError, OIDCIssuer
from .common import run

__all__ = ["VIEWER_DIR", "ohif_dir", "viewer_routes"]

VIEWER_DIR = Path(__file__).resolve().parent / "static" / "viewer"
#: Where scripts/install-ohif.sh installs OHIF in a source checkout (editable install).
_REPO_OHIF = Path(__file__).resolve().parents[3] / "third_party" / "ohif"
_NO_CACHE = {"Cache-Control": "no-cache"}


def ohif_dir() -> Path | None:
    """The installed OHIF ``dist/`` folder, or None when OHIF is not installed."""
    configured = os.environ.get("DCMSTREAM_OHIF_DIR")
    path = Path(configured) if configured else _REPO_OHIF
    return path if (path / "index.html").is_file() else None


class _RevalidatedFiles(StaticFiles):
    """Static files that browsers revalidate (ETag) instead of caching blindly.

    The viewer's asset names carry no content hash, so a rebuilt viewer must not be
    mixed with a cached old worker script.
    """

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.setdefault("Cache-Control", "no-cache")
        return response


class _SinglePageFiles(StaticFiles):
    """Static files with ``index.html`` for client-side routes (paths without a file)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            return await super().get_response(path, scope)
        except HTTPException as exc:
            last = path.rsplit("/", 1)[-1]
            if exc.status_code != 404 or "." in last:
                raise
            return await super().get_response("index.html", scope)


_MAX_INLINE = 2 << 20
_FIELDS = re.compile(r'<meta name="dicomweb-instance-fields" content="([0-9A-Fa-f,]*)">')


async def _instance_search(request: Request, study: str, fields: str) -> bytes | None:
    """The viewer's QIDO-RS instance search for ``study``, answered in-process (or None).

    It is the same handler the browser would reach, so the result is exactly what the
    viewer would fetch; inlined into the page it saves a deep link one round trip, and the
    page's inline script can ask for the first frame while viewer.js still loads.
    """
    if not is_valid_uid(study) or not fields:
        return None
    root = request.app.state.dicomweb_root
    scope = dict(request.scope)
    scope.update(
        path=f"{root}/studies/{study}/instances",
        raw_path=f"{root}/studies/{study}/instances".encode(),
        query_string=f"includefield={fields}".encode(),
        path_params={"study": study},
        headers=[(b"accept", b"application/dicom+json")] + [(k, v) for k, v in request.scope.get("headers", []) if k == b"host"],
    )
    try:
        response = await qido.search_instances(Request(scope))
    except HTTPException:
        return None
    if response.status_code != 200 or response.headers.get("content-encoding") or len(response.body) > _MAX_INLINE:
        return None  # (a huge study: the page fetches the search itself)
    return bytes(response.body)


async def _viewer_page(request: Request) -> Response:
    index = VIEWER_DIR / "index.html"
    if not index.is_file():
        raise HTTPException(404, "the viewer is not built: run `bash scripts/build-viewer.sh`")
    root = request.scope.get("root_path", "").rstrip("/")
    text = index.read_text(encoding="utf-8")
    text = text.replace("__VIEWER_BASE__", f"{root}/viewer/")
    text = text.replace("__DICOMWEB_ROOT__", root + getattr(request.app.state, "dicomweb_root", "/dicomweb"))
    auth = getattr(request.app.state, "auth", None)
    if auth is not None and auth.enabled:
        # The page is open; the study's data is not: no inlined search. The viewer logs in
        # first (OIDC) and sends its token with every request.
        settings = {"mode": auth.mode, **(await _browser_auth(request) or {})}
        data = json.dumps(settings).replace("<", "\\u003c")
        text = text.replace("<!--__BOOTSTRAP__-->", f'<script type="application/json" id="dcm-auth">{data}</script>', 1)
        return HTMLResponse(text, headers=_NO_CACHE)
    study = request.query_params.get("StudyInstanceUIDs", "").split(",")[0]
    fields = _FIELDS.search(text)
    if study and fields and hasattr(request.app.state, "dicomweb"):
        body = await _instance_search(request, study, fields.group(1))
        if body is not None:
            # No "<" at all inside the script element ("</script>", "<!--"): JSON strings (the
            # only place one can be) take the escape \u003c instead.
            data = body.decode("utf-8").replace("<", "\\u003c")
            text = text.replace("<!--__BOOTSTRAP__-->", f'<script type="application/json" id="dcm-instances">{data}</script>', 1)
    return HTMLResponse(text, headers=_NO_CACHE)


async def _browser_auth(request: Request) -> dict[str, object] | None:
    """The issuer's public login settings for a browser viewer (None: no OIDC login)."""
    issuer = getattr(request.app.state, "oidc_issuer", None)
    if not isinstance(issuer, OIDCIssuer):
        return None
    try:
        return await run(issuer.browser_settings)
    except IssuerError as exc:
        raise HTTPException(503, f"the identity provider cannot be reached: {exc}") from None


#: OHIF 3.12's build keeps onnxruntime-web's ``e = document.currentScript ? ... : void 0;
#: e = e || __filename``: when webpack runs that module after its chunk's script finished
#: (``currentScript`` null: it depends on the order chunks arrive, about 1 page load in 10
#: on the OIDC callback here), ``__filename`` is a ReferenceError and the app never
#: starts. A global of that name (app-config.js runs before every chunk) turns it into "".
_OHIF_FILENAME_SHIM = (
    '\n/* dcmstream: OHIF 3.12 bundles read a Node global (__filename) when a chunk runs late */\n'
    'if (typeof window.__filename === "undefined") { window.__filename = ""; }\n'
)


async def _ohif_config(request: Request) -> Response:
    """OHIF's ``app-config.js`` as installed, plus its ``oidc`` block when the server
    uses OIDC: OHIF then logs in (authorization code + PKCE) and sends the token."""
    folder = ohif_dir()
    if folder is None or not (folder / "app-config.js").is_file():
        raise HTTPException(404, "OHIF is not installed")
    text = (folder / "app-config.js").read_text(encoding="utf-8") + _OHIF_FILENAME_SHIM
    settings = await _browser_auth(request)
    if settings is not None:
        oidc = [{
            "authority": settings["issuer"],
            "client_id": settings["client_id"],
            "redirect_uri": "/callback",  # OHIF makes it absolute under routerBasename: /ohif/callback
            "post_logout_redirect_uri": "/",
            "response_type": "code",  # authorization code + PKCE (oidc-client), no secret
            "scope": settings["scope"],
            "automaticSilentRenew": False,
            "revokeAccessTokenOnSignout": False,
        }]
        text += f"\n/* dcmstream: [auth] mode = \"oidc\" */\nwindow.config.oidc = {json.dumps(oidc, indent=1)};\n"
    return Response(text, media_type="text/javascript", headers=_NO_CACHE)


async def _viewer_index(request: Request) -> Response:
    return await _viewer_page(request)


async def _ohif_root(request: Request) -> Response:
    query = f"?{request.url.query}" if request.url.query else ""
    return RedirectResponse(f"{request.scope.get('root_path', '').rstrip('/')}/ohif/{query}")


def viewer_routes() -> list[BaseRoute]:
    """Routes of ``/viewer`` (always) and ``/ohif`` (when OHIF is installed)."""
    routes: list[BaseRoute] = [
        Route("/viewer", _viewer_index, methods=["GET", "HEAD"]),
        Route("/viewer/", _viewer_index, methods=["GET", "HEAD"]),
        Route("/viewer/index.html", _viewer_index, methods=["GET", "HEAD"]),
        Mount("/viewer", app=_RevalidatedFiles(directory=VIEWER_DIR, check_dir=False), name="viewer"),
    ]
    ohif = ohif_dir()
    if ohif is not None:
        routes += [
            Route("/ohif", _ohif_root, methods=["GET", "HEAD"]),
            Route("/ohif/app-config.js", _ohif_config, methods=["GET", "HEAD"]),
            Mount("/ohif", app=_SinglePageFiles(directory=ohif, html=True), name="ohif"),
        ]
    return routes
