"""C-STORE SCP: a received instance goes through the archive's one ingest (as STOW's do).

pynetdicom writes the dataset into a temporary DICOM file while its PDUs arrive
(:func:`.common.configure`); the handler hands that file to
:meth:`Archive.ingest_file` (atomic, idempotent, the compression policy's listener
runs after it) with ``move=True``. Nothing is decoded: the bytes archived are the bytes
received, behind the file meta information pynetdicom wrote.

Sweeps and that file: pynetdicom creates it (``NamedTemporaryFile``) in the system's
temporary folder, where no archive sweep looks, so it needs no staging lock while it is
received; from the ingest's start it is locked like every file an ingest moves (and the
blob it becomes stays locked until its catalog row is added: :mod:`dcmstream.archive.ingest`).
A file of an association cut by a kill stays in the temporary folder (the system's
temporary-file cleaning removes it); one cut while the server lives is deleted
(:func:`.common.discard_partial_dataset`).

The ingest's failure reasons are DIMSE statuses already (PS3.4 B.2.3 / PS3.7 C): a
duplicate of identical bytes is a success, a second instance with the same SOP Instance
UID and other bytes fails with 0x0111 (the archived copy is kept), a file the archive
cannot read 0xC000, a full disk 0xA700.
"""

from __future__ import annotations

import contextvars
import logging
from typing import TYPE_CHECKING, Any

from ..archive.ingest import FAILURE_CANNOT_UNDERSTAND, FAILURE_OUT_OF_RESOURCES, IngestResult
from .common import STATUS_SUCCESS

if TYPE_CHECKING:
    from ..archive import Archive
    from .audit import DimseAudit

__all__ = ["handle_store", "store_status", "calling_ae", "StoreCounters"]

log = logging.getLogger(__name__)

#: The calling AE title of the C-STORE being ingested in this thread (None: not a DIMSE
#: ingest), so archive listeners (forwarding rules) can match on it.
calling_ae: contextvars.ContextVar[str | None] = contextvars.ContextVar("dcmstream_calling_ae", default=None)


class StoreCounters:
    """Counts of C-STORE outcomes (stored, duplicate, failed) for logs and metrics."""

    def __init__(self) -> None:
        self.stored = 0
        self.duplicate = 0
        self.failed = 0
        self.bytes = 0

    def as_dict(self) -> dict[str, int]:
        return {"stored": self.stored, "duplicate": self.duplicate, "failed": self.failed, "bytes": self.bytes}


def store_status(result: IngestResult) -> int:
    """The C-STORE response status of an ingest result."""
    if result.ok:
        return STATUS_SUCCESS
    return result.failure_reason or FAILURE_CANNOT_UNDERSTAND


def handle_store(event: Any, archive: Archive, counters: StoreCounters | None = None,
                 audit: DimseAudit | None = None) -> int:
    """``evt.EVT_C_STORE``: ingest the received file; the DIMSE status of the outcome
    (counted in ``counters`` and recorded in ``audit``)."""
    try:
        path = event.dataset_path
    except AttributeError:  # chunked receiving is off: not configured through .common
        log.error("C-STORE received into memory: dcmstream.dimse.common.configure() was not called")
        if audit is not None:
            audit.store(event.assoc, FAILURE_OUT_OF_RESOURCES, study=None, series=None, instance=None, result=None)
        return FAILURE_OUT_OF_RESOURCES
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    token = calling_ae.set(str(event.assoc.requestor.ae_title).strip())
    try:
        result = archive.ingest_file(path, move=True)
    except BaseException:
        if audit is not None:  # pynetdicom answers 0xC211 ("handler raised")
            audit.store(event.assoc, 0xC211, study=None, series=None, instance=None, result="failed")
        raise
    finally:
        calling_ae.reset(token)
    if counters is not None:
        if result.status == "stored":
            counters.stored += 1
            counters.bytes += size
        elif result.ok:
            counters.duplicate += 1
        else:
            counters.failed += 1
    if not result.ok:
        log.warning("C-STORE from %s of %s failed (0x%04X): %s", event.assoc.requestor.ae_title,
                    result.sop_uid or "?", store_status(result), result.message)
    status = store_status(result)
    if audit is not None:
        audit.store(event.assoc, status, study=result.study_uid, series=result.series_uid, instance=result.sop_uid,
                    result=result.status)
    return status
