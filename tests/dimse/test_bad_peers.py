"""Bad peers: garbage and oversized PDUs, half-sent PDUs, a peer dying mid C-STORE, a peer
that stops reading mid C-GET, 1,000 connections opened and dropped. The listener keeps
serving, its threads and memory come back down, nothing half stored stays behind."""

from __future__ import annotations

import logging
import os
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from dcmstream.archive import Archive
from dcmstream.config import DimsePeer
from dcmstream.dimse import DimseServer
from dcmstream.dimse.scu import echo
from dcmstream.memory import process_rss as rss_bytes

from .conftest import dcmtk, run

pytestmark = pytest.mark.slow


def _peer(server: DimseServer) -> DimsePeer:
    return DimsePeer("DCMSTREAM", "127.0.0.1", server.port)


def _settle(server: DimseServer, timeout: float = 30) -> None:
    """Wait until the listener holds no association any more."""
    deadline = time.monotonic() + timeout
    while server.ae.active_associations and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not server.ae.active_associations, server.ae.active_associations


def _raw(server: DimseServer, payload: bytes, *, linger: float = 0.0) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        if payload:
            s.sendall(payload)
        if linger:
            time.sleep(linger)


@pytest.fixture
def short_timeouts(server: DimseServer, caplog: pytest.LogCaptureFixture) -> DimseServer:
    from dataclasses import replace

    # every bad connection logs an error with a traceback: pytest would keep them all
    caplog.set_level(logging.CRITICAL, logger="pynetdicom")
    caplog.set_level(logging.CRITICAL, logger="dcmstream.dimse")
    server.settings = replace(server.settings, network_timeout=1.0)
    server.ae.acse_timeout = 2.0  # a connection that never asks for an association
    return server


def test_malformed_and_oversized_pdus(short_timeouts: DimseServer) -> None:
    server = short_timeouts
    payloads = [
        os.urandom(64),                                         # noise
        b"\x09\x00" + struct.pack(">L", 10) + b"x" * 10,        # unknown PDU type
        b"\x01\x00" + struct.pack(">L", 200) + b"\x00" * 200,   # an association request of zeros
        b"\x01\x00" + struct.pack(">L", 0xFFFFFFF0) + b"\x00" * (1 << 20),  # claims 4 GB
        b"\x01\x00" + struct.pack(">L", 5000) + b"\x00" * 100,  # half a PDU, then silence
        b"\x04\x00",                                            # half a header
    ]
    before = rss_bytes()
    threads = []
    for payload in payloads:
        t = threading.Thread(target=_raw, args=(server, payload), kwargs={"linger": 2.0})
        t.start()
        threads.append(t)
    for t in threads:
        t.join(30)
    assert echo(_peer(server))
    _settle(server)
    assert rss_bytes() - before < 64 << 20


