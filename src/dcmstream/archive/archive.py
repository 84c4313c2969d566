"""The :class:`Archive`: one catalog plus its blob stores (tiers), and what reads and writes them.

The catalog (SQLite by default, :mod:`.catalog`) holds a row per SOP Instance with its
DICOM JSON, frame index and pixel description; the blob store (files by default,
:mod:`.blobstore`) holds the bytes. ``Archive`` ties them together: it ingests files
(the step itself is :mod:`.ingest`), tells listeners about stored instances, memoises
records and frame readers, and is the one place that knows the on-disk layout
(``catalog.sqlite`` + ``objects/`` + ``tmp/``), so other packages open an ``Archive``
instead of its parts.

Storage tiers: an archive has one or more blob stores by name, in order (``tiers``); the
first is where new instances are written (``blobs``), the others receive instances the
lifecycle rules move (:mod:`.lifecycle`). Each catalog row knows its tier (NULL: the
first), and every read goes to the record's tier (:meth:`Archive.store_of`), so reads are
transparent from any tier. Reads are noted by an :class:`~.access.AccessTracker` (batched,
no catalog write per request), which the "days without access" rules use.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..cache import FrameCache, default_cache
from ..cache.lru import LRU
from ..errors import DcmstreamError, DicomFormatError, InvalidArgumentError, UnsupportedTransferSyntaxError
from ..io.source import ByteSource
from .access import AccessTracker
from .blobstore import BlobNotFoundError, BlobStore, FilesystemBlobStore, StagingFile, iter_source
from .catalog import Catalog, InstanceRecord, SQLiteCatalog
from .deletion import DeleteHook, DeleteResult, finish_deletions
from .deletion import delete as delete_scope
from .ingest import IngestResult, ingest_file, iter_files
from .stored import StoredInstance
from .uids import validate_uid

if TYPE_CHECKING:
    from ..image.instance import Instance

__all__ = ["Archive", "UnknownTierError", "MissingBlobError", "InstanceChangedError", "InstanceDeletedError", "DEFAULT_TIER"]

log = logging.getLogger(__name__)

_CATALOG_FILE = "catalog.sqlite"
#: The name of the one tier of an archive made without ``tiers``.
DEFAULT_TIER = "hot"


class UnknownTierError(DcmstreamError, KeyError):
    """A catalog row (or a caller) names a storage tier this archive is not configured
    with (a KeyError, so also a LookupError)."""

    def __str__(self) -> str:
        # KeyError's str() is the repr of its argument: say what is wrong instead.
        return str(self.args[0]) if self.args else "unknown storage tier"


class MissingBlobError(BlobNotFoundError):
    """An instance the catalog lists whose bytes are gone: no blob under its key in its
    tier, and the catalog points nowhere else (or lists it no more). 410 on the web."""

    def __init__(self, record: InstanceRecord, tier: str) -> None:
        super().__init__(record.blob_key)
        self.sop_uid = record.sop_uid
        self.tier = tier

    def __str__(self) -> str:
        return f"instance {self.sop_uid}: its blob {self.key!r} is missing from storage tier {self.tier!r}"


class InstanceDeletedError(BlobNotFoundError):
    """An instance whose bytes a reader looked for is no longer catalogued: deleted (maybe
    by another process) since the reader's record was memoised. 404 on the web, as for an
    instance that never existed."""

    def __init__(self, record: InstanceRecord) -> None:
        super().__init__(record.blob_key)
        self.sop_uid = record.sop_uid

    def __str__(self) -> str:
        return f"instance {self.sop_uid} is not in the archive (deleted)"


class InstanceChangedError(BlobNotFoundError):
    """The bytes of an instance were replaced (a compression swap, maybe in another
    process) while a reader bound to their old layout (frame index, transfer syntax)
    was reading them: read the instance again. 503 on the web."""

    def __init__(self, record: InstanceRecord, current: InstanceRecord) -> None:
        super().__init__(record.blob_key)
        self.sop_uid = record.sop_uid
        self.current = current

    def __str__(self) -> str:
        return (f"instance {self.sop_uid}: its blob {self.key!r} was replaced by {self.current.blob_key!r} "
                f"({self.current.transfer_syntax}) while being read; read it again")


class ArchiveWorker(Protocol):
    """A background job attached to an archive (the compression policy, which lives in a
    higher layer); the web layer exposes its :meth:`metrics` on ``/metrics``."""

    def metrics(self) -> dict[str, int]: ...


class Archive:
    """A DICOM archive in one folder: ``catalog.sqlite`` + ``objects/`` + ``tmp/``.

    Other catalogs or blob stores can be passed in (PostgreSQL, object storage), and
    several stores as ordered storage tiers: ``tiers={"hot": FilesystemBlobStore(root),
    "cold": S3BlobStore(...)}`` (the first receives new instances and is ``blobs``; without
    ``tiers`` the archive has one tier, :data:`DEFAULT_TIER`). ``tier_prices`` (per GB and
    month, by tier name) feed the cost estimate of ``/metrics`` and ``lifecycle status``.
    Reads are noted in batches every ``access_interval`` seconds (``track_access=False``:
    not at all). Opening sweeps killed writers' staging files and finishes journalled
    deletions (``sweep_on_open=False``: not, for a dry run of :func:`.sweep.sweep`).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        catalog: Catalog | None = None,
        blobs: BlobStore | None = None,
        tiers: Mapping[str, BlobStore] | None = None,
        cache: FrameCache | None | bool = None,
        stored_cache_size: int = 512,
        fsync: bool = True,
        tier_prices: Mapping[str, float] | None = None,
        track_access: bool = True,
        access_interval: float = 30.0,
        staging_max_age: float = 3600.0,
        deletion_check_interval: float = 1.0,
        sweep_on_open: bool = True,
    ) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        if tiers:
            first = next(iter(tiers.values()))
            if blobs is not None and blobs is not first:
                raise InvalidArgumentError("Archive(blobs=, tiers=): blobs must be the first tier's store (or left out)")
            blobs = first
        self.blobs = blobs if blobs is not None else FilesystemBlobStore(self.root, fsync=fsync)
        #: Storage tiers by name, in order; the first (:attr:`hot_tier`) is :attr:`blobs`.
        self.tiers: dict[str, BlobStore] = dict(tiers) if tiers else {DEFAULT_TIER: self.blobs}
        self.hot_tier: str = next(iter(self.tiers))
        self.tier_prices: dict[str, float] = dict(tier_prices or {})
        self.catalog = catalog if catalog is not None else SQLiteCatalog(self.root / _CATALOG_FILE)
        #: Batches last-access times of reads into few catalog writes (None: not tracked).
        self.access: AccessTracker | None = AccessTracker(self.catalog, interval=access_interval) if track_access else None
        self._tier_totals: tuple[float, dict[str, tuple[int, int]]] | None = None
        self.cache: FrameCache | None = default_cache() if cache is None or cache is True else (cache or None)
        self._listeners: list[Callable[[IngestResult], None]] = []
        self._stored: LRU[str, StoredInstance] = LRU(stored_cache_size)
        self._records: LRU[str, InstanceRecord] = LRU(stored_cache_size * 8)
        self._lock = threading.Lock()
        self._sop_locks: dict[str, threading.Lock] = {}
        #: The compression policy worker (:class:`dcmstream.policy.PolicyWorker`) attached
        #: to this archive, if any; the server reports its metrics.
        self.policy_worker: ArchiveWorker | None = None  # set by dcmstream.policy.PolicyWorker
        #: The periodic sweep of leftovers (:class:`.sweep.Sweeper`), if one runs; the server
        #: reports its metrics.
        self.sweeper: ArchiveWorker | None = None  # set by .sweep.Sweeper.start
        #: Seconds after which what no lock protects counts as a leftover: staging files of
        #: writers that do not lock, unreferenced blobs in object storage (see .sweep).
        self.staging_max_age = staging_max_age
        # Staging files of a killed writer, in every store: none a live writer holds locked
        # (other processes may share the store), unlocked ones of writers that do not lock
        # only when old. (``sweep_on_open=False``: a dry run of the sweep looks first.)
        #: Staging files of killed writers this open removed (the sweeper's metrics count them).
        self.staging_swept_at_open = 0
        if sweep_on_open:
            for store in self.tiers.values():
                self.staging_swept_at_open += store.clean_staging(older_than=staging_max_age)
            if self.staging_swept_at_open:
                log.warning("%s: removed %d staging file(s) of interrupted writes", self.root, self.staging_swept_at_open)
            # Blobs of a delete killed after its catalog commit (see .deletion).
            self._finish_deletions()
        #: Seconds between looks at the catalog's delete counter (memoised records of
        #: instances another process deleted are dropped within that time; 0: every time).
        self.deletion_check_interval = deletion_check_interval
        self._deletion_epoch = 0
        self._deletion_epoch = self._read_deletion_epoch()
        self._deletion_checked = time.monotonic()

    @staticmethod
    def is_archive(path: str | os.PathLike[str]) -> bool:
        """Whether ``path`` is the folder of an archive with the default catalog and blob store."""
        path = Path(path)
        return (path / _CATALOG_FILE).is_file() and (path / FilesystemBlobStore.OBJECTS).is_dir()

    # -- keys, locks and listeners -----------------------------------------------------------
    @staticmethod
    def blob_key(study: str, series: str, sop: str) -> str:
        """Storage key of an instance: derived from validated UIDs only."""
        return f"{validate_uid(study)}/{validate_uid(series)}/{validate_uid(sop)}.dcm"

    @staticmethod
    def replacement_key(record: InstanceRecord) -> str:
        """A fresh key for new bytes of a stored instance (a compression swap).

        Never the current key, so the old blob stays readable until the catalog row
        points to the new one; the file name stays ``<sop>.dcm``.
        """
        token = uuid.uuid4().hex[:16]
        return f"{validate_uid(record.study_uid)}/{validate_uid(record.series_uid)}/c{token}/{validate_uid(record.sop_uid)}.dcm"

    @staticmethod
    def attempt_key(record: InstanceRecord) -> str:
        """A fresh key for an ingest whose usual key is taken (a concurrent writer of the
        same instance, or a killed ingest's blob): ``study/series/i<token>/sop.dcm``."""
        token = uuid.uuid4().hex[:16]
        return f"{validate_uid(record.study_uid)}/{validate_uid(record.series_uid)}/i{token}/{validate_uid(record.sop_uid)}.dcm"

    @staticmethod
    def is_ingest_key(key: str) -> bool:
        """Whether ``key`` is one an ingest writes (:meth:`blob_key` or :meth:`attempt_key`),
        not a :meth:`replacement_key`: an ingest pins its blob until its row is added, so an
        unpinned one without a row is a killed ingest's (:func:`.ingest.sweep_orphans`)."""
        parts = key.split("/")
        return len(parts) == 3 or (len(parts) == 4 and parts[2].startswith("i"))

    @staticmethod
    def is_replacement_key(key: str) -> bool:
        """Whether ``key`` is a :meth:`replacement_key` (``study/series/c<token>/sop.dcm``): a
        compression swap pins its blob until its row switch, a lifecycle move journals its
        copy before writing it, so an unpinned, unjournalled one without a row is a killed
        writer's (:func:`.ingest.sweep_orphans`)."""
        parts = key.split("/")
        return len(parts) == 4 and parts[2].startswith("c")

    def add_listener(self, callback: Callable[[IngestResult], None]) -> None:
        """Call ``callback(result)`` after every stored instance (cache invalidation)."""
        self._listeners.append(callback)

    def notify(self, result: IngestResult) -> None:
        """Tell every listener about ``result`` (a stored or a replaced instance).

        A failing listener is logged and does not stop the others.
        """
        for callback in list(self._listeners):
            try:
                callback(result)
            except Exception:  # noqa: BLE001
                log.exception("archive listener failed on %s (%s)", result.sop_uid, result.status)

    def instance_lock(self, sop: str) -> threading.Lock:
        """The lock that serialises the ingest of one SOP Instance UID (de-duplication)."""
        with self._lock:
            lock = self._sop_locks.get(sop)
            if lock is None:
                if len(self._sop_locks) > 4096:
                    self._sop_locks = {k: v for k, v in self._sop_locks.items() if v.locked()}
                lock = self._sop_locks[sop] = threading.Lock()
            return lock

    def create_staging(self, suffix: str = ".part") -> StagingFile:
        """A new staging file held locked until closed (see :meth:`.BlobStore.create_staging`):
        where incoming data is spooled, safe from every sweep while this process lives."""
        return self.blobs.create_staging(suffix)

    # -- tiers -------------------------------------------------------------------------------
    def tier_of(self, record: InstanceRecord) -> str:
        """The name of the tier holding the record's blob."""
        return record.tier or self.hot_tier

    def tier_value(self, name: str) -> str | None:
        """What the catalog stores for tier ``name``: None for the first tier (see
        :attr:`InstanceRecord.tier`), else the name."""
        if name not in self.tiers:
            raise UnknownTierError(f"no storage tier {name!r} (tiers: {', '.join(self.tiers)})")
        return None if name == self.hot_tier else name

    def store(self, name: str) -> BlobStore:
        """The blob store of tier ``name``."""
        try:
            return self.tiers[name]
        except KeyError:
            raise UnknownTierError(f"no storage tier {name!r} (tiers: {', '.join(self.tiers)})") from None

    def store_of(self, record: InstanceRecord) -> BlobStore:
        """The blob store holding the record's blob (its tier's)."""
        return self.store(self.tier_of(record))

    def touch(self, record: InstanceRecord) -> None:
        """Note a read of the record's bytes (batched; see :class:`~.access.AccessTracker`)."""
        if self.access is not None:
            self.access.record(record.sop_uid)

    def iter_blob(self, record: InstanceRecord, start: int = 0, end: int | None = None,
                  chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The bytes ``[start, end)`` of the record's blob, in chunks (a read): from wherever
        the catalog says they are now (:meth:`open_blob`), opened at the first chunk."""
        self.touch(record)
        with self.open_blob(record) as src:
            yield from iter_source(src, start, end, chunk_size)

    @property
    def bytes_read(self) -> int:
        """Bytes read from blobs of every tier."""
        return sum(store.bytes_read for store in {id(s): s for s in self.tiers.values()}.values())

    def tier_totals(self, max_age: float = 0.0) -> dict[str, tuple[int, int]]:
        """(instances, bytes) per tier name, every configured tier listed (one GROUP BY).

        ``max_age`` > 0 reuses a result that recent (``/metrics`` scrapes). A row naming a
        tier that is not configured is listed under its name too.
        """
        now = time.monotonic()
        cached = self._tier_totals
        if cached is not None and max_age > 0 and now - cached[0] <= max_age:
            return dict(cached[1])
        totals = dict.fromkeys(self.tiers, (0, 0))
        for value, (n, size) in self.catalog.tier_totals().items():
            name = value or self.hot_tier
            old = totals.get(name, (0, 0))
            totals[name] = (old[0] + n, old[1] + size)
        self._tier_totals = (now, totals)
        return dict(totals)

    # -- ingest ------------------------------------------------------------------------------
    def ingest_file(self, path: str | os.PathLike[str], *, move: bool = False, expected_study: str | None = None) -> IngestResult:
        """Archive one DICOM file (copied, or moved when ``move=True``); see :func:`.ingest.ingest_file`.

        Never raises for bad input: the result says what went wrong. With
        ``expected_study`` (STOW-RS to /studies/{study}) an instance of another study
        fails with FailureReason 0xA900.
        """
        return ingest_file(self, path, move=move, expected_study=expected_study)

    def ingest_paths(self, paths: Iterable[str | os.PathLike[str]]) -> Iterator[tuple[Path, IngestResult]]:
        """Ingest every file of ``paths`` (folders are walked), yielding each result."""
        for path in iter_files(paths):
            yield path, self.ingest_file(path)

    # -- deleting ----------------------------------------------------------------------------
    def delete(self, study: str, series: str | None = None, instance: str | None = None, *,
               hook: DeleteHook | None = None) -> DeleteResult:
        """Delete a study, a series of it, or one instance: catalog rows and blobs on every
        tier, crash-safe (journalled; see :mod:`.deletion`). The result lists what went (no
        records: nothing matched)."""
        return delete_scope(self, study, series, instance, hook=hook)

    def _read_deletion_epoch(self) -> int:
        try:
            return self.catalog.deletion_epoch()
        except Exception as exc:  # noqa: BLE001 - memo checks are an optimisation of reads; they retry
            log.warning("reading the catalog's delete counter failed: %s", exc)
            return self._deletion_epoch

    def deletions_due(self) -> bool:
        """Whether the catalog's delete counter is due for a look (:meth:`check_deletions`)."""
        return time.monotonic() - self._deletion_checked >= self.deletion_check_interval

    def check_deletions(self) -> None:
        """Drop every memoised record and frame reader when a delete happened (in any
        process) since the last look; looks at most every :attr:`deletion_check_interval`
        seconds (one small query). :meth:`record` calls it."""
        if not self.deletions_due():
            return
        epoch = self._read_deletion_epoch()
        self._deletion_checked = time.monotonic()
        if epoch != self._deletion_epoch:
            self._deletion_epoch = epoch
            self._records.clear()
            self._stored.clear()

    def _finish_deletions(self) -> None:
        try:
            done, left = finish_deletions(self)
        except Exception as exc:  # noqa: BLE001 - an open must not fail for a sweep; the next one retries
            log.warning("finishing journalled deletions failed (the next open will retry): %s", exc)
            return
        if done or left:
            log.info("finished %d journalled blob deletion(s) of an interrupted delete; %d left", done, left)

    # -- reading -----------------------------------------------------------------------------
    def iter_records(self) -> Iterator[InstanceRecord]:
        """Every catalogued instance whose blob is stored, in blob-key order.

        A blob without its row (an interrupted ingest) or a row pointing elsewhere (an
        old blob a compression swap has not deleted yet) is skipped.
        """
        for name, store in self.tiers.items():
            for key in store.keys():  # noqa: SIM118 - BlobStore.keys() lists blobs; the store is not a mapping
                record = self.catalog.get(Path(key).stem)
                if record is not None and record.blob_key == key and self.tier_of(record) == name:
                    yield record

    def record(self, sop_uid: str) -> InstanceRecord | None:
        """The catalog record of an instance (without its DICOM JSON), memoised.

        Records rarely change once stored (a second copy of a SOP Instance is a
        duplicate and ignored), so serving a frame costs no SQL after the first time;
        the exceptions, the compression policy's blob swap and a lifecycle move, call
        :meth:`forget` in their process, and readers in every other process find the
        new place when the old one is gone (:meth:`open_current`). A delete in another
        process is noticed within :attr:`deletion_check_interval` (:meth:`check_deletions`).
        """
        self.check_deletions()
        hit = self._records.get(sop_uid)
        if hit is not None:
            return hit
        record = self.catalog.get(sop_uid)
        if record is not None:
            self._records.put(sop_uid, record)
        return record

    def peek(self, sop_uid: str) -> tuple[InstanceRecord | None, StoredInstance | None]:
        """The memoised record and frame reader of an instance, without any I/O. A reader
        trusting them asks :meth:`deletions_due` first (then :meth:`record` looks)."""
        return self._records.peek(sop_uid), self._stored.peek(sop_uid)

    def forget(self, sop_uid: str) -> None:
        """Drop memoised state of an instance (after removing it from the catalog)."""
        self._records.pop(sop_uid)
        self._stored.pop(sop_uid)

    def reread(self, record: InstanceRecord) -> InstanceRecord | None:
        """The catalog's current record of an instance whose blob was not found under
        ``record.blob_key``, or None when the catalog has nothing newer.

        Another process (the compression policy, a lifecycle move) may have moved the
        blob and switched the row; its :meth:`forget` only reached its own memo, so the
        memoised state here is dropped and the row read again.
        """
        self.forget(record.sop_uid)
        fresh = self.catalog.get(record.sop_uid)
        if fresh is None or fresh.blob_key == record.blob_key:
            return None
        self._records.put(fresh.sop_uid, fresh)
        return fresh

    def open_current(self, record: InstanceRecord) -> tuple[InstanceRecord, ByteSource]:
        """Open the instance's blob where the catalog says it is now: (the record describing
        the opened bytes, the source). The one read path of every blob read.
        An instance no longer catalogued (deleted meanwhile) raises
        :class:`InstanceDeletedError`.

        ``record`` may be stale (memoised here while another process moved the blob to
        another tier or swapped it for a compressed one): when nothing is under its key any
        more, the row is read again and its blob opened; the returned record then differs
        from ``record``. Raises :class:`MissingBlobError` when the bytes are gone for good
        while the row still points at them, :class:`InstanceDeletedError` when the row is
        gone too (a delete).
        """
        current = record
        for _ in range(3):  # moved again between the re-read and the open: follow it
            try:
                return current, self.store_of(current).open(current.blob_key)
            except BlobNotFoundError:
                self.forget(current.sop_uid)
                fresh = self.catalog.get(current.sop_uid)
            if fresh is None:
                raise InstanceDeletedError(current)
            if fresh.blob_key == current.blob_key:
                break
            self._records.put(fresh.sop_uid, fresh)
            current = fresh
        raise MissingBlobError(current, self.tier_of(current))

    def current(self, record: InstanceRecord) -> InstanceRecord:
        """The record describing the instance's bytes now (``record`` itself unless another
        process moved or swapped them); :class:`MissingBlobError` when they are gone. Lets a
        request check its record before it answers (an open and a close, no read)."""
        fresh, source = self.open_current(record)
        source.close()
        return fresh

    def open_blob(self, record: InstanceRecord) -> ByteSource:
        """Random access to the bytes ``record`` describes, wherever they are now.

        A blob moved elsewhere with the same bytes (same size and transfer syntax: a tier
        move) is opened there (:meth:`open_current`). Bytes that changed (a compression
        swap) raise :class:`InstanceChangedError`, since the caller's frame index no
        longer fits them; bytes that are gone raise :class:`MissingBlobError`.
        """
        current, source = self.open_current(record)
        if current is record or (current.size, current.transfer_syntax) == (record.size, record.transfer_syntax):
            return source
        source.close()
        raise InstanceChangedError(record, current)

    def stored(self, record: InstanceRecord) -> StoredInstance | None:
        """Frame access through the stored index (memoised); None if the blob needs a full parse."""
        self.touch(record)
        if record.frame_index is None or record.pixel is None or record.pixel.get("swap_ow"):
            return None
        hit = self._stored.get(record.sop_uid)
        if hit is not None and hit.record.blob_key == record.blob_key:
            return hit
        try:
            stored = StoredInstance(record, self.store_of(record), self.cache, open_source=lambda: self.open_blob(record))
        except (DicomFormatError, UnsupportedTransferSyntaxError):
            return None
        self._stored.put(record.sop_uid, stored)
        return stored

    def open_instance(self, record: InstanceRecord, source: ByteSource | None = None) -> Instance:
        """The full :class:`~dcmstream.Instance` of a stored blob (parses its header).

        ``source``: the blob already opened (:meth:`open_current`), which stays the
        caller's to close; otherwise it is opened (:meth:`open_blob`) and closed with
        the Instance.
        """
        from ..image.instance import open as open_instance

        self.touch(record)
        src = source if source is not None else self.open_blob(record)
        return open_instance(src, cache=self.cache or False, strict=False, close_source=source is None)

    def close(self) -> None:
        if self.access is not None:
            self.access.close()
        self.catalog.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if len(self.tiers) > 1:
            return f"Archive({str(self.root)!r}, catalog={self.catalog!r}, tiers={self.tiers!r})"
        return f"Archive({str(self.root)!r}, catalog={self.catalog!r}, blobs={self.blobs!r})"
