"""Open DICOM where it lies: ``http(s)://``, ``s3://`` and ``gs://`` objects read by range.

:func:`open_url` returns a :class:`~dcmstream.io.ranged.RangedSource` (read-ahead,
counters, typed errors) whose fetches are range GETs, so ``dcmstream.open(url)`` reads
the header and offset table with a few requests and then one request per frame.

**The client: obstore** (PyPI ``obstore``, Rust ``object_store`` under a small Python
API). Chosen over fsspec because one wheel (~5 MB, ~16 MB installed, no Python
dependencies) speaks HTTP, S3 and GCS, while fsspec needs three more stacks
(``aiohttp`` for HTTP, ``s3fs``/``aiobotocore`` for S3, ``gcsfs``/``google-auth`` for
GCS, none installed here) and runs them on an asyncio loop thread; and because of how it
fails: a server that answers a Range request with ``200`` and the whole body is refused
with ``NotSupportedError`` once the status line is read (fsspec's HTTP file falls back to
streaming the whole body), a short 206 is ``UnexpectedRange``, and dropped connections,
5xx and timeouts are retried by its own exponential backoff with jitter (also mid-body:
a GET whose body is cut is re-requested). Credentials and endpoints come from the usual
environment variables (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``,
``AWS_ENDPOINT_URL``, ``AWS_REGION``; ``GOOGLE_APPLICATION_CREDENTIALS``,
``GOOGLE_SERVICE_ACCOUNT*``, ``GOOGLE_BASE_URL``).

What an open costs:

* **cold**: one GET of the first ``readahead`` bytes (64 KiB), which also tells the size,
  ETag and whether ranges work (a server ignoring Range is a
  :class:`RangeNotSupportedError`, never a silent whole download, unless the caller passes
  ``download=True``: then the object is streamed into a temporary file once). The header
  walk asks for more only when the header is longer (growing geometrically, see
  :class:`~dcmstream.io.reader.SourceReader`); a Basic Offset Table adds one request for
  the last frame's item header. Frames are one request each for exactly their bytes.
* **warm**: with the open cache (:mod:`~dcmstream.io.open_cache`, on unless
  ``open_cache=False`` or ``DCMSTREAM_INDEX_CACHE=off``) one HEAD validates the kept open
  footprint against the object's size and ETag; the header and frame index are rebuilt
  from it without another request.

Every range GET carries ``If-Match`` with the ETag seen at open (strong ETags only), so a
source never mixes two versions of an object: a change is a
:class:`~dcmstream.errors.SourceError` naming it. Anonymous access (public buckets such as
Imaging Data Commons') is used when no credentials are in the environment, or with
``anon=True``.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeGuard
from urllib.parse import urlsplit

from ..errors import InvalidArgumentError, MissingDependencyError, PathNotFoundError, SourceError
from .open_cache import OpenCache, OpenRecord
from .ranged import READAHEAD, FetchStats, RangedSource, Segments
from .source import ByteSource, FileObjectSource

__all__ = ["RangeNotSupportedError", "is_url", "iter_url", "list_url", "open_url", "RemoteObject"]

_URL = re.compile(r"^(https?|s3|gs)://", re.IGNORECASE)
_S3_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                   "AWS_CONTAINER_CREDENTIALS_FULL_URI")
_GCS_CREDENTIALS = ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_SERVICE_ACCOUNT", "GOOGLE_SERVICE_ACCOUNT_PATH",
                    "GOOGLE_SERVICE_ACCOUNT_KEY", "GOOGLE_BEARER_TOKEN")


class RangeNotSupportedError(SourceError):
    """The server answered a Range request with the whole object (or refused ranges): reading
    it frame by frame is impossible; ``open_url(..., download=True)`` downloads it once."""


def is_url(obj: object) -> TypeGuard[str]:
    """Whether ``obj`` is a string naming a remote object (``http(s)://``, ``s3://``, ``gs://``)."""
    return isinstance(obj, str) and _URL.match(obj) is not None


def _obstore() -> Any:
    try:
        import obstore
    except ImportError as exc:  # pragma: no cover - a dependency; missing only in broken installs
        raise MissingDependencyError("reading URLs needs obstore: pip install obstore") from exc
    return obstore


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _translate(exc: BaseException, name: str, what: str) -> SourceError:
    """obstore's error as the project's typed error (the message's first line kept)."""
    from obstore import exceptions as oe

    detail = _first_line(exc)
    if isinstance(exc, (FileNotFoundError, oe.NotFoundError)):
        return PathNotFoundError(f"{name}: no such object ({detail})")
    if isinstance(exc, oe.NotSupportedError) and "range" in str(exc).lower():
        return RangeNotSupportedError(
            f"{name}: the server does not answer Range requests (it sent the whole object); "
            "open it with download=True to download it once, or use a server with byte ranges"
        )
    if isinstance(exc, oe.PreconditionError):
        return SourceError(f"{name}: the object changed while it was read (ETag differs): open it again")
    if isinstance(exc, (oe.PermissionDeniedError, oe.UnauthenticatedError)):
        return SourceError(f"{name}: access denied ({detail}); set credentials in the environment or anon=True")
    return SourceError(f"{name}: {what} failed ({detail})")


@dataclass(frozen=True)
class _Where:
    store: Any
    path: str
    scheme: str


def _retry_config(retries: int, backoff: float, timeout: float) -> dict[str, Any]:
    return {
        "max_retries": retries,
        "backoff": {"init_backoff": timedelta(seconds=backoff), "max_backoff": timedelta(seconds=max(backoff, 1.0) * 8),
                    "base": 2},
        "retry_timeout": timedelta(seconds=max(timeout * (retries + 1), 1.0)),
    }


_STORES: dict[tuple[Any, ...], Any] = {}
_STORES_LOCK = threading.Lock()


def _locate(url: str, *, anon: bool | None, endpoint_url: str | None, retries: int, backoff: float,
            timeout: float) -> _Where:
    """The obstore store and path of ``url``; S3 and GCS stores are shared per bucket and
    settings (their connection pools are reused across the objects of a series)."""
    obstore = _obstore()
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    client: dict[str, Any] = {"timeout": timedelta(seconds=timeout), "connect_timeout": timedelta(seconds=min(timeout, 10))}
    retry = _retry_config(retries, backoff, timeout)
    if scheme in ("http", "https"):
        # The whole URL (query included: presigned URLs keep their signature) is the store.
        client["allow_http"] = True
        store = obstore.store.HTTPStore.from_url(url, client_options=client, retry_config=retry)
        return _Where(store, "", scheme)
    bucket, key = parts.netloc, parts.path.lstrip("/")
    if not bucket:
        raise InvalidArgumentError(f"{url}: no bucket in the URL")
    if scheme == "s3":
        endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        signed = any(os.environ.get(k) for k in _S3_CREDENTIALS) if anon is None else not anon
        config: dict[str, Any] = {"skip_signature": not signed}
        if endpoint:
            config["endpoint"] = endpoint
        env = tuple(os.environ.get(k) for k in (*_S3_CREDENTIALS, "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
                                                 "AWS_DEFAULT_REGION"))
        make = obstore.store.S3Store
    else:  # gs
        endpoint = endpoint_url or os.environ.get("GOOGLE_BASE_URL")
        adc = os.path.join(os.path.expanduser("~"), ".config", "gcloud", "application_default_credentials.json")
        signed = (any(os.environ.get(k) for k in _GCS_CREDENTIALS) or os.path.exists(adc)) if anon is None else not anon
        config = {"skip_signature": not signed}
        if endpoint:
            config["base_url"] = endpoint
        env = tuple(os.environ.get(k) for k in _GCS_CREDENTIALS)
        make = obstore.store.GCSStore
    if endpoint and endpoint.lower().startswith("http://"):
        client["allow_http"] = True
    key_ = (scheme, bucket, tuple(sorted(config.items())), env, retries, backoff, timeout)
    with _STORES_LOCK:
        store = _STORES.get(key_)
        if store is None:
            if len(_STORES) >= 64:
                _STORES.pop(next(iter(_STORES)))
            store = make(bucket, config=config, client_options=client, retry_config=retry)
            _STORES[key_] = store
    return _Where(store, key, scheme)


class RemoteObject:
    """One remote object: its store, path and version (what :func:`open_url` reads through)."""

    def __init__(self, url: str, where: _Where, version: OpenRecord) -> None:
        self.url = url
        self.where = where
        self.version = version
        etag = version.etag
        # If-Match compares strongly: a weak ETag (W/"...") would never match.
        self._if_match = etag if etag and not etag.startswith("W/") else None

    def fetch(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` with one range GET (If-Match the version seen at open)."""
        obstore = _obstore()
        options: dict[str, Any] = {"range": (start, end)}
        if self._if_match:
            options["if_match"] = self._if_match
        try:
            return obstore.get(self.where.store, self.where.path, options=options).bytes()
        except Exception as exc:  # noqa: BLE001 - obstore's errors, typed here
            raise _translate(exc, self.url, f"bytes {start}-{end - 1}") from exc


def _version(meta: dict[str, Any]) -> OpenRecord:
    modified = meta.get("last_modified")
    return OpenRecord(int(meta["size"]), meta.get("e_tag"), None if modified is None else modified.isoformat())


def _head(url: str, where: _Where) -> OpenRecord:
    obstore = _obstore()
    try:
        return _version(obstore.head(where.store, where.path))
    except Exception as exc:  # noqa: BLE001 - obstore's errors, typed here
        raise _translate(exc, url, "HEAD") from exc


def _download(url: str, where: _Where, stats: FetchStats | None) -> ByteSource:
    obstore = _obstore()
    tmp = tempfile.TemporaryFile(prefix="dcmstream-download-")  # noqa: SIM115 - the returned source owns it
    total = 0
    try:
        result = obstore.get(where.store, where.path)
        for chunk in result.stream(min_chunk_size=1 << 20):
            tmp.write(chunk)
            total += len(chunk)
        tmp.flush()
    except Exception as exc:  # noqa: BLE001 - obstore's errors, typed here
        tmp.close()
        raise _translate(exc, url, "download") from exc
    if stats is not None:
        stats.add(total)
    return FileObjectSource(tmp, url, owned=True)  # (a local file now: closing it deletes it)


def _open_cache(open_cache: OpenCache | bool | None) -> OpenCache | None:
    if isinstance(open_cache, OpenCache):
        return open_cache
    if open_cache is False:
        return None
    if os.environ.get("DCMSTREAM_INDEX_CACHE", "").lower() in ("off", "0", "none", "false"):
        return None
    return OpenCache()


def open_url(
    url: str,
    *,
    anon: bool | None = None,
    download: bool = False,
    readahead: int = READAHEAD,
    retries: int = 3,
    backoff: float = 0.1,
    timeout: float = 30.0,
    endpoint_url: str | None = None,
    open_cache: OpenCache | bool | None = None,
    stats: FetchStats | None = None,
) -> ByteSource:
    """A byte source over the object at ``url`` (``http(s)://``, ``s3://``, ``gs://``).

    See the module for what it costs and how it fails. ``anon``: None signs requests when
    credentials are in the environment, True never, False always. ``download=True``
    accepts a server that ignores Range by downloading the object once into a temporary
    file. ``retries``/``backoff``/``timeout``: the client's retry policy (exponential
    backoff with jitter; connection errors, 5xx, dropped bodies). ``open_cache``: an
    :class:`~dcmstream.io.open_cache.OpenCache`, None for the default folder, False for
    none. ``stats`` collects the requests and bytes of every fetch (shared counters).
    """
    if not is_url(url):
        raise InvalidArgumentError(f"{url!r} is not an http(s)://, s3:// or gs:// URL")
    if readahead < 1:
        raise InvalidArgumentError("readahead must be >= 1")
    obstore = _obstore()
    where = _locate(url, anon=anon, endpoint_url=endpoint_url, retries=retries, backoff=backoff, timeout=timeout)
    cache = _open_cache(open_cache)
    known: Segments = []
    seed: bytes | None = None
    version: OpenRecord | None = None
    if cache is not None and cache.has(url):
        version = _head(url, where)  # the one request of a warm open
        known = cache.get(url, version) or []
    if not known:
        try:
            first = obstore.get(where.store, where.path, options={"range": (0, readahead)})
            seed = bytes(first.bytes())
            version = _version(first.meta)
        except Exception as exc:  # noqa: BLE001 - obstore's errors, typed here
            err = _translate(exc, url, "the first range request")
            if isinstance(err, RangeNotSupportedError) and download:
                return _download(url, where, stats)
            if isinstance(err, (RangeNotSupportedError, PathNotFoundError)):
                raise err from exc
            # An empty object has no first byte to ask for: a HEAD tells (and when the HEAD
            # fails too, the first error is the one to report).
            try:
                version = _head(url, where)
            except SourceError:
                raise err from exc
            if version.size != 0:
                raise err from exc
            seed = b""
        if stats is not None:
            stats.add(len(seed))
    assert version is not None
    obj = RemoteObject(url, where, version)
    on_opened = None
    if cache is not None and not known:
        cache_ = cache
        final = version

        def on_opened(segments: Segments) -> None:
            cache_.put(url, final, segments)

    source = RangedSource(
        obj.fetch,
        version.size,
        name=url,
        readahead=readahead,
        retries=0,  # the client retries (its backoff also covers dropped bodies and 5xx)
        stats=stats,
        known=known,
        record=on_opened is not None,
        on_opened=on_opened,
        identity=("url", url, str(version.size), version.etag or version.last_modified or ""),
        grow_to=max(readahead, 1 << 20),
    )
    if seed:
        source.seed(0, seed)
        source.fetched.add(len(seed))
    elif known:
        source.fetched.add(0)  # the HEAD that validated the open cache's entry
        if stats is not None:
            stats.add(0)
    return source


def list_url(prefix: str, *, anon: bool | None = None, endpoint_url: str | None = None, retries: int = 3,
             backoff: float = 0.1, timeout: float = 30.0) -> list[str]:
    """The URLs of the objects under an ``s3://bucket/prefix/`` or ``gs://bucket/prefix/``,
    sorted (folder markers, keys ending in ``/``, left out). HTTP has no listing."""
    return sorted(iter_url(prefix, anon=anon, endpoint_url=endpoint_url, retries=retries, backoff=backoff, timeout=timeout))


def iter_url(prefix: str, *, anon: bool | None = None, endpoint_url: str | None = None, retries: int = 3,
             backoff: float = 0.1, timeout: float = 30.0) -> Iterator[str]:
    """:func:`list_url` lazily, page by page, in the store's order (S3 and GCS: key order),
    for pipelines over millions of objects."""
    if not is_url(prefix):
        raise InvalidArgumentError(f"{prefix!r} is not an s3:// or gs:// URL")
    where = _locate(prefix, anon=anon, endpoint_url=endpoint_url, retries=retries, backoff=backoff, timeout=timeout)
    if where.scheme in ("http", "https"):
        raise InvalidArgumentError(f"{prefix}: an HTTP server has no listing; name the files' URLs")
    obstore = _obstore()
    bucket = urlsplit(prefix).netloc
    pages = iter(obstore.list(where.store, where.path or None))
    while True:
        try:
            page = next(pages, None)
        except Exception as exc:  # noqa: BLE001 - obstore's errors, typed here
            raise _translate(exc, prefix, "listing") from exc
        if page is None:
            return
        for meta in page:
            key = str(meta["path"])
            if key and not key.endswith("/"):
                yield f"{where.scheme}://{bucket}/{key}"