def test_peer_dying_mid_store_leaves_nothing(short_timeouts: DimseServer, archive: Archive, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from dcmstream.samples import write_multiframe

    server = short_timeouts
    spool = tmp_path / "spool"  # where pynetdicom writes datasets being received
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    big = tmp_path / "big.dcm"
    write_multiframe(big, frames=400, syntax="explicit", kind="ct", rows=256, columns=256, seed=7)  # 52 MB
    sender = subprocess.Popen([dcmtk("storescu"), "-aec", "DCMSTREAM", "-pdu", "4096", "127.0.0.1", str(server.port),
                               str(big)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(p.stat().st_size > (1 << 20) for p in spool.iterdir()):
            time.sleep(0.01)
        assert any(spool.iterdir()), "the transfer did not start"
        sender.send_signal(signal.SIGKILL)
    finally:
        sender.kill()
        sender.wait(10)
    _settle(server)
    assert list(spool.iterdir()) == []
    assert archive.catalog.counts()["instances"] == 0
    assert list((archive.root / "objects").rglob("*.dcm")) == []
    assert server.metrics()["interrupted_stores"] == 1
    assert echo(_peer(server))


def test_peer_that_stops_reading_mid_get(short_timeouts: DimseServer, archive: Archive, tmp_path: Path) -> None:
    """getscu stopped (SIGSTOP) while the archive sends it a large instance: the server
    keeps answering others, its memory stays flat, and the stalled association ends."""
    from dcmstream.samples import write_multiframe

    server = short_timeouts
    big = tmp_path / "big.dcm"
    write_multiframe(big, frames=600, syntax="explicit", kind="ct", rows=256, columns=256, seed=8)  # 79 MB
    result = archive.ingest_file(big)
    assert result.ok
    out = tmp_path / "got"
    out.mkdir()
    before = rss_bytes()
    getter = subprocess.Popen([dcmtk("getscu"), "-S", "-pdu", "4096", "-od", str(out), "-k", "QueryRetrieveLevel=STUDY",
                               "-k", f"StudyInstanceUID={result.study_uid}", "-aec", "DCMSTREAM", "127.0.0.1",
                               str(server.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not server.ae.active_associations and time.monotonic() < deadline:
            time.sleep(0.005)
        getter.send_signal(signal.SIGSTOP)
        time.sleep(0.5)
        # others are served meanwhile
        assert echo(_peer(server))
        run(dcmtk("findscu"), "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID", "-aec", "DCMSTREAM",
            "127.0.0.1", str(server.port))
        assert rss_bytes() - before < 64 << 20  # the 79 MB instance is not in memory
    finally:
        getter.kill()
        getter.wait(10)
    _settle(server)


def test_a_thousand_connections_opened_and_dropped(short_timeouts: DimseServer) -> None:
    server = short_timeouts

    def connections(n: int) -> None:
        for i in range(n):
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
                if i % 3 == 1:
                    s.sendall(b"\x01\x00" + struct.pack(">L", 68))  # an association request header, no body
                elif i % 3 == 2:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close

    threads_before = threading.active_count()
    connections(100)  # warm-up: thread stacks, allocator arenas
    _settle(server)
    before = rss_bytes()
    connections(1000)
    _settle(server)
    # and 50 real associations aborted by the peer
    from pynetdicom import AE

    ae = AE("ABORTER")
    ae.add_requested_context("1.2.840.10008.1.1")
    for _ in range(50):
        assoc = ae.associate("127.0.0.1", server.port, ae_title="DCMSTREAM")
        assert assoc.is_established
        assoc.abort()
    assert echo(_peer(server))
    _settle(server)
    deadline = time.monotonic() + 30
    while threading.active_count() > threads_before + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= threads_before + 2
    assert rss_bytes() - before < 64 << 20


def test_calling_ae_titles_enforced(server: DimseServer) -> None:
    from dataclasses import replace

    server.stop()
    restricted = DimseServer(server.archive, replace(server.settings, accepted_calling_ae_titles=("MODALITY",)))
    restricted.start()
    try:
        assert not echo(_peer(restricted), calling_ae="STRANGER")
        assert echo(_peer(restricted), calling_ae="MODALITY")
    finally:
        restricted.stop()


def test_large_store_and_get_keep_memory_flat(server: DimseServer, archive: Archive, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A 79 MB instance received by C-STORE and sent back by C-GET - the second time from
    a store without local files (the S3 path: spooled to a staging file, deleted after) -
    never sits in memory."""
    import pydicom

    from dcmstream.samples import write_multiframe

    from .conftest import pixel_bytes

    big = tmp_path / "big.dcm"
    write_multiframe(big, frames=600, syntax="explicit", kind="ct", rows=256, columns=256, seed=9)
    before = rss_bytes()
    run(dcmtk("storescu"), "-aec", "DCMSTREAM", "127.0.0.1", str(server.port), str(big))
    assert archive.catalog.counts()["instances"] == 1
    ds = pydicom.dcmread(big, stop_before_pixels=True)
    monkeypatch.setattr(archive.blobs, "local_path", lambda key: None)  # as an S3 store
    out = tmp_path / "got"
    out.mkdir()
    run(dcmtk("getscu"), "-S", "-od", str(out), "-k", "QueryRetrieveLevel=STUDY", "-k",
        f"StudyInstanceUID={ds.StudyInstanceUID}", "-aec", "DCMSTREAM", "127.0.0.1", str(server.port))
    assert rss_bytes() - before < 48 << 20
    (got,) = out.iterdir()
    assert pixel_bytes(got) == pixel_bytes(big)
    assert list((archive.root / "tmp").iterdir()) == []  # the staging copy is gone
