"""Storage commitment (Push Model) with pynetdicom as the SCU: the report comes on the same
association, or on a new one to the SCU when it released its association first."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, build_role, evt

from dcmstream.archive import Archive
from dcmstream.config import DimsePeer
from dcmstream.dimse import DimseServer
from dcmstream.dimse.common import STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE

from .conftest import corpus_file, with_settings

pytestmark = pytest.mark.slow


def _request(*refs: tuple[str, str]) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = generate_uid()
    items = []
    for sop_class, sop in refs:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop
        items.append(item)
    ds.ReferencedSOPSequence = items
    return ds


@pytest.fixture
def stored(archive: Archive) -> tuple[str, str]:
    path = corpus_file("CT_small.dcm")
    assert archive.ingest_file(path).ok
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.SOPClassUID), str(ds.SOPInstanceUID)


def test_report_on_the_same_association(server: DimseServer, stored: tuple[str, str]) -> None:
    reports: list[tuple[int, Dataset]] = []
    got = threading.Event()

    def on_report(event: evt.Event) -> tuple[int, None]:
        reports.append((event.event_type, event.event_information))
        got.set()
        return 0x0000, None

    ae = AE("MODALITY")
    ae.add_requested_context(STORAGE_COMMITMENT)
    assoc = ae.associate("127.0.0.1", server.port, ae_title="DCMSTREAM", evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    assert assoc.is_established
    try:
        request = _request(stored, (stored[0], "1.2.3.4.5"), ("1.2.840.10008.5.1.4.1.1.4", stored[1]))
        status, _ = assoc.send_n_action(request, 1, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE)
        assert status.Status == 0x0000
        assert got.wait(20)
    finally:
        assoc.release()
    event_type, info = reports[0]
    assert event_type == 2  # some failed
    assert info.TransactionUID == request.TransactionUID
    assert [i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence] == [stored[1]]
    failed = {i.ReferencedSOPInstanceUID: int(i.FailureReason) for i in info.FailedSOPSequence}
    assert failed == {"1.2.3.4.5": 0x0112, stored[1]: 0x0119}


@pytest.fixture
def commitment_scu() -> Iterator[tuple[AE, DimsePeer, list[tuple[int, Dataset]], threading.Event]]:
    """A commitment SCU listening for reports on a new association."""
    reports: list[tuple[int, Dataset]] = []
    got = threading.Event()

    def on_report(event: evt.Event) -> tuple[int, None]:
        reports.append((event.event_type, event.event_information))
        got.set()
        return 0x0000, None

    ae = AE("MODALITY")
    ae.add_supported_context(STORAGE_COMMITMENT, scu_role=False, scp_role=True)
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    try:
        yield ae, DimsePeer("MODALITY", "127.0.0.1", server.server_address[1]), reports, got
    finally:
        ae.shutdown()


def test_report_on_a_new_association(server: DimseServer, stored: tuple[str, str], commitment_scu) -> None:
    ae, peer, reports, got = commitment_scu
    with_settings(server, peers=server.settings.peers + (peer,))
    ae.add_requested_context(STORAGE_COMMITMENT)
    assoc = ae.associate("127.0.0.1", server.port, ae_title="DCMSTREAM",
                         ext_neg=[build_role(STORAGE_COMMITMENT, scu_role=True)])
    assert assoc.is_established
    request = _request(stored)
    status, _ = assoc.send_n_action(request, 1, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE)
    assoc.release()  # at once: the report cannot come on this association
    assert status.Status == 0x0000
    assert got.wait(20)
    event_type, info = reports[0]
    assert event_type == 1  # all committed
    assert [i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence] == [stored[1]]
    assert "FailedSOPSequence" not in info
