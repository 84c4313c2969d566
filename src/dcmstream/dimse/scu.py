"""C-STORE SCU: send files (``dcmstream send``) or archived instances (forwarding rules)
to a DICOM peer, each in its own transfer syntax, streamed from its file.

The presentation contexts proposed are the (SOP class, transfer syntax) pairs of what is
sent (at most 128 per association: more pairs take several associations), with the
native alternatives for uncompressed files. A file goes out from disk in PDU-sized reads
(``STORE_SEND_CHUNKED_DATASET``), never decoded; only a small uncompressed file the peer
accepts in another native syntax is read whole, for pynetdicom to convert it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import STATUS_SUCCESS, VERIFICATION, DimseError, configure
from .retrieve import CONVERT_MAX_BYTES, CONVERTIBLE, StoredBlob, contexts_needed, sendable, storage_contexts, use_blob_sender

if TYPE_CHECKING:
    from ..archive import Archive, InstanceRecord
    from ..config import DimsePeer

__all__ = ["SendItem", "SendResult", "file_item", "record_item", "send_items", "echo"]

log = logging.getLogger(__name__)

_MAX_CONTEXTS = 128


@dataclass(frozen=True)
class SendItem:
    """One instance to send: what to hand to ``send_c_store`` (a path or a
    :class:`~.retrieve.StoredBlob`) and its SOP class, transfer syntax and size."""

    source: Any
    label: str
    sop_class: str
    transfer_syntax: str
    size: int


@dataclass(frozen=True)
class SendResult:
    """The outcome of one C-STORE: ``status`` is the peer's (None: not sent at all)."""

    item: SendItem
    status: int | None
    message: str = ""

    @property
    def ok(self) -> bool:
        # 0xB000-0xBFFF: warnings (coercion, elements discarded): the instance is stored
        return self.status is not None and (self.status == STATUS_SUCCESS or 0xB000 <= self.status <= 0xBFFF)


def file_item(path: str | os.PathLike[str]) -> SendItem:
    """A DICOM Part 10 file to send (its file meta says what it is); a DimseError when it
    is no DICOM file."""
    from pydicom.errors import InvalidDicomError
    from pynetdicom.dsutils import split_dataset

    path = Path(path)
    try:
        meta, _ = split_dataset(path)
        sop_class = str(meta.get("MediaStorageSOPClassUID", "") or "")
        syntax = str(meta.get("TransferSyntaxUID", "") or "")
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise DimseError(f"{path}: not a DICOM file ({exc})") from exc
    if not sop_class or not syntax:
        raise DimseError(f"{path}: no SOP Class or Transfer Syntax UID in its file meta information")
    return SendItem(path, str(path), sop_class, syntax, path.stat().st_size)


def record_item(archive: Archive, record: InstanceRecord) -> SendItem:
    """An archived instance to send from its blob."""
    return SendItem(StoredBlob(archive, record), record.sop_uid, record.sop_class_uid, record.transfer_syntax, record.size)


def _contexts(items: Sequence[SendItem]) -> list[Any]:
    return storage_contexts((i.sop_class, i.transfer_syntax) for i in items)


def _batches(items: Sequence[SendItem]) -> Iterable[list[SendItem]]:
    """Items in order, cut so that no batch needs more than 128 contexts."""
    batch: list[SendItem] = []
    pairs: set[tuple[str, str]] = set()
    needed = 0
    for item in items:
        pair = (item.sop_class, item.transfer_syntax)
        if pair not in pairs:
            cost = contexts_needed(item.transfer_syntax)
            if needed + cost > _MAX_CONTEXTS:
                yield batch
                batch, pairs, needed = [], set(), 0
            pairs.add(pair)
            needed += cost
        batch.append(item)
    if batch:
        yield batch


def _ae(calling_ae: str, timeout: float) -> Any:
    from pynetdicom import AE

    configure()
    ae = AE(calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    return ae


def _send_one(assoc: Any, item: SendItem) -> SendResult:
    accepted = any(cx.abstract_syntax == item.sop_class and cx.transfer_syntax[0] == item.transfer_syntax
                   for cx in assoc.accepted_contexts)
    source = item.source
    if not accepted and not isinstance(source, StoredBlob):
        if item.transfer_syntax not in CONVERTIBLE or item.size > CONVERT_MAX_BYTES:
            return SendResult(item, None, f"the peer accepted no context for {item.sop_class} in {item.transfer_syntax}")
        import pydicom

        source = pydicom.dcmread(source)
    try:
        if isinstance(source, Path):
            with sendable(source, item.transfer_syntax) as ready:
                status = assoc.send_c_store(ready)
        else:
            status = assoc.send_c_store(source)
    except (ValueError, AttributeError, OSError, RuntimeError) as exc:
        return SendResult(item, None, str(exc))
    code = status.get("Status") if status is not None else None
    if code is None:
        return SendResult(item, None, "no response (the peer aborted or timed out)")
    return SendResult(item, int(code), "" if int(code) == STATUS_SUCCESS else f"status 0x{int(code):04X}")


def send_items(items: Sequence[SendItem], peer: DimsePeer, *, calling_ae: str = "DCMSTREAM", timeout: float = 60.0,
               on_result: Callable[[SendResult], None] | None = None) -> list[SendResult]:
    """C-STORE each item to ``peer``, in order; every item gets a result (``on_result`` is
    called as each one is done). Raises :class:`DimseError` when the peer refuses the
    association outright."""
    ae = _ae(calling_ae, timeout)
    results: list[SendResult] = []

    def done(result: SendResult) -> None:
        results.append(result)
        if on_result is not None:
            on_result(result)

    for batch in _batches(items):
        pending = list(batch)
        attempts = 0
        while pending:
            assoc = use_blob_sender(ae.associate(peer.host, peer.port, contexts=_contexts(pending), ae_title=peer.ae_title))
            if not assoc.is_established:
                attempts += 1
                if not results and attempts == 1 and assoc.is_rejected:
                    raise DimseError(f"{peer} rejected the association from {calling_ae}")
                if attempts >= 2:
                    for item in pending:
                        done(SendResult(item, None, f"no association with {peer}"))
                    break
                continue
            before = len(pending)
            try:
                while pending and assoc.is_established:
                    done(_send_one(assoc, pending.pop(0)))
            finally:
                if assoc.is_established:
                    assoc.release()
            if len(pending) == before:  # dropped before a single C-STORE: give up after two tries
                attempts += 1
                if attempts >= 2:
                    for item in pending:
                        done(SendResult(item, None, f"the association with {peer} ended"))
                    break
    return results


def echo(peer: DimsePeer, *, calling_ae: str = "DCMSTREAM", timeout: float = 30.0) -> bool:
    """Whether ``peer`` answers a C-ECHO with success."""
    ae = _ae(calling_ae, timeout)
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title)
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return status is not None and int(status.get("Status", -1)) == STATUS_SUCCESS
    finally:
        assoc.release()
