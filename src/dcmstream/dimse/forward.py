"""Forwarding rules (``[[forward]]``): instances stored by any front (DIMSE C-STORE, STOW-RS,
import) and matching a rule's modality / calling AE title are sent on to its peer.

A :class:`Forwarder` listens to the archive (:meth:`Archive.add_listener`: called after
each stored instance, in the ingesting thread) and queues (peer, SOP Instance UID) in a
bounded queue: a full queue drops the instance with a warning (the ingest never waits
for a slow peer). One background thread sends what is queued, several instances per
association, from their blobs (:mod:`.scu`), retrying a failed send a few times with a
growing delay; what still fails is logged and counted (:meth:`metrics`; on ``/metrics``
through :class:`.metrics.ForwarderCollector`).

The queue is in memory: instances queued but not yet sent when the server stops are not
forwarded after a restart (``dcmstream send`` them by hand). Rebuilding it from the
catalog (instances ingested since a watermark) is not done: a rule may match the
calling AE title of the C-STORE, which the catalog does not keep, and with ``--workers
N`` each process forwards what it stored, so one watermark would skip another
process's unsent instances.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..archive.catalog import Query
from .scu import record_item, send_items
from .store import calling_ae

if TYPE_CHECKING:
    from ..archive import Archive
    from ..archive.ingest import IngestResult
    from ..config import DimsePeer, ForwardRule

__all__ = ["Forwarder"]

log = logging.getLogger(__name__)

_BATCH = 64


class Forwarder:
    """Sends newly stored instances matching ``rules`` to their peers, in the background."""

    def __init__(self, archive: Archive, rules: Sequence[ForwardRule], *, calling_ae_title: str = "DCMSTREAM",
                 queue_size: int = 10000, attempts: int = 3, retry_delay: float = 5.0, timeout: float = 60.0) -> None:
        self.archive = archive
        self.rules = tuple(rules)
        self.calling_ae_title = calling_ae_title
        self.attempts = attempts
        self.retry_delay = retry_delay
        self.timeout = timeout
        self._queue: queue.Queue[tuple[DimsePeer, str]] = queue.Queue(queue_size)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.counts = {"queued": 0, "sent": 0, "failed": 0, "dropped": 0}

    def start(self) -> Forwarder:
        self.archive.add_listener(self._on_ingest)
        self._thread = threading.Thread(target=self._run, name="dcmstream-forward", daemon=True)
        self._thread.start()
        return self

    def metrics(self) -> dict[str, int]:
        """Instances queued, sent, failed after every attempt, dropped (queue full); pending now."""
        return {**self.counts, "pending": self._queue.qsize()}

    def _on_ingest(self, result: IngestResult) -> None:
        if result.status != "stored" or not result.sop_uid:
            return
        modality = self._modality(result) if any(r.modality for r in self.rules) else None
        caller = calling_ae.get()
        for rule in self.rules:
            if not rule.matches(modality, caller):
                continue
            try:
                self._queue.put_nowait((rule.to, result.sop_uid))
                self.counts["queued"] += 1
            except queue.Full:
                self.counts["dropped"] += 1
                log.warning("forwarding queue full: %s not forwarded to %s", result.sop_uid, rule.to)

    def _modality(self, result: IngestResult) -> str | None:
        """The instance's series' Modality, from the catalog (a series-level column)."""
        try:
            hits = self.archive.catalog.search(Query("series", result.study_uid, result.series_uid, limit=1)).hits
        except Exception:  # noqa: BLE001 - no modality: rules naming one do not match
            log.warning("forwarding: no modality for %s", result.sop_uid, exc_info=True)
            return None
        values = hits[0].get("00080060", {}).get("Value") if hits else None
        return str(values[0]) if values else None

    def _next_batch(self) -> list[tuple[DimsePeer, str]]:
        try:
            first = self._queue.get(timeout=0.5)
        except queue.Empty:
            return []
        batch = [first]
        while len(batch) < _BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item[0] != first[0]:
                self._queue.put(item)  # another peer: its own association, later
                break
            batch.append(item)
        return batch

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._next_batch()
            if not batch:
                continue
            peer = batch[0][0]
            pending = [sop for _, sop in batch]
            for attempt in range(self.attempts):
                pending = self._send(peer, pending)
                if not pending or self._stop.wait(self.retry_delay * (attempt + 1)):
                    break
            if pending:
                self.counts["failed"] += len(pending)
                log.error("forwarding to %s failed for %d instances: %s", peer, len(pending), ", ".join(pending[:5]))

    def _send(self, peer: DimsePeer, sops: list[str]) -> list[str]:
        """Send ``sops`` to ``peer``; the ones that failed."""
        items = []
        for sop in sops:
            record = self.archive.record(sop)
            if record is not None:  # deleted meanwhile: nothing to forward
                items.append(record_item(self.archive, record))
        try:
            results = send_items(items, peer, calling_ae=self.calling_ae_title, timeout=self.timeout)
        except Exception as exc:  # noqa: BLE001 - a refused association, a network error: retried
            log.warning("forwarding to %s: %s", peer, exc)
            return sops
        failed = [r.item.label for r in results if not r.ok]
        self.counts["sent"] += len(results) - len(failed)
        for r in results:
            if not r.ok:
                log.warning("forwarding %s to %s: %s", r.item.label, peer, r.message)
        return failed

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
