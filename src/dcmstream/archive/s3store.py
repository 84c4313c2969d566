"""Blobs in S3-protocol object storage (Amazon S3, OpenStack Swift's s3api, MinIO, ...).

:class:`S3BlobStore` is a :class:`~.blobstore.BlobStore` over one bucket and key
prefix, on boto3 (no hand-written signing; credentials, region and profiles come from
the standard ``AWS_*`` environment variables and files). What each operation costs:

* ``open(key)``: one HeadObject (size and ETag; remembered for the next ``open`` of the
  key, so a frame request through :class:`~.stored.StoredInstance` costs one GET), then a
  :class:`~dcmstream.io.ranged.RangedSource` whose reads are GetObject requests with a
  Range header and ``If-Match`` the ETag seen at open, so a source never mixes the bytes
  of two versions of an object. A frame request fetches that frame's bytes plus at most
  64 KiB of read-ahead (small reads such as item headers read ahead; frame-sized reads
  fetch exactly their range).
* ``put_file``: one PutObject below ``multipart_threshold``, else a multipart upload of
  ``multipart_chunksize`` parts, ``max_concurrency`` in flight, each read from the file
  by its worker: memory stays at ``max_concurrency * multipart_chunksize`` whatever the
  size of the file. (Not boto3's ``upload_file``: s3transfer does not pass
  ``IfNoneMatch`` to CompleteMultipartUpload, which exclusive puts need.)
* ``exclusive=True`` puts are conditional (``If-None-Match: *`` on PutObject and on
  CompleteMultipartUpload): the key's first writer wins, a later one gets
  :class:`~.blobstore.BlobExistsError`. Amazon S3 decides this atomically. Servers that
  refuse conditional PutObject (Swift 2.30's s3api answers 501) get a one-part
  multipart upload with a conditional completion instead; Swift checks that condition
  before it writes, not atomically with the write, so two exactly simultaneous writers
  can both succeed there.

Staging files (data received before it is put) live in a local folder
(``staging_dir``, a per-bucket folder under the system temporary folder by default), and
are swept like a folder store's (:meth:`~.blobstore.BlobStore.clean_staging`, at start with
``clean_staging_older_than``): a file a live writer holds locked stays, a killed writer's
locked-from-birth file goes at once, others once older than the age limit. The local locks
cannot reach the bucket: objects no catalog row points at are swept by age only
(:func:`~.ingest.sweep_orphans`), and unfinished multipart uploads of a killed put are left
to the bucket's lifecycle rule (``AbortIncompleteMultipartUpload``).
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..cache.lru import LRU
from ..errors import InvalidArgumentError, SourceError
from ..io.ranged import READAHEAD, FetchStats, RangedSource
from ..io.source import ByteSource, as_source
from .blobstore import (
    BlobExistsError,
    BlobNotFoundError,
    BlobStore,
    BlobStoreError,
    InvalidKeyError,
    StorageFullError,
    validate_key,
)

__all__ = ["S3BlobStore", "BlobStoreConnectionError"]

_MIB = 1 << 20
_MIN_PART = 5 * _MIB  # S3: every part but the last is at least 5 MiB
_MAX_PARTS = 10_000
_TRANSIENT_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError", "ServiceUnavailable"}
)


#: Error codes of servers out of space: MinIO (507 with these codes), and quota codes.
_FULL_CODES = frozenset({"XMinioStorageFull", "XMinioAdminBucketQuotaExceeded", "StorageFull", "QuotaExceeded"})


def _status(exc: Any) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class BlobStoreConnectionError(BlobStoreError, ConnectionError):
    """The object store did not answer (connection refused or reset, timeout, 5xx, slow
    down): a transient failure, which ranged reads retry (a ConnectionError)."""


class S3BlobStore(BlobStore):
    """Blobs as objects ``<prefix><key>`` in ``bucket`` (see the module for the costs)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        staging_dir: str | os.PathLike[str] | None = None,
        multipart_threshold: int = 16 * _MIB,
        multipart_chunksize: int = 8 * _MIB,
        max_concurrency: int = 4,
        readahead: int = READAHEAD,
        retries: int = 3,
        backoff: float = 0.1,
        clean_staging_older_than: float | None = 6 * 3600,
        addressing_style: str | None = None,
        head_cache_size: int = 4096,
    ) -> None:
        super().__init__()
        import boto3
        from botocore.config import Config

        if multipart_chunksize < _MIN_PART:
            raise InvalidArgumentError(f"multipart_chunksize must be at least {_MIN_PART} bytes (an S3 rule)")
        if max_concurrency < 1:
            raise InvalidArgumentError("max_concurrency must be >= 1")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        if self.prefix:
            validate_key(self.prefix[:-1])
        self.endpoint_url = endpoint_url
        self.multipart_threshold = max(multipart_threshold, 1)
        self.multipart_chunksize = multipart_chunksize
        self.max_concurrency = max_concurrency
        self.readahead = readahead
        self.retries = retries
        self.backoff = backoff
        #: Requests and bytes fetched by every source this store opened.
        self.fetch_stats = FetchStats()
        self._conditional_put: bool | None = None  # None: not tried yet on this server
        # (size, ETag) of recently opened keys. Blobs are written once, so this is
        # rarely stale; when it is, the If-Match of the read fails (a SourceError) and
        # the entry is dropped, so the next open asks again.
        self._heads: LRU[str, tuple[int, str]] = LRU(head_cache_size)
        self._flag_lock = threading.Lock()

        region = region_name or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        s3_options: dict[str, Any] = {}
        if addressing_style or endpoint_url:
            # A custom endpoint (an IP address, a local server) has no bucket subdomains.
            s3_options["addressing_style"] = addressing_style or "path"
        checksums: dict[str, Any] = {}
        if endpoint_url:
            # S3-compatible servers vary in the newer checksum headers; send them only
            # where an operation requires them.
            checksums = {"request_checksum_calculation": "when_required", "response_checksum_validation": "when_required"}
        session = boto3.session.Session(region_name=region)
        pool = max(10, 2 * max_concurrency + 8)
        # Writes, listings and HEADs: botocore's standard retries.
        self._client = session.client(
            "s3",
            endpoint_url=endpoint_url,
            config=Config(s3=s3_options, retries={"mode": "standard", "max_attempts": retries + 1},
                          max_pool_connections=pool, **checksums),
        )
        # Ranged reads: no botocore retries; RangedSource has the one retry policy of reads.
        self._reader = session.client(
            "s3",
            endpoint_url=endpoint_url,
            config=Config(s3=s3_options, retries={"mode": "standard", "total_max_attempts": 1},
                          max_pool_connections=pool, **checksums),
        )
        if staging_dir is None:
            where = hashlib.sha256(f"{endpoint_url}|{bucket}|{self.prefix}".encode()).hexdigest()[:16]
            staging_dir = Path(tempfile.gettempdir()) / f"dcmstream-s3-staging-{where}"
        self.staging_dir = Path(staging_dir)
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        if clean_staging_older_than is not None:
            self.clean_staging(clean_staging_older_than)

    @property
    def atomic_exclusive(self) -> bool:
        """True once this server has accepted a conditional PutObject (Amazon S3, moto);
        False before, and on servers that refuse it (Swift: checked before the write)."""
        return self._conditional_put is True

    @classmethod
    def from_url(cls, url: str, **options: Any) -> S3BlobStore:
        """A store for ``s3://bucket/prefix`` (``options`` as for the constructor)."""
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise InvalidArgumentError(f"not an s3://bucket/prefix URL: {url!r}")
        return cls(parsed.netloc, parsed.path.lstrip("/"), **options)

    # -- keys and errors ---------------------------------------------------------------------
    def _object(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def _failed(self, what: str, key: str, exc: Exception) -> OSError:
        """The typed error of a failed request: :class:`StorageFullError` when the server
        has no room (507, MinIO's storage-full and quota codes), :class:`BlobStoreConnectionError`
        when it may work again soon (no answer, 5xx, slow down; 503 on the web), else
        :class:`BlobStoreError`."""
        from botocore.exceptions import ClientError, ReadTimeoutError
        from botocore.exceptions import ConnectionError as BotoConnectionError

        name = f"s3://{self.bucket}/{self.prefix}{key}"
        if isinstance(exc, ClientError):
            status, code = _status(exc), _code(exc)
            if status == 507 or code in _FULL_CODES:
                return StorageFullError(errno.ENOSPC, f"{name}: {what} failed: the object store is full ({code or status})")
            if status >= 500 or code in _TRANSIENT_CODES:
                return BlobStoreConnectionError(f"{name}: {what} failed ({exc})")
        elif isinstance(exc, (BotoConnectionError, ReadTimeoutError)):
            return BlobStoreConnectionError(f"{name}: {what} failed ({exc})")
        return BlobStoreError(f"{name}: {what} failed ({exc})")

    def _head(self, key: str) -> dict[str, Any] | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response: dict[str, Any] = self._client.head_object(Bucket=self.bucket, Key=self._object(key))
            return response
        except ClientError as exc:
            if _status(exc) == 404 or _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._failed("HeadObject", key, exc) from exc
        except BotoCoreError as exc:
            raise self._failed("HeadObject", key, exc) from exc

    # -- reads -------------------------------------------------------------------------------
    def open(self, key: str) -> ByteSource:
        object_key = self._object(key)
        known = self._heads.get(key)
        if known is None:
            head = self._head(key)
            if head is None:
                raise BlobNotFoundError(key)
            known = (int(head["ContentLength"]), str(head.get("ETag", "")))
            self._heads.put(key, known)
        size, etag = known
        name = f"s3://{self.bucket}/{object_key}"
        fetch = self._range_fetcher(object_key, etag, name, forget=lambda: self._heads.pop(key))
        return RangedSource(
            fetch,
            size,
            name=name,
            readahead=self.readahead,
            retries=self.retries,
            backoff=self.backoff,
            stats=self.fetch_stats,
            on_read=self.count_read,
        )

    def _range_fetcher(self, object_key: str, etag: str, name: str, forget: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        client, bucket = self._reader, self.bucket
        condition = {"IfMatch": etag} if etag else {}

        def fetch(start: int, end: int) -> bytes:
            try:
                response = client.get_object(Bucket=bucket, Key=object_key, Range=f"bytes={start}-{end - 1}", **condition)
            except ClientError as exc:
                status, code = _status(exc), _code(exc)
                if status >= 500 or code in _TRANSIENT_CODES:
                    raise BlobStoreConnectionError(f"{code or status}: {exc}") from exc
                if status in (404, 412, 416):
                    forget()  # the next open asks for the current size and ETag
                if status == 412:
                    raise SourceError(f"{name}: the object changed since it was opened (ETag {etag})") from exc
                if status == 404:
                    raise SourceError(f"{name}: the object was deleted since it was opened") from exc
                if status == 416:
                    raise SourceError(f"{name}: bytes {start}-{end - 1} are past the object's end (truncated?)") from exc
                raise SourceError(f"{name}: GetObject failed ({exc})") from exc
            except BotoCoreError as exc:  # connection refused/reset, timeouts
                raise BlobStoreConnectionError(f"{type(exc).__name__}: {exc}") from exc
            body = response["Body"]
            try:
                content_range = str(response.get("ContentRange", ""))
                if not content_range.startswith(f"bytes {start}-"):
                    # A server that ignored the Range would send the whole object.
                    raise SourceError(f"{name}: the server ignored the range {start}-{end - 1} ({content_range!r})")
                data: bytes = body.read(end - start + 1)
                return data
            except BotoCoreError as exc:  # the connection broke inside the body
                raise BlobStoreConnectionError(f"{type(exc).__name__}: {exc}") from exc
            finally:
                body.close()

        return fetch

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def size(self, key: str) -> int:
        head = self._head(key)
        if head is None:
            raise BlobNotFoundError(key)
        return int(head["ContentLength"])

    def modified(self, key: str) -> float:
        head = self._head(key)
        if head is None:
            raise BlobNotFoundError(key)
        return float(head["LastModified"].timestamp())

    def keys(self, prefix: str = "") -> Iterator[str]:
        """Keys under ``prefix``, sorted (S3 lists in UTF-8 byte order, which for these
        ASCII keys is Python's order), page by page: nothing is held beyond a page."""
        from botocore.exceptions import BotoCoreError, ClientError

        skip = len(self.prefix)
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for item in page.get("Contents", ()):
                    key = str(item["Key"])[skip:]
                    try:
                        yield validate_key(key)
                    except InvalidKeyError:
                        continue  # an object some other tool put there
        except (ClientError, BotoCoreError) as exc:
            raise self._failed("ListObjectsV2", prefix, exc) from exc

    # -- writes ------------------------------------------------------------------------------
    def delete(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        self._heads.pop(key)
        if self._head(key) is None:
            return False
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._object(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._failed("DeleteObject", key, exc) from exc
        return True

    def put_file(self, key: str, path: str | os.PathLike[str], *, move: bool = False, exclusive: bool = False) -> int:
        object_key = self._object(key)
        self._heads.pop(key)
        path = Path(path)
        size = path.stat().st_size  # FileNotFoundError before anything is sent
        if exclusive and self._head(key) is not None:
            raise BlobExistsError(key)  # the cheap early answer; the condition decides
        if size >= self.multipart_threshold or (exclusive and self._conditional_put is False):
            self._put_multipart(key, object_key, path, size, exclusive)
        else:
            with open(path, "rb") as fh:
                self._put_object(key, object_key, fh, size, exclusive)
        if move:
            path.unlink(missing_ok=True)
        return size

    def put_bytes(self, key: str, data: bytes | Iterable[bytes], *, exclusive: bool = False) -> int:
        plain_put = not (exclusive and self._conditional_put is False)
        if isinstance(data, (bytes, bytearray, memoryview)) and len(data) < self.multipart_threshold and plain_put:
            object_key = self._object(key)
            self._heads.pop(key)
            body = bytes(data)
            self._put_object(key, object_key, body, len(body), exclusive)
            return len(body)
        return super().put_bytes(key, data, exclusive=exclusive)

    def _put_object(self, key: str, object_key: str, body: Any, size: int, exclusive: bool) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        extra = {"IfNoneMatch": "*"} if exclusive else {}
        for attempt in range(self.retries + 1):
            try:
                self._client.put_object(Bucket=self.bucket, Key=object_key, Body=body, ContentLength=size, **extra)
                if exclusive:
                    self._conditional_put = True
                return
            except ClientError as exc:
                status = _status(exc)
                if exclusive and status == 412:
                    raise BlobExistsError(key) from exc
                if exclusive and status == 501:
                    # This server refuses conditional PutObject: use conditional
                    # multipart completions from now on.
                    self._conditional_put = False
                    self._put_multipart(key, object_key, body, size, exclusive)
                    return
                if exclusive and status == 409 and attempt < self.retries:
                    # ConditionalRequestConflict: another conditional write of the key is
                    # in flight; once it ends, the retry gets 412 (or wins if it failed).
                    self._rewind(body)
                    time.sleep(self.backoff * (2**attempt))
                    continue
                raise self._failed("PutObject", key, exc) from exc
            except BotoCoreError as exc:
                raise self._failed("PutObject", key, exc) from exc

    @staticmethod
    def _rewind(body: Any) -> None:
        if hasattr(body, "seek"):
            body.seek(0)

    def _put_multipart(self, key: str, object_key: str, source: Any, size: int, exclusive: bool) -> None:
        """Multipart upload of ``source`` (a path, an open file or bytes); ``size`` bytes."""
        from botocore.exceptions import BotoCoreError, ClientError

        chunk = max(self.multipart_chunksize, -(-size // _MAX_PARTS))
        count = max(1, -(-size // chunk))
        try:
            upload = self._client.create_multipart_upload(Bucket=self.bucket, Key=object_key)
        except (ClientError, BotoCoreError) as exc:
            raise self._failed("CreateMultipartUpload", key, exc) from exc
        upload_id = upload["UploadId"]
        # The one byte-source layer reads the parts (pread on a path: workers read in parallel;
        # a file object under a lock); a source the caller passed in stays open.
        read_part: ByteSource | None = None
        owned = not isinstance(source, ByteSource)

        def send(number: int) -> dict[str, Any]:
            assert read_part is not None
            start = (number - 1) * chunk
            # read by the worker: one chunk per worker in memory
            body = read_part.read_exact(start, min(chunk, size - start), f"part {number} of the upload")
            response = self._client.upload_part(
                Bucket=self.bucket, Key=object_key, UploadId=upload_id, PartNumber=number, Body=body
            )
            return {"PartNumber": number, "ETag": response["ETag"]}

        try:
            read_part = as_source(source)
            if count == 1:
                parts = [send(1)]
            else:
                with ThreadPoolExecutor(max_workers=min(self.max_concurrency, count), thread_name_prefix="s3-part") as pool:
                    parts = list(pool.map(send, range(1, count + 1)))
            extra = {"IfNoneMatch": "*"} if exclusive else {}
            self._client.complete_multipart_upload(
                Bucket=self.bucket, Key=object_key, UploadId=upload_id, MultipartUpload={"Parts": parts}, **extra
            )
        except BaseException as exc:
            try:
                self._client.abort_multipart_upload(Bucket=self.bucket, Key=object_key, UploadId=upload_id)
            except (ClientError, BotoCoreError):
                pass  # a bucket lifecycle rule removes abandoned uploads
            if isinstance(exc, ClientError):
                if exclusive and _status(exc) in (409, 412):
                    raise BlobExistsError(key) from exc
                raise self._failed("multipart upload", key, exc) from exc
            if isinstance(exc, BotoCoreError):
                raise self._failed("multipart upload", key, exc) from exc
            raise
        finally:
            if read_part is not None and owned:
                read_part.close()

    # -- staging -----------------------------------------------------------------------------
    def staging_path(self, suffix: str = ".tmp") -> Path:
        return self.staging_dir / f"{uuid.uuid4().hex}{suffix}"

    def abort_uploads(self, key: str) -> int:
        """Abort unfinished multipart uploads of ``key`` (a killed put's parts, which are
        stored and billed but never listed); returns how many. Used by lifecycle recovery."""
        from botocore.exceptions import BotoCoreError, ClientError

        object_key = self._object(key)
        try:
            uploads = self._client.list_multipart_uploads(Bucket=self.bucket, Prefix=object_key).get("Uploads", ())
            n = 0
            for upload in uploads:
                if upload.get("Key") == object_key:
                    self._client.abort_multipart_upload(Bucket=self.bucket, Key=object_key, UploadId=upload["UploadId"])
                    n += 1
        except (ClientError, BotoCoreError) as exc:
            raise self._failed("ListMultipartUploads/AbortMultipartUpload", key, exc) from exc
        return n

    def __repr__(self) -> str:
        where = f", endpoint_url={self.endpoint_url!r}" if self.endpoint_url else ""
        return f"S3BlobStore({self.bucket!r}, {self.prefix!r}{where})"


