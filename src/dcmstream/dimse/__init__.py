"""DIMSE (the DICOM upper layer protocol) for modalities and PACS peers, on pynetdicom.

:class:`DimseServer` is the archive's listener (C-ECHO, C-STORE into the one ingest,
C-FIND on the catalog's QIDO queries, C-MOVE/C-GET from the blob store, storage
commitment); :func:`send_files` the C-STORE SCU of ``dcmstream send`` and of the
forwarding rules (:class:`Forwarder`).
"""

from .common import DimseError
from .scp import DimseServer

__all__ = ["DimseServer", "DimseError"]
