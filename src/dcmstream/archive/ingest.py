"""Atomic, idempotent ingest of one file into an :class:`~.archive.Archive`.

Ingest of one file, in order:

1. parse its header and build its frame index (``dcmstream.open``; nothing else
   reads the pixel data);
2. validate the Study/Series/SOP Instance UIDs (they become the storage key:
   ``study/series/sop.dcm``; nothing from a request is ever used as a path);
3. skip it if the catalog already has the SOP Instance (de-duplication: the first
   copy wins);
4. put the blob exclusively (a key is never overwritten, see :func:`_put_blob`):
   under ``study/series/sop.dcm``, or a fresh key of its own when that one is taken;
5. add the catalog row, with the DICOM JSON, the frame index and the pixel element
   description, pointing at that key. The catalog's insert decides between
   concurrent writers of one SOP Instance (processes, hosts): the loser deletes its
   own blob and reports a duplicate (same bytes) or a conflict (different bytes). So
   a row always describes the bytes under its key. A crash between 4 and 5 leaves an
   unreferenced blob (listed by nothing, skipped by :meth:`Archive.iter_records`);
   never a row without its bytes.

From before 4 publishes the blob's name until 5 has committed (or failed and cleaned up),
the ingest holds a shared lock on the blob's file (where the store has local files): the
file it renames into place is the one it locked, or a locked staging copy it made. So
:func:`sweep_orphans` can tell a killed ingest's blob (nobody holds it) from one in flight
in another process, without guessing an age.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom.uid import DeflatedExplicitVRLittleEndian

from ..errors import DcmstreamError, UnsupportedTransferSyntaxError
from ..io.source import ByteSource, FileSource
from ..io.walk import iter_paths
from .attributes import column_values
from .blobstore import BlobExistsError, BlobNotFoundError, BlobStore, staging_lock, storage_full
from .catalog import CatalogConflictError, CatalogFeatureError, CatalogUnavailableError, InstanceRecord
from .stored import pixel_record
from .uids import InvalidUIDError, validate_uid

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from ..image.instance import Instance
    from .archive import Archive

__all__ = [
    "IngestResult",
    "ingest_file",
    "instance_record",
    "iter_files",
    "sweep_orphans",
    "resource_failure",
    "FAILURE_PROCESSING",
    "FAILURE_DUPLICATE_SOP",
    "FAILURE_OUT_OF_RESOURCES",
    "FAILURE_DATASET_MISMATCH",
    "FAILURE_CANNOT_UNDERSTAND",
    "bulk_path",
]

log = logging.getLogger(__name__)

# PS3.18 10.5.3 / PS3.4 B.2.3 failure reasons used in STOW-RS responses.
FAILURE_PROCESSING = 0x0110
FAILURE_DUPLICATE_SOP = 0x0111
FAILURE_OUT_OF_RESOURCES = 0xA700
FAILURE_DATASET_MISMATCH = 0xA900
FAILURE_CANNOT_UNDERSTAND = 0xC000


@dataclass(frozen=True)
class IngestResult:
    """What happened to one incoming instance.

    ``status`` is "stored", "duplicate" (already archived: nothing written) or
    "failed" (with ``failure_reason``, a PS3.18 FailureReason code, and ``message``);
    listeners also hear "deleted" (a delete removed the series' instances: no SOP).
    """

    status: str
    sop_uid: str | None = None
    sop_class_uid: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    failure_reason: int | None = None
    message: str = ""
    #: Why a 0xA700 (out of resources) failure happened: ``"full"`` (storage exhausted:
    #: disk, quota, object store or catalog database; 507 on the web) or ``"unavailable"``
    #: (the object store or catalog did not answer; 503, retry later). "" otherwise.
    cause: str = ""

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


def ingest_file(
    archive: Archive, path: str | os.PathLike[str], *, move: bool = False, expected_study: str | None = None
) -> IngestResult:
    """Archive one DICOM file into ``archive`` (copied, or moved when ``move=True``).

    Never raises for bad input: the result says what went wrong. With
    ``expected_study`` (STOW-RS to /studies/{study}) an instance of another study
    fails with FailureReason 0xA900. :meth:`Archive.ingest_file` is the usual entry.
    """
    path = Path(path)
    try:
        from ..image.instance import open as open_instance

        try:
            inst = open_instance(path, cache=False, strict=True)
        except UnsupportedTransferSyntaxError:
            inst = None  # still archived (e.g. video): served as stored, no frame access
        try:
            with staging_lock(path):  # a staged file in flight is no leftover to sweep
                return _ingest_opened(archive, path, inst, move=move, expected_study=expected_study)
        finally:
            if inst is not None:
                inst.close()
    except DcmstreamError as exc:
        reason = f"not a readable DICOM file: {_short(exc)}"
        return IngestResult("failed", failure_reason=FAILURE_CANNOT_UNDERSTAND, message=reason)
    except (OSError, CatalogUnavailableError) as exc:
        return resource_failure(exc, f"ingest of {path.name}")
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop an import
        log.exception("ingest of %s failed", path)
        reason = f"{type(exc).__name__}: {_short(exc)}"
        return IngestResult("failed", failure_reason=FAILURE_PROCESSING, message=reason)


def resource_failure(exc: BaseException, what: str, seen: IngestResult | None = None) -> IngestResult:
    """The result of an ingest that storage refused: FailureReason 0xA700 with its
    :attr:`IngestResult.cause` (``"full"``: :class:`StorageFullError`, from ENOSPC, EDQUOT,
    EFBIG or a full catalog; ``"unavailable"``: the object store or catalog did not answer)."""
    base = seen or IngestResult("failed")
    full = storage_full(exc, what)
    if full is not None:
        return replace(base, status="failed", failure_reason=FAILURE_OUT_OF_RESOURCES, cause="full",
                       message=f"out of storage: {full}")
    cause = "unavailable" if isinstance(exc, (ConnectionError, CatalogUnavailableError)) else ""
    return replace(base, status="failed", failure_reason=FAILURE_OUT_OF_RESOURCES, cause=cause,
                   message=f"storage error: {exc}")


def _ingest_opened(
    archive: Archive, path: Path, inst: Instance | None, *, move: bool, expected_study: str | None
) -> IngestResult:
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
    # the instance's identity, in every result: each return below replaces status and message
    seen = IngestResult(
        "failed", sop_uid=sop or None, sop_class_uid=sop_class or None, study_uid=study or None, series_uid=series or None
    )
    try:
        for value, what in (
            (sop, "SOPInstanceUID"),
            (sop_class, "SOPClassUID"),
            (study, "StudyInstanceUID"),
            (series, "SeriesInstanceUID"),
        ):
            validate_uid(value, what)
        if ts:
            validate_uid(ts, "TransferSyntaxUID")
        else:
            raise InvalidUIDError("no TransferSyntaxUID in the file meta information (not a DICOM Part 10 file)")
    except InvalidUIDError as exc:
        return replace(seen, failure_reason=FAILURE_CANNOT_UNDERSTAND, message=str(exc))
    if expected_study is not None and study != expected_study:
        return replace(
            seen,
            failure_reason=FAILURE_DATASET_MISMATCH,
            message=f"StudyInstanceUID {study} does not match the target study {expected_study}",
        )
    catalog = archive.catalog
    with archive.instance_lock(sop):
        existing = catalog.get(sop)
        if existing is not None:
            return _already_archived(archive, existing, path, ts, seen)
        record = instance_record(ds, inst, ts, blob_key=archive.blob_key(study, series, sop))
        # The blob stays pinned (locked) from before its put until its row is added: see the module.
        with contextlib.ExitStack() as pins:
            try:
                record = _put_blob(archive, record, path, move=move, pins=pins)
            except (OSError, CatalogUnavailableError) as exc:  # nothing stored (puts are atomic)
                return resource_failure(exc, f"instance {sop}", seen)
            try:
                added = catalog.add(record)
            except CatalogConflictError as exc:
                archive.blobs.delete(record.blob_key)  # no row can point at it: this add failed
                return replace(seen, failure_reason=FAILURE_DATASET_MISMATCH, message=str(exc))
            except (OSError, CatalogUnavailableError) as exc:  # e.g. the catalog database is full
                _discard_unreferenced(archive, record)
                return resource_failure(exc, f"instance {sop}", seen)
            except BaseException:
                _discard_unreferenced(archive, record)
                raise
            if not added:
                # Another process stored this SOP Instance between our look-up and our add:
                # its row and blob stand, ours goes.
                return _lost_race(archive, record, seen)
    result = replace(seen, status="stored")
    archive.notify(result)
    return result


def _put_blob(archive: Archive, record: InstanceRecord, path: Path, *, move: bool,
              pins: contextlib.ExitStack | None = None) -> InstanceRecord:
    """Store the file under the instance's key, exclusively: a key, once written, is never
    overwritten by a second writer (another process, another host).

    The usual key is ``study/series/sop.dcm``. When it is taken - a concurrent ingest of
    the same instance, or the blob of an ingest killed before its catalog row - the
    file goes to a fresh key of its own (``study/series/i<token>/sop.dcm``); so it does
    at once on a store that cannot decide exclusive puts atomically (two simultaneous
    writers could both "win" the usual key there), and while a delete's journal still
    lists the usual key (:mod:`.deletion` would delete the new blob under it). Either
    way the catalog row added next describes exactly the bytes under its key, and of
    several writers the catalog's insert decides which row (and so which blob) stays.
    With ``pins``, the blob stays locked until ``pins`` closes (:meth:`.BlobStore.pinned_source`).
    """
    blobs = archive.blobs
    usual = blobs.atomic_exclusive and not archive.catalog.deletion_pending(record.blob_key)
    key = record.blob_key if usual else archive.attempt_key(record)
    source = path if pins is None else blobs.pinned_source(path, move=move, pins=pins)
    for attempt in range(3):
        try:
            size = blobs.put_file(key, source, move=move or source != path, exclusive=True)
            if move and source != path:
                path.unlink(missing_ok=True)  # moved: the caller's file is consumed, as a put's would be
            return replace(record, blob_key=key, size=size)
        except BlobExistsError:
            if attempt == 2:
                raise
            key = archive.attempt_key(record)
    raise AssertionError("unreachable")  # pragma: no cover


def _discard_unreferenced(archive: Archive, record: InstanceRecord) -> None:
    """After a failed catalog add: delete our blob unless the row points at it after all
    (a connection lost after the commit). When even that cannot be read, the blob stays:
    an unreferenced blob is harmless, a row without its bytes is not."""
    try:
        current = archive.catalog.get(record.sop_uid)
    except Exception:  # noqa: BLE001 - the original error is the one to report
        log.warning("ingest of %s failed; its blob %s is kept (catalog unreachable)", record.sop_uid, record.blob_key)
        return
    if current is None or current.blob_key != record.blob_key:
        archive.blobs.delete(record.blob_key)


def _lost_race(archive: Archive, record: InstanceRecord, seen: IngestResult) -> IngestResult:
    """The result for the loser of a concurrent ingest of one SOP Instance: "duplicate"
    when the winner stored the same bytes, a failure (0x0111, duplicate SOP Instance)
    when they differ. The loser's blob is deleted either way."""
    blobs = archive.blobs
    winner = archive.catalog.get(record.sop_uid)
    if winner is not None and winner.blob_key == record.blob_key:
        # Only a store whose exclusive puts are not atomic could let two writers "win"
        # one key (and _put_blob avoids shared keys there): never delete the row's blob.
        log.error("ingest of %s: another writer's row points at our key %s", record.sop_uid, record.blob_key)
        return replace(seen, status="duplicate", message="already archived (stored concurrently)")
    try:
        same = winner is not None and winner.size == record.size and _same_bytes(blobs, winner.blob_key, record.blob_key)
    finally:
        blobs.delete(record.blob_key)
    if same:
        return replace(seen, status="duplicate", message="already archived (stored concurrently)")
    return replace(
        seen,
        failure_reason=FAILURE_DUPLICATE_SOP,
        message=f"SOP Instance {record.sop_uid} was stored concurrently with different content; the other copy was kept",
    )


def _already_archived(archive: Archive, existing: InstanceRecord, path: Path, ts: str, seen: IngestResult) -> IngestResult:
    """The result for an instance the catalog already holds: "duplicate" when the archived
    bytes are the incoming file's, a failure (0x0111, duplicate SOP Instance) naming the
    instance when they differ, so the client learns its new bytes were not kept (PS3.18).

    Sizes first, then the bytes chunk by chunk (bounded memory). An instance the archive
    re-encoded since (a compression swap changes its transfer syntax) cannot be compared
    byte for byte and stays a plain duplicate.
    """
    if existing.transfer_syntax == ts:
        stored, source = archive.open_current(existing)
        with source, FileSource(path) as incoming:
            same = stored.transfer_syntax != ts or _same_content(source, incoming)
        if not same:
            return replace(
                seen,
                failure_reason=FAILURE_DUPLICATE_SOP,
                message=f"SOP Instance {existing.sop_uid} is already archived with different content; the archived copy was kept",
            )
    return replace(seen, status="duplicate", message="already archived")


def _same_bytes(blobs: BlobStore, a: str, b: str) -> bool:
    """Whether two blobs hold the same bytes."""
    with blobs.open(a) as first, blobs.open(b) as second:
        return _same_content(first, second)


def _same_content(first: ByteSource, second: ByteSource, chunk: int = 1 << 20) -> bool:
    """Whether two sources hold the same bytes (sizes, then chunk by chunk: bounded memory)."""
    if first.size != second.size:
        return False
    for offset in range(0, first.size, chunk):
        n = min(chunk, first.size - offset)
        if first.read_at(offset, n) != second.read_at(offset, n):
            return False
    return True


def sweep_orphans(archive: Archive, older_than: float = 3600.0, *, dry_run: bool = False) -> list[str]:
    """Delete the blobs no catalog row points at, in every tier: what an ingest (or a
    server) killed between its put and its catalog add left, or a compression swap killed
    before its switch. Returns their keys (``dry_run``: lists them, deletes nothing).

    Safe while other processes ingest, which is why servers run it at start and then
    periodically (:mod:`.sweep`). It first finishes journalled deletions
    (:func:`.deletion.finish_deletions`; not in a dry run), then lists every blob of every
    tier; a blob stays when its instance's row points at it *in that tier* (the row's
    ``(tier, blob_key)``), or when a journalled lifecycle move names it (source or target,
    whatever its state: the move's recovery, :func:`.lifecycle.recover`, finishes or undoes
    it). Of the others, which blob is in flight, about to get its row?

    - A blob of an ingest (:meth:`Archive.is_ingest_key`) or of a compression swap
      (:meth:`Archive.is_replacement_key`) in a store with local files: its writer holds a
      lock on it from before its name exists until its row is committed (see the module,
      :meth:`.BlobStore.pinned_source`), and the lock dies with the writer. The sweep takes
      the blob exclusively (:meth:`.BlobStore.claim`): held by a live writer, it stays; else
      it goes at once, whatever its age. The row is read again *while* the blob is held, so
      a writer that committed its row and let go an instant before is seen. (A lifecycle
      move's copy has a replacement key too, but is journalled before it is written: kept.)
    - Any other (object storage, where no lock reaches; a key of another shape): it goes
      only when written more than ``older_than`` seconds ago, longer than any put-then-add
      takes. A blob's age is when the store wrote it (puts reset it); a store that cannot
      tell an age keeps the blob unless ``older_than`` is 0 (nothing else running).

    Each deletion is decided again right before it (row and journal read anew), so a row
    or a move that appeared during the listing keeps its blob.
    """
    from .deletion import finish_deletions

    if not dry_run:
        finish_deletions(archive)  # blobs a killed delete still owes: by the journal, not by age
    limit = time.time() - older_than
    removed = []
    for tier, store in archive.tiers.items():
        journalled = _journalled(archive)
        for key in list(store.keys()):  # noqa: SIM118 - BlobStore.keys() lists blobs; the store is not a mapping
            if _referenced(archive, tier, key) or (tier, key) in journalled:
                continue
            with store.claim(key) as claimed:
                if claimed is False:
                    continue  # a live writer pins it: in flight
                pinnable = archive.is_ingest_key(key) or archive.is_replacement_key(key)
                if not (claimed and pinnable) and older_than > 0:
                    try:
                        written = store.modified(key)
                    except BlobNotFoundError:
                        continue
                    if written is None or written > limit:
                        continue
                # Decided again right before the delete: a row or a move added meanwhile keeps it.
                if _referenced(archive, tier, key) or (tier, key) in _journalled(archive):
                    continue
                if not dry_run:
                    store.delete(key)
                    log.info("swept orphan blob %s from tier %s", key, tier)
                removed.append(key)
    return removed


def _referenced(archive: Archive, tier: str, key: str) -> bool:
    """Whether the catalog row of the instance the key names points at this key in ``tier``."""
    record = archive.catalog.get(Path(key).stem)
    return record is not None and record.blob_key == key and archive.tier_of(record) == tier


def _journalled(archive: Archive) -> set[tuple[str, str]]:
    """(tier, key) of both copies of every journalled lifecycle move (none without a journal)."""
    try:
        moves = archive.catalog.pending_moves()
    except CatalogFeatureError:
        return set()
    return {pair for mv in moves for pair in ((mv.source_tier, mv.source_key), (mv.target_tier, mv.target_key))}


def instance_record(ds: Dataset, inst: Instance | None, transfer_syntax: str, *, blob_key: str) -> InstanceRecord:
    """The catalog row of an instance: its DICOM JSON, searchable columns, frame index and
    pixel description (``size`` 0: the caller sets it once the blob is stored).

    ``ds`` is the header, ``inst`` the opened :class:`~dcmstream.Instance` (None when no
    codec can read it: it is archived without frame access). The compression policy
    rebuilds the row of a transcoded blob with it too.
    """
    from ..dicomjson import BULK_MARKER, dataset_to_json, dumps

    ts = transfer_syntax
    study = str(ds.get("StudyInstanceUID", "") or "")
    series = str(ds.get("SeriesInstanceUID", "") or "")
    sop = str(ds.get("SOPInstanceUID", "") or "")

    def uri(tag: int) -> str:
        return BULK_MARKER + bulk_path(study, series, sop, tag)

    data = dataset_to_json(ds, uri)
    data["00083002"] = {"vr": "UI", "Value": [ts]}  # AvailableTransferSyntaxUID (viewers use it)
    pixel = None if inst is None else pixel_record(inst)  # None without pixel data
    frame_index: dict[str, Any] | None = None
    if inst is not None and pixel is not None:
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
        sop_class_uid=str(ds.get("SOPClassUID", "") or ""),
        transfer_syntax=ts,
        blob_key=blob_key,
        size=0,
        columns=columns,
        dataset_json=dumps(data),
        frame_index=frame_index,
        pixel=pixel,
        ingested_at=time.time(),
    )


def _short(exc: BaseException, limit: int = 300) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + "..."


def iter_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Regular files under ``paths``, by the one folder-walk rule (:mod:`dcmstream.io.walk`)."""
    for path, _ in iter_paths(paths):
        yield path
