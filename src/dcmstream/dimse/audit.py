"""Audit records and counters of the DIMSE listener's operations.

Every C-STORE, C-FIND, C-MOVE, C-GET, storage commitment request and rejected
association is one line of the archive's audit trail (:class:`dcmstream.audit.AuditLog`,
the file the DICOMweb server appends to, in the same shape), when ``[audit] path`` is
set; and it is counted, by service and outcome, for ``/metrics``, always::

    {"time": "...Z", "user": "CT1", "role": null, "auth": "ae-title", "client": "10.0.0.9",
     "action": "store", "service": "C-STORE", "called": "DCMSTREAM", "study": "1.2",
     "series": "1.2.3", "instance": "1.2.3.4", "status": 0, "outcome": "success"}

DIMSE has no user identity: ``user`` is the calling AE title (``auth``: ``"ae-title"``
when the listener accepts only the configured calling AE titles, ``"none"`` when it
accepts any, so the title is just what the peer claims). ``status`` is the DIMSE status
(decimal in JSON). A C-FIND is recorded with the *names* of its identifier's keys (the
values may be patient names and IDs, and are never written), like a QIDO query string.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..audit import entry

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from ..audit import AuditLog

__all__ = ["DimseAudit", "dimse_outcome", "key_names", "SERVICES"]

#: The services recorded (label values of ``dcmstream_dimse_operations_total``).
SERVICES = ("C-STORE", "C-FIND", "C-GET", "C-MOVE", "N-ACTION", "A-ASSOCIATE")
_ACTIONS = {"C-STORE": "store", "C-FIND": "search", "C-GET": "retrieve", "C-MOVE": "retrieve",
            "N-ACTION": "commit", "A-ASSOCIATE": "associate"}
#: Out of resources (0xA7xx), unable to process (0xC001, 0xC2xx: pynetdicom's "handler
#: raised"), processing failure (0x0110): the archive failed rather than the request.
_ERROR_STATUSES = frozenset({0x0110, 0xC001, 0xC211, 0xC311, 0xC411, 0xC511})
#: The most key names one C-FIND record lists.
_MAX_KEYS = 64


def dimse_outcome(status: int | None) -> str:
    """The audit outcome of a DIMSE status (PS3.7 C): success (warnings included),
    cancelled, error (the archive failed) or failure (the request could not be done)."""
    if status is None:
        return "incomplete"
    if status == 0x0000 or 0xB000 <= status <= 0xBFFF or status in (0x0001, 0x0107, 0x0116):
        return "success"
    if status == 0xFE00:
        return "cancelled"
    if status in _ERROR_STATUSES or 0xA700 <= status <= 0xA7FF:
        return "error"
    return "failure"


def key_names(identifier: Dataset) -> list[str]:
    """The keys of a query identifier, by keyword (or tag ``GGGGEEEE`` when it has none):
    which attributes were asked for or matched on, never their values."""
    names: list[str] = []
    try:
        for elem in identifier:
            if elem.tag.group == 0x0002:
                continue
            names.append(elem.keyword or f"{elem.tag:08X}")
            if len(names) >= _MAX_KEYS:
                break
    except Exception:  # noqa: BLE001 - an identifier pydicom cannot iterate: what was read so far
        pass
    return names


def _uids(values: Iterable[str | None]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


class DimseAudit:
    """Writes the audit line of each DIMSE operation (when there is a trail) and counts
    operations by service and outcome (always). Thread-safe: each association runs in
    its own thread."""

    def __init__(self, log: AuditLog | None, *, called_ae_title: str, titles_checked: bool) -> None:
        self.log = log
        self.called = called_ae_title
        self.auth = "ae-title" if titles_checked else "none"
        self._lock = threading.Lock()
        #: (service, outcome) -> operations.
        self.operations: Counter[tuple[str, str]] = Counter()
        #: Instances sent by C-GET and C-MOVE, and those whose sending failed.
        self.sent = 0
        self.send_failed = 0

    def record(self, assoc: Any, service: str, status: int | None, *, outcome: str | None = None,
               **fields: Any) -> None:
        """One operation of ``service`` on association ``assoc`` has ended with ``status``."""
        outcome = outcome or dimse_outcome(status)
        with self._lock:
            self.operations[service, outcome] += 1
        if self.log is None:
            return
        requestor = getattr(assoc, "requestor", None)
        title = str(getattr(requestor, "ae_title", "") or "").strip() or None
        address = getattr(requestor, "address", None)
        self.log.write(entry(user=title, role=None, auth=self.auth, client=str(address) if address else None,
                             action=_ACTIONS[service], service=service, called=self.called, **fields,
                             status=status, outcome=outcome))

    def store(self, assoc: Any, status: int, *, study: str | None, series: str | None, instance: str | None,
              result: str | None) -> None:
        """A C-STORE: the UIDs of the instance and the ingest's result (stored, duplicate, failed)."""
        self.record(assoc, "C-STORE", status, study=study, series=series, instance=instance, result=result)

    def find(self, assoc: Any, status: int | None, *, level: str | None, keys: list[str], matches: int) -> None:
        """A C-FIND: its level, the names of its keys, how many matches were answered."""
        self.record(assoc, "C-FIND", status, level=level, query=keys, matches=matches)

    def retrieve(self, assoc: Any, service: str, status: int | None, *, destination: str | None, level: str | None,
                 keys: list[str], sent: list[tuple[str, str, str]], failed: list[str], outcome: str | None = None) -> None:
        """A C-GET or C-MOVE: where to, the UIDs sent ((study, series, instance) each) and
        the instances that could not be sent."""
        with self._lock:
            self.sent += len(sent)
            self.send_failed += len(failed)
        self.record(assoc, service, status, outcome=outcome, destination=destination, level=level, query=keys,
                    studies=_uids(s for s, _, _ in sent) or None, series_list=_uids(s for _, s, _ in sent) or None,
                    instances=[i for _, _, i in sent] or None, failed=failed or None)

    def commitment(self, assoc: Any, status: int | None, *, transaction: str | None, committed: list[str],
                   failed: list[str], report: str) -> None:
        """A storage commitment request: the instances committed and not, and how the
        report went (``same association``, ``new association``, ``undelivered``)."""
        outcome = ("failure" if failed else "success") if status == 0 else None
        self.record(assoc, "N-ACTION", status, outcome=outcome, transaction=transaction, instances=committed,
                    failed=failed or None, report=report)

    def rejected(self, assoc: Any, reason: str) -> None:
        """An association refused (calling AE title not accepted, too many associations)."""
        self.record(assoc, "A-ASSOCIATE", None, outcome="denied", reason=reason)

    def counts(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self.operations)
