"""What the DIMSE modules share: the error type, pynetdicom's process-wide switches,
the transfer syntaxes offered and accepted, and the clean-up of half-received files.

pynetdicom is configured once per process (:func:`configure`): C-STORE datasets are
received into a file (not memory) and sent from a file (not decoded), so a 1,000-frame
multiframe never sits in RAM on either side.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path
from typing import Any

from ..codecs.syntaxes import SYNTAXES
from ..errors import DcmstreamError

__all__ = [
    "DimseError",
    "NATIVE_UIDS",
    "configure",
    "discard_partial_dataset",
    "STATUS_SUCCESS",
    "STATUS_PENDING",
    "STATUS_CANCEL",
    "STATUS_IDENTIFIER_MISMATCH",
    "STATUS_UNABLE_TO_PROCESS",
    "STATUS_UNKNOWN_DESTINATION",
    "STATUS_OUT_OF_RESOURCES_MATCHES",
    "VERIFICATION",
    "STORAGE_COMMITMENT",
    "STORAGE_COMMITMENT_INSTANCE",
    "QUERY_RETRIEVE",
]

log = logging.getLogger(__name__)

STATUS_SUCCESS = 0x0000
STATUS_PENDING = 0xFF00
STATUS_CANCEL = 0xFE00
#: PS3.4 C.4: "Identifier does not match SOP Class".
STATUS_IDENTIFIER_MISMATCH = 0xA900
#: PS3.4 C.4: "Unable to process".
STATUS_UNABLE_TO_PROCESS = 0xC001
#: PS3.4 C.4.2: "Move Destination unknown".
STATUS_UNKNOWN_DESTINATION = 0xA801
#: PS3.4 C.4: "Out of resources: unable to calculate number of matches".
STATUS_OUT_OF_RESOURCES_MATCHES = 0xA701


class DimseError(DcmstreamError, ConnectionError):
    """A DICOM peer could not be reached, rejected or aborted the association, or did not
    accept the presentation context an instance needs."""


# SOP classes (pynetdicom.sop_class generates its names at import: invisible to type checkers)
VERIFICATION = "1.2.840.10008.1.1"
STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
PATIENT_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.1.2"
PATIENT_ROOT_GET = "1.2.840.10008.5.1.4.1.2.1.3"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
QUERY_RETRIEVE = (PATIENT_ROOT_FIND, PATIENT_ROOT_MOVE, PATIENT_ROOT_GET, STUDY_ROOT_FIND, STUDY_ROOT_MOVE, STUDY_ROOT_GET)

#: The uncompressed, non-encapsulated syntaxes (pynetdicom can convert between them).
NATIVE_UIDS = frozenset(s.uid for s in SYNTAXES if not s.encapsulated and not s.deflated)

_configured = threading.Lock()


def configure() -> None:
    """Set pynetdicom's process-wide switches the archive relies on (idempotent)."""
    from pynetdicom import _config as netconfig
    from pynetdicom.transport import ThreadedAssociationServer

    with _configured:
        # The listen backlog (socketserver's default: 5). Connections a peer opens and drops
        # faster than they are accepted filled it, and every further connection attempt -
        # good peers' too - waited for a SYN retransmission (~0.15 s each on average).
        ThreadedAssociationServer.request_queue_size = 128
        # C-STORE SCP: the dataset goes to a temporary file as its PDUs arrive, in the
        # DICOM file format, and the handler gets its path (evt.dataset_path).
        netconfig.STORE_RECV_CHUNKED_DATASET = True
        # C-STORE SCU: a dataset given as a path is sent from the file in PDU-sized reads,
        # never decoded (needs an accepted context of the file's own transfer syntax).
        netconfig.STORE_SEND_CHUNKED_DATASET = True
        # C-STORE SCP: every storage SOP class (and private or unknown ones) in the transfer
        # syntax the peer lists first, as the archive stores any syntax (one it cannot
        # decode is kept as it is, without frame access). Also spares pynetdicom a deep
        # copy of ~150 x 30 supported contexts per association (~80 ms of CPU each).
        netconfig.UNRESTRICTED_STORAGE_SERVICE = True
        # Identifiers of every C-FIND response would be logged at INFO otherwise.
        netconfig.LOG_RESPONSE_IDENTIFIERS = False
        netconfig.LOG_REQUEST_IDENTIFIERS = False


def discard_partial_dataset(assoc: Any) -> Path | None:
    """Close and delete the temporary file of a C-STORE dataset still being received
    when an association ends (aborted, dropped, timed out): pynetdicom creates it with
    ``delete=False`` and only removes it after the handler ran. Returns its path (None:
    nothing was left)."""
    dimse = getattr(assoc, "dimse", None)
    message = getattr(dimse, "message", None)
    handle = getattr(message, "_data_set_file", None)
    if handle is None:
        return None
    path = Path(handle.name)
    with contextlib.suppress(OSError):
        handle.close()
    try:
        os.unlink(path)
    except OSError:
        return None  # already gone (the abort and the close both report the end)
    log.info("discarded the partly received dataset %s of an interrupted association", path)
    return path
