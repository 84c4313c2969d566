"""Storage Commitment Push Model SCP (PS3.4 J): "do you hold these instances for good?"

The SCU sends an N-ACTION (Request Storage Commitment) with a Transaction UID and the
SOP Class/Instance UIDs of what it sent; the archive answers the N-ACTION at once and
then reports the result in an N-EVENT-REPORT: Event Type 1 when every instance is
archived (catalogued, with its blob), 2 with a Failed SOP Sequence otherwise (0x0112 no
such instance, 0x0119 another SOP class). The report goes on the same association when
the SCU still holds it open, else on a new one to the SCU (a configured peer, by its
AE title), where the archive takes the SCP role of the Storage Commitment SOP class.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset

from .common import STATUS_SUCCESS, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE

if TYPE_CHECKING:
    from pynetdicom import AE

    from ..archive import Archive
    from ..config import DimsePeer
    from .audit import DimseAudit

__all__ = ["handle_commitment", "commitment_report", "NO_SUCH_OBJECT", "CLASS_INSTANCE_CONFLICT"]

log = logging.getLogger(__name__)

#: PS3.4 J.3.2.2.2 Failure Reasons.
NO_SUCH_OBJECT = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119
_PROCESSING_FAILURE = 0x0110
#: N-ACTION statuses (PS3.7 C): no such action type, invalid argument value.
_NO_SUCH_ACTION = 0x0123
_INVALID_ARGUMENT = 0x0115


def commitment_report(archive: Archive, request: Dataset) -> tuple[int, Dataset]:
    """(Event Type ID, Event Information) answering a commitment request."""
    report = Dataset()
    report.TransactionUID = request.TransactionUID
    done, failed = [], []
    for item in request.get("ReferencedSOPSequence", []):
        sop_class = str(item.get("ReferencedSOPClassUID", "") or "")
        sop = str(item.get("ReferencedSOPInstanceUID", "") or "")
        out = Dataset()
        out.ReferencedSOPClassUID = sop_class
        out.ReferencedSOPInstanceUID = sop
        try:
            record = archive.catalog.get(sop) if sop else None
            reason = None
            if record is None:
                reason = NO_SUCH_OBJECT
            elif record.sop_class_uid != sop_class:
                reason = CLASS_INSTANCE_CONFLICT
            else:
                archive.current(record)  # the bytes are there (MissingBlobError otherwise)
        except Exception:  # noqa: BLE001 - catalog down, blob gone: not committed
            log.warning("storage commitment of %s: cannot confirm", sop, exc_info=True)
            reason = _PROCESSING_FAILURE
        if reason is None:
            done.append(out)
        else:
            out.FailureReason = reason
            failed.append(out)
    if done:
        report.ReferencedSOPSequence = done
    if failed:
        report.FailedSOPSequence = failed
    return (2 if failed else 1), report


def _send_report(ae: AE, assoc: Any, archive: Archive, request: Dataset,
                 peer_of: Callable[[str], DimsePeer | None], audit: DimseAudit | None = None) -> None:
    event_type, report = commitment_report(archive, request)
    delivery = _deliver(ae, assoc, request, event_type, report, peer_of)
    if audit is not None:
        audit.commitment(assoc, STATUS_SUCCESS, transaction=_uid(request.get("TransactionUID")),
                         committed=[_uid(i.get("ReferencedSOPInstanceUID")) for i in report.get("ReferencedSOPSequence", [])],
                         failed=[_uid(i.get("ReferencedSOPInstanceUID")) for i in report.get("FailedSOPSequence", [])],
                         report=delivery)


def _uid(value: Any) -> str:
    return str(value or "")[:64]


def _deliver(ae: AE, assoc: Any, request: Dataset, event_type: int, report: Dataset,
             peer_of: Callable[[str], DimsePeer | None]) -> str:
    """Send the N-EVENT-REPORT; how it went: ``same association``, ``new association``,
    ``undelivered``."""
    from pynetdicom import build_context, build_role

    # The N-ACTION response is sent when the handler returns: give it a moment first.
    time.sleep(0.1)
    if assoc.is_established:
        try:
            status, _ = assoc.send_n_event_report(report, event_type, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE)
            if status and status.get("Status", 0xFFFF) == STATUS_SUCCESS:
                return "same association"
        except Exception:  # noqa: BLE001 - the association went away: try a new one
            log.info("storage commitment report on the same association failed", exc_info=True)
    title = str(assoc.requestor.ae_title).strip()
    peer = peer_of(title)
    if peer is None:
        log.warning("storage commitment report for %s (transaction %s) undelivered: %s is no configured peer",
                    title, request.TransactionUID, title)
        return "undelivered"
    context = build_context(STORAGE_COMMITMENT)
    role = build_role(STORAGE_COMMITMENT, scp_role=True)
    report_assoc = ae.associate(peer.host, peer.port, contexts=[context], ae_title=peer.ae_title, ext_neg=[role])
    if not report_assoc.is_established:
        log.warning("storage commitment report for %s undelivered: association to %s refused", title, peer)
        return "undelivered"
    try:
        status, _ = report_assoc.send_n_event_report(report, event_type, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE)
        if not status or status.get("Status", 0xFFFF) != STATUS_SUCCESS:
            log.warning("storage commitment report to %s: status %s", peer, status.get("Status") if status else None)
            return "undelivered"
        return "new association"
    finally:
        report_assoc.release()


def handle_commitment(event: Any, archive: Archive, peer_of: Callable[[str], DimsePeer | None],
                      audit: DimseAudit | None = None) -> tuple[int, Dataset | None]:
    """``evt.EVT_N_ACTION``: accept a Request Storage Commitment (Action Type 1) and send
    its report from a thread once the response is out (recorded in ``audit`` then; a
    refused request at once)."""
    if event.action_type != 1:
        if audit is not None:
            audit.commitment(event.assoc, _NO_SUCH_ACTION, transaction=None, committed=[], failed=[], report="none")
        return _NO_SUCH_ACTION, None
    try:
        request = event.action_information
        _ = request.TransactionUID
    except Exception:  # noqa: BLE001 - an undecodable or incomplete request
        if audit is not None:
            audit.commitment(event.assoc, _INVALID_ARGUMENT, transaction=None, committed=[], failed=[], report="none")
        return _INVALID_ARGUMENT, None
    threading.Thread(
        target=_send_report, args=(event.assoc.ae, event.assoc, archive, request, peer_of, audit),
        name="dcmstream-commitment", daemon=True,
    ).start()
    return STATUS_SUCCESS, None
