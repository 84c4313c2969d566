"""Shared pieces of the DICOMweb handlers: context, UID parameters, errors, caches."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ..archive import Archive, IngestResult, InstanceRecord
from ..archive.uids import is_valid_uid
from ..cache import ByteBudgetLRU
from ..cache.lru import LRU
from ..image.render import Renderer
from .media import MediaRange, accepts, parse_accept
from .metrics import Metrics

__all__ = [
    "ServerConfig",
    "WebContext",
    "context",
    "path_uid",
    "base_url",
    "run",
    "error",
    "warning",
    "require_json_accept",
    "find_instance",
    "DICOM_JSON",
]

T = TypeVar("T")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
DICOM_JSON = "application/dicom+json"
MiB = 1 << 20


@dataclass(frozen=True)
class ServerConfig:
    """Limits and options of one server (defaults suit a workstation)."""

    cors_origins: tuple[str, ...] = ()
    max_upload_bytes: int = 4 << 30  # STOW-RS body, spooled to disk, never to memory
    max_part_header_bytes: int = 16 * 1024
    max_results: int = 10_000  # QIDO-RS: more are cut, with a Warning header
    max_frames_per_request: int = 100_000
    metadata_cache_bytes: int = 64 * MiB
    thumbnail_size: int = 128
    max_viewport: int = 4096
    #: Fixed public root of the server (e.g. behind a reverse proxy); None: from the request.
    public_url: str | None = None


class WebContext:
    """What every handler needs: the archive, the config, metrics and caches."""

    def __init__(self, archive: Archive, config: ServerConfig) -> None:
        self.archive = archive
        self.config = config
        self.metrics = Metrics()
        #: Series/study metadata responses (bytes); see :func:`.wado.metadata` for what is kept.
        self.metadata_cache = ByteBudgetLRU("metadata", config.metadata_cache_bytes)
        #: Renderers (display parameters) of recently rendered instances.
        self.renderers: LRU[str, Renderer] = LRU(64)
        archive.add_listener(self._on_ingest)

    def _on_ingest(self, result: IngestResult) -> None:
        # Versions in the keys already make stale entries unreachable; dropping them
        # frees the memory at once.
        study = result.study_uid
        self.metadata_cache.remove_where(lambda key: isinstance(key, tuple) and key[0] == study)


def context(request: Request) -> WebContext:
    return request.app.state.dicomweb


def path_uid(request: Request, name: str, what: str) -> str:
    """A UID path parameter, validated: 400 with the reason otherwise."""
    value = request.path_params.get(name, "")
    if not is_valid_uid(value):
        # Shown only when it is UID-like (a typo); anything else a client put there (a
        # patient's name or ID, by mistake) is not echoed into error bodies and logs.
        uid_like = value and len(value) <= 80 and all(c.isdigit() or c == "." for c in value)
        shown = f"{value!r} " if uid_like else ""
        raise HTTPException(400, f"{what} {shown}is not a valid UID (digits and dots, at most 64 characters)")
    return value


def base_url(request: Request) -> str:
    """The DICOMweb root as the client reached it (for RetrieveURL and BulkDataURI).

    ``ServerConfig.public_url`` wins when set. dicomweb-client 0.61 sends a Host
    header without the port; when the host is an IP literal or localhost (a direct
    connection, not a proxy's name) the port the request really arrived on is added.
    """
    ctx = context(request)
    if ctx.config.public_url:
        return ctx.config.public_url.rstrip("/") + request.app.state.dicomweb_root
    url = request.base_url
    server = request.scope.get("server")
    host = url.hostname or ""
    if url.port is None and server and server[1] not in (80, 443) and (host == "localhost" or _is_ip(host)):
        url = url.replace(port=server[1])
    return str(url).rstrip("/") + request.app.state.dicomweb_root


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


async def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run blocking work (SQL, file reads, decoding) in the thread pool."""
    return await run_in_threadpool(fn, *args, **kwargs)


def error(status: int, reason: str, headers: dict[str, str] | None = None) -> Response:
    """An error response whose body says why, as JSON: {"status": ..., "error": ...}."""
    return Response(
        json.dumps({"status": status, "error": reason}),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def warning(text: str, limit: int = 300) -> str:
    """One ``Warning: 299`` header value saying ``text``.

    Header values are latin-1 on the wire and the quoted text must not end early, so
    what a client sent (unknown query keys, names in an ingest's message) is escaped:
    non-ASCII as ``\\uXXXX``, quotes by ``'``, control characters by spaces.
    """
    text = _CONTROL.sub(" ", text.encode("ascii", "backslashreplace").decode("ascii").replace('"', "'"))
    return f'299 dcmstream "{text[:limit]}"'


def require_json_accept(request: Request) -> list[MediaRange]:
    ranges = parse_accept(request.headers.get("accept"))
    if accepts(ranges, DICOM_JSON, "application/json") is None:
        raise HTTPException(406, "this resource is available as application/dicom+json (or application/json) only")
    return ranges


async def find_instance(request: Request) -> InstanceRecord:
    """The record named by the path's study/series/instance UIDs, or 404."""
    study = path_uid(request, "study", "StudyInstanceUID")
    series = path_uid(request, "series", "SeriesInstanceUID")
    sop = path_uid(request, "instance", "SOPInstanceUID")
    archive = context(request).archive
    # Hot path (a viewer scrolling): the record is memoised, no thread hop needed, unless
    # the catalog's delete counter is due for a look (another process may have deleted it).
    memo = None if archive.deletions_due() else archive.peek(sop)[0]
    record = memo or await run(archive.record, sop)
    if record is None or record.study_uid != study or record.series_uid != series:
        raise HTTPException(404, f"instance {sop} not found in series {series} of study {study}")
    return record
