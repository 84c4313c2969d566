"""The archive: a catalog plus a blob store, and atomic, idempotent ingest.

Ingest of one file, in order:

1. parse its header and build its frame index (``dcmstream.open``; nothing else
   reads the pixel data);
2. validate the Study/Series/SOP Instance UIDs (they become the storage key:
   ``study/series/sop.dcm``; nothing from a request is ever used as a path);
3. skip it if the catalog already has the SOP Instance (de-duplication: the first
   copy wins);
4. put the blob (temp file + fsync + rename, see :class:`FilesystemBlobStore`);
5. commit the catalog row, with the DICOM JSON, the frame index and the pixel
   element description. A crash between 4 and 5 leaves an unreferenced blob that the
   next ingest of the same instance overwrites; never a row without its bytes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.uid import DeflatedExplicitVRLittleEndian

from ..cache import FrameCache, default_cache
from ..cache.lru import LRU
from ..errors import DcmstreamError, DicomFormatError, UnsupportedTransferSyntaxError
from ..io.walk import iter_paths
from .attributes import column_values
from .blobstore import BlobStore, FilesystemBlobStore
from .catalog import Catalog, CatalogConflictError, InstanceRecord, SQLiteCatalog
from .stored import StoredInstance, pixel_record
from .uids import InvalidUIDError, validate_uid

__all__ = [
    "Archive",
    "IngestResult",
    "FAILURE_PROCESSING",
    "FAILURE_OUT_OF_RESOURCES",
    "FAILURE_DATASET_MISMATCH",
    "FAILURE_CANNOT_UNDERSTAND",
    "bulk_path",
]

log = logging.getLogger(__name__)

# PS3.18 10.5.3 / PS3.4 B.2.3 failure reasons used in STOW-RS responses.
FAILURE_PROCESSING = 0x0110
FAILURE_OUT_OF_RESOURCES = 0xA700
FAILURE_DATASET_MISMATCH = 0xA900
FAILURE_CANNOT_UNDERSTAND = 0xC000


@dataclass(frozen=True)
class IngestResult:
    """What happened to one incoming instance.

    ``status`` is "stored", "duplicate" (already archived: nothing written) or
    "failed" (with ``failure_reason``, a PS3.18 FailureReason code, and ``message``).
    """

    status: str
    sop_uid: str | None = None
    sop_class_uid: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    failure_reason: int | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("stored", "duplicate")


def bulk_path(study: str, series: str, sop: str, tag: int) -> str:
    """Path of a top-level bulk data element, relative to the DICOMweb root."""
    return f"studies/{study}/series/{series}/instances/{sop}/bulkdata/{tag:08X}"


def _pixel_json_vr(pixel: dict[str, Any]) -> str:
    if pixel["keyword"] == "FloatPixelData":
        return "OF"
    if pixel["keyword"] == "DoubleFloatPixelData":
        return "OD"
    if pixel["length"] is None:
        return "OB"
    return pixel.get("vr") or ("OW" if pixel["spec"]["bits_allocated"] > 8 else "OB")


class Archive:
    """A DICOM archive in one folder: ``catalog.sqlite`` + ``objects/`` + ``tmp/``.

    Other catalogs or blob stores can be passed in (PostgreSQL, object storage).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        catalog: Catalog | None = None,
        blobs: BlobStore | None = None,
        cache: FrameCache | None | bool = None,
        stored_cache_size: int = 512,
    ) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.blobs = blobs if blobs is not None else FilesystemBlobStore(self.root)
        self.catalog = catalog if catalog is not None else SQLiteCatalog(self.root / "catalog.sqlite")
        self.cache: FrameCache | None = default_cache() if cache is None or cache is True else (cache or None)
        self._listeners: list[Callable[[IngestResult], None]] = []
        self._stored: LRU[str, StoredInstance] = LRU(stored_cache_size)
        self._records: LRU[str, InstanceRecord] = LRU(stored_cache_size * 8)
        self._lock = threading.Lock()
        self._sop_locks: dict[str, threading.Lock] = {}
        #: The compression :class:`~.policy.PolicyWorker` attached to this archive, if any.
        self.policy_worker: Any = None
        if isinstance(self.blobs, FilesystemBlobStore):
            self.blobs.clean_staging(older_than=6 * 3600)

    # -- keys and listeners ------------------------------------------------------------------
    @staticmethod
    def blob_key(study: str, series: str, sop: str) -> str:
        """Storage key of an instance: derived from validated UIDs only."""
        return f"{validate_uid(study)}/{validate_uid(series)}/{validate_uid(sop)}.dcm"

    def add_listener(self, callback: Callable[[IngestResult], None]) -> None:
        """Call ``callback(result)`` after every stored instance (cache invalidation)."""
        self._listeners.append(callback)

    def staging_path(self, suffix: str = ".part") -> Path:
        return self.blobs.staging_path(suffix)

    # -- ingest ------------------------------------------------------------------------------
    def ingest_file(self, path: str | os.PathLike[str], *, move: bool = False, expected_study: str | None = None) -> IngestResult:
        """Archive one DICOM file (copied, or moved when ``move=True``).

        Never raises for bad input: the result says what went wrong. With
        ``expected_study`` (STOW-RS to /studies/{study}) an instance of another study
        fails with FailureReason 0xA900.
        """
        path = Path(path)
        try:
            from ..image.instance import open as open_instance

            try:
                inst = open_instance(path, cache=False, strict=True)
            except UnsupportedTransferSyntaxError:
                inst = None  # still archived (e.g. video): served as stored, no frame access
            try:
                return self._ingest_opened(path, inst, move=move, expected_study=expected_study)
            finally:
                if inst is not None:
                    inst.close()
        except DcmstreamError as exc:
            return IngestResult("failed", failure_reason=FAILURE_CANNOT_UNDERSTAND, message=f"not a readable DICOM file: {_short(exc)}")
        except OSError as exc:
            return IngestResult("failed", failure_reason=FAILURE_OUT_OF_RESOURCES, message=f"storage error: {exc}")
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop an import
            log.exception("ingest of %s failed", path)
            return IngestResult("failed", failure_reason=FAILURE_PROCESSING, message=f"{type(exc).__name__}: {_short(exc)}")

    def _ingest_opened(self, path: Path, inst: Any, *, move: bool, expected_study: str | None) -> IngestResult:
        if inst is not None:
            ds = inst.dataset
            ts = str(inst.transfer_syntax)
        else:
            import pydicom

            ds = pydicom.dcmread(path, stop_before_pixels=True)
            ts = str(ds.file_meta.get("TransferSyntaxUID", ""))
        sop_class = str(ds.get("SOPClassUID", "") or "")
        sop = str(ds.get("SOPInstanceUID", "") or "")
        study = str(ds.get("StudyInstanceUID", "") or "")
        series = str(ds.get("SeriesInstanceUID", "") or "")
        ids = dict(sop_uid=sop or None, sop_class_uid=sop_class or None, study_uid=study or None, series_uid=series or None)
        try:
            for value, what in ((sop, "SOPInstanceUID"), (sop_class, "SOPClassUID"), (study, "StudyInstanceUID"), (series, "SeriesInstanceUID")):
                validate_uid(value, what)
            if ts:
                validate_uid(ts, "TransferSyntaxUID")
            else:
                raise InvalidUIDError("no TransferSyntaxUID in the file meta information (not a DICOM Part 10 file)")
        except InvalidUIDError as exc:
            return IngestResult("failed", failure_reason=FAILURE_CANNOT_UNDERSTAND, message=str(exc), **ids)
        if expected_study is not None and study != expected_study:
            return IngestResult(
                "failed",
                failure_reason=FAILURE_DATASET_MISMATCH,
                message=f"StudyInstanceUID {study} does not match the target study {expected_study}",
                **ids,
            )
        with self._sop_lock(sop):
            if self.catalog.get(sop) is not None:
                return IngestResult("duplicate", message="already archived", **ids)
            record = self._record(ds, inst, ts, study, series, sop, sop_class)
            key = record.blob_key
            existed = self.blobs.exists(key)
            size = self.blobs.put_file(key, path, move=move)
            record = _with_size(record, size)
            try:
                added = self.catalog.add(record)
            except CatalogConflictError as exc:
                if not existed:
                    self.blobs.delete(key)
                return IngestResult("failed", failure_reason=FAILURE_DATASET_MISMATCH, message=str(exc), **ids)
            except BaseException:
                if not existed:
                    self.blobs.delete(key)
                raise
        result = IngestResult("stored" if added else "duplicate", **ids)
        if added:
            for callback in list(self._listeners):
                try:
                    callback(result)
                except Exception:  # noqa: BLE001
                    log.exception("ingest listener failed")
        return result

    def _sop_lock(self, sop: str) -> threading.Lock:
        with self._lock:
            lock = self._sop_locks.get(sop)
            if lock is None:
                if len(self._sop_locks) > 4096:
                    self._sop_locks = {k: v for k, v in self._sop_locks.items() if v.locked()}
                lock = self._sop_locks[sop] = threading.Lock()
            return lock

    def _record(self, ds: Any, inst: Any, ts: str, study: str, series: str, sop: str, sop_class: str) -> InstanceRecord:
        from ..web.dicomjson import BULK_MARKER, dataset_to_json, dumps

        def uri(tag: int) -> str:
            return BULK_MARKER + bulk_path(study, series, sop, tag)

        data = dataset_to_json(ds, uri)
        data["00083002"] = {"vr": "UI", "Value": [ts]}  # AvailableTransferSyntaxUID (viewers use it)
        pixel = frame_index = None
        if inst is not None and inst.has_pixels:
            pixel = pixel_record(inst)
            if ts != DeflatedExplicitVRLittleEndian and not pixel["swap_ow"]:
                frame_index = inst.frame_index.to_dict()
            data[f"{pixel['tag']:08X}"] = {"vr": _pixel_json_vr(pixel), "BulkDataURI": uri(pixel["tag"])}
            data = dict(sorted(data.items()))
        columns = column_values(ds)
        if pixel is not None and columns.get("number_of_frames") is None:
            columns["number_of_frames"] = pixel["spec"]["number_of_frames"]
        return InstanceRecord(
            study_uid=study,
            series_uid=series,
            sop_uid=sop,
            sop_class_uid=sop_class,
            transfer_syntax=ts,
            blob_key=self.blob_key(study, series, sop),
            size=0,
            columns=columns,
            dataset_json=dumps(data),
            frame_index=frame_index,
            pixel=pixel,
            ingested_at=time.time(),
        )

    def ingest_paths(self, paths: Iterable[str | os.PathLike[str]]) -> Iterator[tuple[Path, IngestResult]]:
        """Ingest every file of ``paths`` (folders are walked), yielding each result."""
        for path in iter_files(paths):
            yield path, self.ingest_file(path)

    # -- reading -----------------------------------------------------------------------------
    def record(self, sop_uid: str) -> InstanceRecord | None:
        """The catalog record of an instance (without its DICOM JSON), memoised.

        Records never change once stored (a second copy of a SOP Instance is a
        duplicate and ignored), so serving a frame costs no SQL after the first time;
        the one exception, the compression policy's blob swap, calls :meth:`forget`.
        """
        hit = self._records.get(sop_uid)
        if hit is not None:
            return hit
        record = self.catalog.get(sop_uid)
        if record is not None:
            self._records.put(sop_uid, record)
        return record

    def peek(self, sop_uid: str) -> tuple[InstanceRecord | None, StoredInstance | None]:
        """The memoised record and frame reader of an instance, without any I/O."""
        return self._records.peek(sop_uid), self._stored.peek(sop_uid)

    def forget(self, sop_uid: str) -> None:
        """Drop memoised state of an instance (after removing it from the catalog)."""
        self._records.pop(sop_uid)
        self._stored.pop(sop_uid)

    def stored(self, record: InstanceRecord) -> StoredInstance | None:
        """Frame access through the stored index (memoised); None if the blob needs a full parse."""
        if record.frame_index is None or record.pixel is None or record.pixel.get("swap_ow"):
            return None
        hit = self._stored.get(record.sop_uid)
        if hit is not None:
            return hit
        try:
            stored = StoredInstance(record, self.blobs, self.cache)
        except (DicomFormatError, UnsupportedTransferSyntaxError):
            return None
        self._stored.put(record.sop_uid, stored)
        return stored

    def open_instance(self, record: InstanceRecord) -> Any:
        """The full :class:`~dcmstream.Instance` of a stored blob (parses its header)."""
        from ..image.instance import open as open_instance

        return open_instance(self.blobs.open(record.blob_key), cache=self.cache or False, strict=False)

    def close(self) -> None:
        self.catalog.close()

    def __enter__(self) -> "Archive":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Archive({str(self.root)!r}, catalog={self.catalog!r}, blobs={self.blobs!r})"


def _with_size(record: InstanceRecord, size: int) -> InstanceRecord:
    from dataclasses import replace

    return replace(record, size=size)


def _short(exc: BaseException, limit: int = 300) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + "..."


def iter_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Regular files under ``paths`` (folders walked in sorted order, hidden entries skipped)."""
    for path, _ in iter_paths(paths):
        yield path
