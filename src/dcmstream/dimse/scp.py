"""The archive's DICOM network listener (pynetdicom): C-ECHO, C-STORE, C-FIND, C-MOVE,
C-GET and Storage Commitment, on one AE title and port, started by ``dcmstream serve``.

Robustness against bad peers is pynetdicom's, configured here: at most
``max_associations`` at once (more are rejected, "local limit exceeded"), the ACSE
timeout for an association request, the network timeout for a silent peer, the DIMSE
timeout for a peer that stops answering; a malformed PDU aborts its association only.
A dataset being received when its association ends is deleted (nothing half stored:
the archive only ingests whole files).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING, Any

from pynetdicom import AE, evt

from ..config import DimsePeer, DimseSettings
from .audit import DimseAudit
from .commitment import handle_commitment
from .common import (
    QUERY_RETRIEVE,
    STORAGE_COMMITMENT,
    VERIFICATION,
    DimseError,
    configure,
    discard_partial_dataset,
)
from .find import handle_find
from .retrieve import handle_get, handle_move, use_blob_sender
from .store import StoreCounters, handle_store

if TYPE_CHECKING:
    from ..archive import Archive
    from ..audit import AuditLog

__all__ = ["DimseServer", "ArchiveAE"]

log = logging.getLogger(__name__)

#: The largest PDU the archive receives (it announces it): fewer, larger reads than the
#: 16 KiB default; a few of them per association are what a transfer holds in memory.
MAX_PDU = 1 << 20
#: The largest PDU read from a peer at all: what we announce plus room for an association
#: request's items. pynetdicom itself would buffer whatever length a PDU header claims.
MAX_PDU_RECEIVED = MAX_PDU + (1 << 16)


class ArchiveAE(AE):
    """An AE whose outgoing associations (C-MOVE's) send archived blobs from their files
    (:func:`.retrieve.use_blob_sender`)."""

    def associate(self, *args: Any, **kwargs: Any) -> Any:
        return use_blob_sender(super().associate(*args, **kwargs))


class DimseServer:
    """The DIMSE SCP of an archive. ``start()`` listens in background threads (one per
    association); ``stop()`` closes the port and the open associations."""

    def __init__(self, archive: Archive, settings: DimseSettings, *, acse_timeout: float = 10.0,
                 dimse_timeout: float = 60.0, audit: AuditLog | None = None) -> None:
        configure()
        self.archive = archive
        self.settings = settings
        self.counters = StoreCounters()
        #: Each operation's audit line (with an ``[audit]`` trail) and its count by outcome.
        self.audit = DimseAudit(audit, called_ae_title=settings.ae_title,
                                titles_checked=bool(settings.accepted_calling_ae_titles))
        self.associations = 0
        self.rejected = 0
        self.aborted = 0
        self._server: Any = None
        ae = ArchiveAE(settings.ae_title)
        ae.maximum_associations = settings.max_associations
        ae.network_timeout = settings.network_timeout
        ae.acse_timeout = acse_timeout
        ae.dimse_timeout = dimse_timeout
        ae.connection_timeout = acse_timeout
        ae.maximum_pdu_size = MAX_PDU
        if settings.accepted_calling_ae_titles:
            ae.require_calling_aet = list(settings.accepted_calling_ae_titles)
        # Storage contexts need no entry: every one is accepted (configure(): pynetdicom's
        # unrestricted storage service), with the roles a C-GET requestor asks for.
        ae.add_supported_context(VERIFICATION)
        for uid in (*QUERY_RETRIEVE, STORAGE_COMMITMENT):
            ae.add_supported_context(uid)
        self.ae = ae

    def peer(self, ae_title: str) -> DimsePeer | None:
        return self.settings.peer(ae_title)

    def _handlers(self) -> list[Any]:
        archive, audit = self.archive, self.audit
        return [
            (evt.EVT_C_STORE, partial(handle_store, archive=archive, counters=self.counters, audit=audit)),
            (evt.EVT_C_FIND, partial(handle_find, archive=archive, ae_title=self.settings.ae_title, audit=audit)),
            (evt.EVT_C_GET, partial(handle_get, archive=archive, audit=audit)),
            (evt.EVT_C_MOVE, partial(handle_move, archive=archive, peer_of=self.peer, audit=audit)),
            (evt.EVT_N_ACTION, partial(handle_commitment, archive=archive, peer_of=self.peer, audit=audit)),
            (evt.EVT_CONN_OPEN, self._on_open),
            (evt.EVT_ESTABLISHED, self._on_established),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_ABORTED, self._on_end),
            (evt.EVT_CONN_CLOSE, self._on_end),
        ]

    def _on_open(self, event: Any) -> None:
        """Bound what one connection can cost, before its first byte is read: a socket
        timeout (pynetdicom's accepted sockets block forever: a peer that sends half a PDU,
        or stops reading what we send, would hold its thread for good) and a PDU size
        limit (a header claiming 4 GB would be buffered)."""
        sock = event.assoc.dul.socket
        raw = getattr(sock, "socket", None)
        if raw is not None:
            raw.settimeout(self.settings.network_timeout)
        recv = sock.recv

        def bounded_recv(nr_bytes: int) -> bytearray:
            if nr_bytes > MAX_PDU_RECEIVED:
                log.warning("DIMSE peer %s sent a PDU of %d bytes (limit %d): connection closed",
                            getattr(event, "address", "?"), nr_bytes, MAX_PDU_RECEIVED)
                # an OSError (pynetdicom's "connection closed" path), typed
                raise DimseError(f"PDU of {nr_bytes} bytes exceeds the limit of {MAX_PDU_RECEIVED}")
            data: bytearray = recv(nr_bytes)
            return data

        sock.recv = bounded_recv

    def _on_established(self, event: Any) -> None:
        self.associations += 1

    def _on_rejected(self, event: Any) -> None:
        """An association request refused (pynetdicom answered A-ASSOCIATE-RJ): audited."""
        self.rejected += 1
        title = str(getattr(event.assoc.requestor, "ae_title", "") or "").strip()
        accepted = self.settings.accepted_calling_ae_titles
        if accepted and title not in accepted:
            reason = "calling AE title not accepted"
        elif self.ae.require_called_aet:
            reason = "called AE title not recognised"
        else:
            reason = "too many associations"
        log.info("DIMSE association from %s at %s rejected: %s", title or "?", event.assoc.requestor.address, reason)
        self.audit.rejected(event.assoc, reason)

    def _on_end(self, event: Any) -> None:
        if discard_partial_dataset(event.assoc) is not None:
            self.aborted += 1

    def start(self) -> DimseServer:
        """Listen on ``settings.host:settings.port`` (port 0: a free one, see :attr:`port`)."""
        self._server = self.ae.start_server((self.settings.host, self.settings.port), block=False,
                                            evt_handlers=self._handlers())
        log.info("DIMSE %s listening on %s:%d", self.settings.ae_title, self.settings.host, self.port)
        return self

    @property
    def port(self) -> int:
        """The bound TCP port."""
        if self._server is None:
            return self.settings.port
        return int(self._server.server_address[1])

    def metrics(self) -> dict[str, int]:
        """Counters for logs and /metrics: associations (accepted, rejected), C-STORE
        outcomes, interrupted transfers, instances sent by C-GET/C-MOVE (and failed).
        :meth:`operations` has every operation by service and outcome."""
        return {"associations": self.associations, "rejected_associations": self.rejected,
                "interrupted_stores": self.aborted, **self.counters.as_dict(),
                "instances_sent": self.audit.sent, "instances_send_failed": self.audit.send_failed}

    def active_associations(self) -> int:
        """Associations open now (accepted by this listener)."""
        return sum(1 for a in self.ae.active_associations if a.is_acceptor)

    def operations(self) -> dict[tuple[str, str], int]:
        """Operations ended so far, by (service, outcome) (see :mod:`.audit`)."""
        return self.audit.counts()

    def stop(self) -> None:
        """Stop listening and abort the associations still open."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self.ae.shutdown()

    def __enter__(self) -> DimseServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
