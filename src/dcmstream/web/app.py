"""The ASGI app: DICOMweb under ``/dicomweb``, metrics, CORS, errors with reasons.

Routes (``{study}``, ``{series}``, ``{instance}`` are UIDs, validated before use):

=========  =====================================================================  ===========
method     path under /dicomweb                                                   service
=========  =====================================================================  ===========
GET        /studies, /series, /instances,                                          QIDO-RS
           /studies/{study}/series, /studies/{study}/instances,
           /studies/{study}/series/{series}/instances
GET        /studies/{study}[/series/{series}[/instances/{instance}]]              WADO-RS
GET        .../metadata (study, series, instance)                                  WADO-RS
GET        .../instances/{instance}/frames/{1,5,9}                                 WADO-RS
GET        .../instances/{instance}/bulkdata/{tag}                                 WADO-RS
GET        .../rendered, .../thumbnail (instance, frames; thumbnail also study     WADO-RS
           and series)
POST       /studies, /studies/{study}                                              STOW-RS
DELETE     /studies/{study}[/series/{series}[/instances/{instance}]]              delete
=========  =====================================================================  ===========

Plus ``GET /metrics`` (Prometheus), ``GET /healthz``, ``GET /openapi.json`` (these routes as
OpenAPI, :mod:`dcmstream.web.openapi`), the viewer at ``/viewer`` and OHIF at ``/ohif`` when
installed (see :mod:`dcmstream.web.viewer_routes`).

CORS is off by default: the server usually runs on a workstation's loopback next
to a browser, and ``Access-Control-Allow-Origin: *`` would let any web page the
user opens read the archive (patient data) through it. Viewers served from another
origin are allowed with ``--cors-origin https://viewer.example`` (or ``*`` for a
demo with synthetic data).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..archive import Archive
from ..archive.archive import InstanceChangedError, InstanceDeletedError, MissingBlobError
from ..archive.blobstore import BlobNotFoundError, StorageFullError
from ..archive.catalog import QueryError
from ..archive.lifecycle import tier_status
from ..archive.uids import InvalidUIDError
from ..config import AuditConfig, AuthConfig
from ..errors import DcmstreamError, DicomFormatError
from . import delete, openapi, qido, rendered, stow, wado
from .audit import AuditLog, AuditMiddleware
from .auth import AuthMiddleware, OIDCIssuer
from .common import ServerConfig, WebContext, context, error
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import MetricsMiddleware
from .viewer_routes import viewer_routes

__all__ = ["create_app", "add_collector", "ServerConfig", "DICOMWEB_ROOT", "UVICORN_OPTIONS"]

log = logging.getLogger(__name__)
#: Seconds a scrape reuses the per-tier totals (a GROUP BY over the instances).
_TIER_STATUS_MAX_AGE = 5.0
DICOMWEB_ROOT = "/dicomweb"

_INST = "/studies/{study}/series/{series}/instances/{instance}"


def _routes(root: str) -> list[Route]:
    r = root
    get = ["GET"]
    return [
        # QIDO-RS
        Route(f"{r}/studies", qido.search_studies, methods=get),
        Route(f"{r}/series", qido.search_series, methods=get),
        Route(f"{r}/instances", qido.search_instances, methods=get),
        Route(f"{r}/studies/{{study}}/series", qido.search_series, methods=get),
        Route(f"{r}/studies/{{study}}/instances", qido.search_instances, methods=get),
        Route(f"{r}/studies/{{study}}/series/{{series}}/instances", qido.search_instances, methods=get),
        # STOW-RS
        Route(f"{r}/studies", stow.store, methods=["POST"]),
        Route(f"{r}/studies/{{study}}", stow.store, methods=["POST"]),
        # WADO-RS
        Route(f"{r}/studies/{{study}}", wado.retrieve, methods=get),
        Route(f"{r}/studies/{{study}}/series/{{series}}", wado.retrieve, methods=get),
        Route(f"{r}{_INST}", wado.retrieve, methods=get),
        Route(f"{r}/studies/{{study}}/metadata", wado.metadata, methods=get),
        Route(f"{r}/studies/{{study}}/series/{{series}}/metadata", wado.metadata, methods=get),
        Route(f"{r}{_INST}/metadata", wado.metadata, methods=get),
        Route(f"{r}{_INST}/frames/{{frames}}", wado.frames, methods=get),
        Route(f"{r}{_INST}/bulkdata/{{tag}}", wado.bulkdata, methods=get),
        Route(f"{r}{_INST}/rendered", rendered.rendered, methods=get),
        Route(f"{r}{_INST}/frames/{{frames}}/rendered", rendered.rendered, methods=get),
        Route(f"{r}{_INST}/thumbnail", rendered.thumbnail, methods=get),
        Route(f"{r}{_INST}/frames/{{frames}}/thumbnail", rendered.thumbnail, methods=get),
        Route(f"{r}/studies/{{study}}/thumbnail", rendered.study_thumbnail, methods=get),
        Route(f"{r}/studies/{{study}}/series/{{series}}/thumbnail", rendered.study_thumbnail, methods=get),
        # delete (admin)
        Route(f"{r}/studies/{{study}}", delete.delete, methods=["DELETE"]),
        Route(f"{r}/studies/{{study}}/series/{{series}}", delete.delete, methods=["DELETE"]),
        Route(f"{r}{_INST}", delete.delete, methods=["DELETE"]),
        # service
        Route("/metrics", _metrics, methods=get),
        Route("/healthz", _health, methods=get),
        Route("/openapi.json", openapi.openapi, methods=get),
        Route(r, _root, methods=get),
        Route("/", _root, methods=get),
    ]


async def _metrics(request: Request) -> Response:
    from .common import run

    ctx = context(request)
    cache = ctx.archive.cache
    counts = await run(ctx.archive.catalog.counts)
    extra = {
        "dcmstream_metadata_cache_bytes": ctx.metadata_cache.bytes,
        "dcmstream_metadata_cache_hits_total": ctx.metadata_cache.hits,
        "dcmstream_metadata_cache_misses_total": ctx.metadata_cache.misses,
        "dcmstream_blob_bytes_read_total": ctx.archive.bytes_read,
    }
    worker = ctx.archive.policy_worker
    if worker is not None:
        extra.update(worker.metrics())
    if ctx.archive.sweeper is not None:  # leftovers of killed writers removed (archive/sweep.py)
        extra.update(ctx.archive.sweeper.metrics())
    # One GROUP BY on the catalog, reused for a few seconds (scrapes of several servers).
    tiers = await run(tier_status, ctx.archive, max_age=_TIER_STATUS_MAX_AGE)
    text = ctx.metrics.render(cache.stats() if cache is not None else None, counts, extra, tiers)
    return PlainTextResponse(text, media_type=METRICS_CONTENT_TYPE)


async def _health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _root(request: Request) -> Response:
    from .common import base_url, run

    ctx = context(request)
    counts = await run(ctx.archive.catalog.counts)
    return JSONResponse({"service": "dcmstream DICOMweb", "dicomweb": base_url(request), "archive": counts})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error(exc.status_code, str(exc.detail), dict(exc.headers) if exc.headers else None)


async def _bad_request(request: Request, exc: Exception) -> Response:
    return error(400, str(exc))


async def _missing_blob(request: Request, exc: Exception) -> Response:
    """Bytes not where a request looked. Every read follows a blob another process moved
    (Archive.open_current), so this is an instance deleted since its record was memoised
    (404, as if never stored), a swap racing the request (503: retry) or bytes the archive
    has lost (410, naming the instance)."""
    sop = getattr(exc, "sop_uid", None) or request.path_params.get("instance")
    if sop:
        context(request).archive.forget(sop)  # the next request starts from the catalog's row
    if isinstance(exc, InstanceDeletedError):  # deleted (maybe by another process) meanwhile
        return error(404, str(exc))
    if isinstance(exc, InstanceChangedError):
        log.info("%s: %s", request.url.path, exc)
        return error(503, str(exc), {"Retry-After": "1"})
    log.error("blob missing for %s: %s", request.url.path, exc)
    what = str(exc) if isinstance(exc, MissingBlobError) else f"instance {sop or '?'}: {exc}"
    return error(410, f"{what}; the archive has lost these bytes: re-import the instance")


async def _storage_full(request: Request, exc: Exception) -> Response:
    """Storage exhausted outside STOW (which answers per instance itself)."""
    log.error("%s %s: %s", request.method, request.url.path, exc)
    return error(507, str(exc))


async def _unprocessable(request: Request, exc: Exception) -> Response:
    """The stored instance itself is malformed (e.g. a palette whose descriptor and data
    disagree): the server works, this resource cannot be made from these bytes."""
    log.warning("%s: %s", request.url.path, exc)
    return error(422, f"{type(exc).__name__}: {exc}")


async def _dicom_error(request: Request, exc: Exception) -> Response:
    log.warning("%s: %s", request.url.path, exc)
    return error(500, f"{type(exc).__name__}: {exc}")


#: How uvicorn runs the app (``dcmstream serve`` and the test servers alike). h11 refuses a
#: request head it has to buffer beyond ``h11_max_incomplete_event_size`` with a bare 400;
#: kept well above RequestLimitsMiddleware's limits, an oversized head gets the typed
#: 431/414 whether it arrived in one read or in several.
UVICORN_OPTIONS: dict[str, Any] = {"http": "h11", "lifespan": "off", "h11_max_incomplete_event_size": 256 * 1024}


class RequestLimitsMiddleware:
    """Refuse oversized request heads before any handler runs.

    h11 only bounds a header block that arrives slowly; one that arrives in a single
    read is parsed whatever its size. 431 for headers, 414 for the request target.
    """

    def __init__(self, app: Any, max_header_bytes: int = 16 * 1024, max_target_bytes: int = 8 * 1024) -> None:
        self.app = app
        self.max_header_bytes = max_header_bytes
        self.max_target_bytes = max_target_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            size = sum(len(k) + len(v) + 4 for k, v in scope.get("headers", ()))
            target = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
            response = None
            if size > self.max_header_bytes:
                response = error(431, f"request headers of {size} bytes exceed the limit of {self.max_header_bytes}")
            elif target > self.max_target_bytes:
                response = error(414, f"request target of {target} bytes exceeds the limit of {self.max_target_bytes}")
            if response is not None:
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def add_collector(app: Starlette, collector: Collector) -> None:
    """Expose a Prometheus collector of this process (the DIMSE listener's, the
    forwarder's) on ``app``'s ``/metrics`` (see :meth:`.metrics.Metrics.add_collector`)."""
    app.state.dicomweb.metrics.add_collector(collector)


def create_app(archive: Archive, config: ServerConfig | None = None, *, root: str = DICOMWEB_ROOT,
               auth: AuthConfig | None = None, audit: AuditConfig | None = None,
               collectors: Sequence[Collector] = ()) -> Starlette:
    """The Starlette app serving ``archive`` over DICOMweb at ``root``.

    ``collectors``: Prometheus collectors of the process's other parts, read at each
    scrape of ``/metrics`` (more can be added later with :func:`add_collector`).

    ``auth`` (the ``[auth]`` table; default: none) puts :class:`~.auth.AuthMiddleware` in
    front of every handler; ``audit`` (``[audit]``) appends a line per patient-data request
    (:mod:`.audit`); an audit path that cannot be appended to raises ConfigError here.
    """
    config = config or ServerConfig()
    auth = auth or AuthConfig()
    ctx = WebContext(archive, config)
    for collector in collectors:
        ctx.metrics.add_collector(collector)
    middleware = []
    if config.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(config.cors_origins),
                allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                allow_headers=["Accept", "Content-Type", "Range", "Authorization", "Cache-Control", "X-API-Key"],
                expose_headers=[
                    "Content-Type", "Content-Length", "Content-Range", "Content-Encoding", "Warning", "Accept-Ranges",
                    "WWW-Authenticate",
                ],
                max_age=600,
            )
        )
    # Inside CORS (a 401 carries CORS headers; preflights never need credentials), audit
    # outside auth (refused requests are recorded too).
    audit_log = AuditLog(audit.path) if audit is not None and audit.path is not None else None
    if audit_log is not None:
        middleware.append(Middleware(AuditMiddleware, audit=audit_log, root=root, auth_enabled=auth.enabled))
    issuer = OIDCIssuer(auth) if auth.mode == "oidc" else None
    if auth.enabled:
        middleware.append(Middleware(AuthMiddleware, config=auth, root=root, issuer=issuer))
    middleware.insert(0, Middleware(RequestLimitsMiddleware))
    middleware.insert(0, Middleware(MetricsMiddleware, metrics=ctx.metrics))
    handlers: dict[Any, Any] = {
        HTTPException: _http_error,
        InvalidUIDError: _bad_request,
        QueryError: _bad_request,
        BlobNotFoundError: _missing_blob,
        StorageFullError: _storage_full,
        DicomFormatError: _unprocessable,
        DcmstreamError: _dicom_error,
    }
    # The browser viewers (/viewer, and /ohif when installed) are same-origin with the API.
    routes = _routes(root) + viewer_routes()
    app = Starlette(routes=routes, middleware=middleware, exception_handlers=handlers)
    app.state.dicomweb = ctx
    app.state.dicomweb_root = root
    app.state.auth = auth
    app.state.oidc_issuer = issuer
    app.state.audit = audit_log
    return app
