"""C-MOVE and C-GET SCP: archived instances sent from their blobs, never loaded whole.

pynetdicom's retrieve service sends what a handler yields with ``send_c_store``, which
encodes a :class:`~pydicom.dataset.Dataset` in memory. Here a handler yields a
:class:`StoredBlob` (a Dataset standing for an archived instance: only its SOP Class
and Instance UIDs) and the sending association's ``send_c_store`` is wrapped
(:func:`use_blob_sender`) to send the blob's *file* instead: a blob store with local
files gives its path, any other (S3) is spooled chunk by chunk to a staging file first.
pynetdicom then sends the file in PDU-sized reads (``STORE_SEND_CHUNKED_DATASET``).

The file is sent in its stored transfer syntax; for an uncompressed one the native
alternatives are proposed too, and when the peer picks another the instance is
converted by pynetdicom after a full read (small native files only, see
:data:`CONVERT_MAX_BYTES`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from ..archive.blobstore import iter_source
from ..archive.catalog import InstanceRecord, Query, QueryError
from .common import (
    NATIVE_UIDS,
    STATUS_CANCEL,
    STATUS_IDENTIFIER_MISMATCH,
    STATUS_PENDING,
    STATUS_UNABLE_TO_PROCESS,
    STATUS_UNKNOWN_DESTINATION,
    DimseError,
)

if TYPE_CHECKING:
    from pynetdicom.presentation import PresentationContext

    from ..archive import Archive
    from ..config import DimsePeer
    from .audit import DimseAudit

__all__ = [
    "StoredBlob",
    "use_blob_sender",
    "matching_records",
    "storage_contexts",
    "handle_get",
    "handle_move",
    "CONVERT_MAX_BYTES",
    "CONVERTIBLE",
    "contexts_needed",
    "sendable",
]

log = logging.getLogger(__name__)

#: The largest native instance converted to another native transfer syntax (read whole).
CONVERT_MAX_BYTES = 64 << 20
#: The syntaxes pynetdicom converts between (when the peer accepts the other one).
CONVERTIBLE = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})
#: The unique keys a retrieve identifier may name, top down.
_UNIQUE_KEYS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


class StoredBlob(Dataset):
    """An archived instance to send by C-STORE: its SOP Class and Instance UIDs (what
    pynetdicom's retrieve service reads), and the record of its blob."""

    def __init__(self, archive: Archive, record: InstanceRecord) -> None:
        super().__init__()
        self.SOPClassUID = record.sop_class_uid
        self.SOPInstanceUID = record.sop_uid
        self.__dict__["archive"] = archive
        self.__dict__["record"] = record

    @contextlib.contextmanager
    def local_file(self) -> Iterator[tuple[Path, InstanceRecord]]:
        """The blob as a local file (its own, or a staging copy deleted afterwards) and
        the record describing those bytes (another process may have moved them)."""
        archive: Archive = self.__dict__["archive"]
        record: InstanceRecord = self.__dict__["record"]
        current, source = archive.open_current(record)
        archive.touch(current)
        with source:
            try:
                path = archive.store_of(current).local_path(current.blob_key)
            except KeyError:  # BlobNotFoundError: gone between the open and now
                path = None
            if path is not None:
                yield Path(path), current
                return
            with archive.create_staging(".dcm") as staged:  # locked: swept only if this process dies
                with staged.open_write() as out:
                    for chunk in iter_source(source, 0, None, 1 << 20):
                        out.write(chunk)
                yield staged.path, current


_DEFLATED = "1.2.840.10008.1.2.1.99"


@contextlib.contextmanager
def sendable(path: Path, syntax: str) -> Iterator[Path]:
    """``path``, or for a deflated file whose deflated stream has an odd length (PS3.5
    A.5 asks for a padding byte; some writers, e.g. pydicom's test file, omit it, and
    DCMTK aborts on an odd PDV) a padded temporary copy."""
    if syntax != _DEFLATED:
        yield path
        return
    from pynetdicom.dsutils import split_dataset

    _, offset = split_dataset(path)
    if (path.stat().st_size - offset) % 2 == 0:
        yield path
        return
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory(prefix="dcmstream-send-") as folder:
        padded = Path(folder) / path.name
        shutil.copyfile(path, padded)
        with open(padded, "ab") as out:
            out.write(b"\0")
        yield padded


_WRAPPED = "_dcmstream_blob_sender"


def use_blob_sender(assoc: Any) -> Any:
    """Let ``assoc.send_c_store`` send :class:`StoredBlob` datasets from their files (once
    per association; other datasets and paths go through unchanged). Returns ``assoc``."""
    if getattr(assoc, _WRAPPED, False):
        return assoc
    original: Callable[..., Dataset] = assoc.send_c_store

    def send_c_store(dataset: Any, *args: Any, **kwargs: Any) -> Dataset:
        if not isinstance(dataset, StoredBlob):
            return original(dataset, *args, **kwargs)
        status = send_blob(dataset, *args, **kwargs)
        # what the peer answered (None: no answer), read back by the retrieve's audit record
        dataset.__dict__["sent_status"] = int(status.get("Status", 0xFFFF)) if status else None
        return status

    def send_blob(dataset: StoredBlob, *args: Any, **kwargs: Any) -> Dataset:
        with dataset.local_file() as (path, record):
            if _accepted(assoc, record.sop_class_uid, record.transfer_syntax):
                with sendable(path, record.transfer_syntax) as ready:
                    return original(ready, *args, **kwargs)
            if record.transfer_syntax not in CONVERTIBLE or record.size > CONVERT_MAX_BYTES:
                raise DimseError(f"no accepted presentation context for {record.sop_class_uid} in the "
                                 f"instance's transfer syntax {record.transfer_syntax}")
            import pydicom

            return original(pydicom.dcmread(path), *args, **kwargs)

    assoc.send_c_store = send_c_store
    assoc.__dict__[_WRAPPED] = True
    return assoc


def _accepted(assoc: Any, sop_class: str, syntax: str) -> bool:
    """Whether ``assoc`` has an accepted context to send ``sop_class`` in ``syntax``."""
    return any(cx.abstract_syntax == sop_class and cx.transfer_syntax and cx.transfer_syntax[0] == syntax
               for cx in assoc.accepted_contexts)


def matching_records(archive: Archive, identifier: Dataset) -> list[InstanceRecord] | None:
    """The archived instances a C-MOVE/C-GET identifier names (its unique keys: patient,
    study, series, instance UIDs, as given); None when it names none (the whole archive
    is never sent)."""
    matches: list[tuple[str, str]] = []
    for keyword in _UNIQUE_KEYS:
        value = identifier.get(keyword)
        if value is None:
            continue
        text = "\\".join(str(v) for v in value) if not isinstance(value, str) and hasattr(value, "__iter__") else str(value)
        text = text.strip()
        if text and text != "*":
            matches.append((keyword, text))
    if not matches:
        return None
    result = archive.catalog.search(Query("instance", matches=matches))
    records = []
    for hit in result.hits:
        sop = (hit.get("00080018", {}).get("Value") or [None])[0]
        record = archive.record(sop) if sop else None
        if record is not None:
            records.append(record)
    return records


def storage_contexts(pairs: Iterable[tuple[str, str]], limit: int = 128) -> list[PresentationContext]:
    """Presentation contexts to propose for sending instances of these (SOP class, transfer
    syntax) pairs: one per pair with exactly its syntax (a peer that can take the bytes as
    they are accepts it), plus, for an uncompressed syntax, one with the little endian
    alternatives (a peer that cannot gets a converted copy)."""
    from pynetdicom import build_context

    contexts = []
    for sop_class, syntax in dict.fromkeys(pairs):
        contexts.append(build_context(sop_class, [syntax]))
        if syntax in NATIVE_UIDS:
            others: list[str] = [s for s in (ExplicitVRLittleEndian, ImplicitVRLittleEndian) if s != syntax]
            contexts.append(build_context(sop_class, others))
    if len(contexts) > limit:
        log.warning("%d presentation contexts needed, %d proposed: some instances will fail", len(contexts), limit)
    return contexts[:limit]


def contexts_needed(syntax: str) -> int:
    """How many contexts :func:`storage_contexts` proposes for one pair of this syntax."""
    return 2 if syntax in NATIVE_UIDS else 1


def _records_or_status(archive: Archive, identifier: Dataset) -> tuple[list[InstanceRecord] | None, int]:
    try:
        records = matching_records(archive, identifier)
    except QueryError as exc:
        log.warning("retrieve identifier: %s", exc)
        return None, STATUS_UNABLE_TO_PROCESS
    except Exception:  # noqa: BLE001 - an identifier pydicom cannot decode
        log.warning("retrieve identifier could not be read", exc_info=True)
        return None, STATUS_IDENTIFIER_MISMATCH
    return records, STATUS_IDENTIFIER_MISMATCH if records is None else 0


class _Retrieved:
    """What a C-GET/C-MOVE sent, for its audit record."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []
        self.failed: list[str] = []
        self.status: int | None = None

    def settle(self, blob: StoredBlob | None) -> None:
        """Account for the instance just handed to pynetdicom (sent when its C-STORE got
        a success or warning status)."""
        if blob is None:
            return
        from .audit import dimse_outcome

        record: InstanceRecord = blob.__dict__["record"]
        if dimse_outcome(blob.__dict__.get("sent_status")) == "success":
            self.sent.append((record.study_uid, record.series_uid, record.sop_uid))
        else:
            self.failed.append(record.sop_uid)


def _sub_operations(event: Any, archive: Archive, records: list[InstanceRecord], done: _Retrieved,
                    unanswered: int | None = None) -> Iterator[Any]:
    done.status = unanswered  # the status when pynetdicom stops after the count
    yield len(records)
    done.status = None
    blob: StoredBlob | None = None
    for record in records:
        if event.is_cancelled:
            done.settle(blob)
            done.status = STATUS_CANCEL
            yield STATUS_CANCEL, None
            return
        blob = StoredBlob(archive, record)
        yield STATUS_PENDING, blob
        done.settle(blob)  # pynetdicom sent it before asking for the next
        blob = None
    # pynetdicom's final status: success, or 0xB000 when some sub-operations failed
    done.status = 0xB000 if done.failed else 0x0000


def _audited(event: Any, service: str, destination: str | None, audit: DimseAudit | None,
             operations: Callable[[_Retrieved], Iterator[Any]]) -> Iterator[Any]:
    """Run a retrieve's ``operations`` and write its audit record when they end: before
    the final response, or when the association ends midway (the generator is closed)."""
    done = _Retrieved()
    if audit is None:
        yield from operations(done)
        return
    from .audit import key_names

    identifier = event.identifier
    try:
        level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()[:16] or None
    except Exception:  # noqa: BLE001 - undecodable: the operations answer it
        level = None
    try:
        yield from operations(done)
    finally:
        # no final status: the association ended midway; some sent and some not: failure
        outcome = "incomplete" if done.status is None else "failure" if done.failed else None
        audit.retrieve(event.assoc, service, done.status, destination=destination, level=level,
                       keys=key_names(identifier), sent=done.sent, failed=done.failed, outcome=outcome)


def handle_get(event: Any, archive: Archive, audit: DimseAudit | None = None) -> Iterator[Any]:
    """``evt.EVT_C_GET``: the number of instances, then each one sent on this association."""
    caller = str(event.assoc.requestor.ae_title).strip()
    return _audited(event, "C-GET", caller, audit, lambda done: _get(event, archive, done))


def _get(event: Any, archive: Archive, done: _Retrieved) -> Iterator[Any]:
    records, status = _records_or_status(archive, event.identifier)
    if records is None:
        done.status = status
        yield 0
        yield status, None
        return
    use_blob_sender(event.assoc)
    yield from _sub_operations(event, archive, records, done)


def handle_move(event: Any, archive: Archive, peer_of: Callable[[str], DimsePeer | None],
                audit: DimseAudit | None = None) -> Iterator[Any]:
    """``evt.EVT_C_MOVE``: the destination (a configured peer; unknown: 0xA801), the number
    of instances, then each one sent on a new association to the destination."""
    destination = event.move_destination
    title = (destination.decode("ascii", "replace") if isinstance(destination, bytes) else str(destination)).strip()
    return _audited(event, "C-MOVE", title[:16], audit, lambda done: _move(event, archive, peer_of, title, done))


def _move(event: Any, archive: Archive, peer_of: Callable[[str], DimsePeer | None], title: str,
          done: _Retrieved) -> Iterator[Any]:
    peer = peer_of(title)
    if peer is None:
        log.warning("C-MOVE to %r from %s: not a known peer", title, event.assoc.requestor.ae_title)
        done.status = STATUS_UNKNOWN_DESTINATION
        yield None, None
        return
    records, status = _records_or_status(archive, event.identifier)
    if records is None:
        done.status = status
        yield peer.host, peer.port
        yield 0
        yield status, None
        return
    if not records:
        done.status = 0x0000
        yield peer.host, peer.port
        yield 0
        return
    yield peer.host, peer.port, {"contexts": storage_contexts((r.sop_class_uid, r.transfer_syntax) for r in records)}
    # pynetdicom associates with the destination after the count; when it cannot, it
    # answers 0xA801 and never asks for more: the status recorded unless it does
    yield from _sub_operations(event, archive, records, done, unanswered=STATUS_UNKNOWN_DESTINATION)
