"""The DIMSE listener in the audit trail: C-STORE, C-FIND, C-GET, C-MOVE, storage
commitment and rejected associations from real DCMTK peers are one JSON line each, in the
trail's shape, with the calling AE title as the user, and never a patient name or ID
(those of a C-FIND identifier included)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt

from dcmstream.archive import Archive
from dcmstream.audit import AuditLog
from dcmstream.config import DimseSettings
from dcmstream.dimse import DimseServer
from dcmstream.dimse.audit import dimse_outcome, key_names
from dcmstream.dimse.common import STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE

from .conftest import Storescp, corpus_file, dcmtk, run

pytestmark = pytest.mark.slow


@pytest.fixture
def audited(archive: Archive, storescp: Storescp, tmp_path: Path) -> Iterator[tuple[DimseServer, Path]]:
    """A listener accepting the calling AE titles CT1 and WS, with an audit trail."""
    path = tmp_path / "logs" / "audit.jsonl"
    log = AuditLog(path)
    settings = DimseSettings(port=0, peers=(storescp.peer,), accepted_calling_ae_titles=("CT1", "WS"),
                             network_timeout=10.0)
    srv = DimseServer(archive, settings, dimse_timeout=20.0, audit=log).start()
    try:
        yield srv, path
    finally:
        srv.stop()
        log.close()


def _lines(path: Path, count: int, timeout: float = 20) -> list[dict]:
    """The trail once it has ``count`` lines (a record may be written as the peer exits)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def _addr(server: DimseServer, calling: str) -> list[str]:
    return ["-aet", calling, "-aec", "DCMSTREAM", "127.0.0.1", str(server.port)]


def test_every_dimse_access_is_one_line(audited: tuple[DimseServer, Path], storescp: Storescp, tmp_path: Path) -> None:
    server, path = audited
    ct = corpus_file("CT_small.dcm")
    ds = pydicom.dcmread(ct, stop_before_pixels=True)
    name, pid = str(ds.PatientName), str(ds.PatientID)

    run(dcmtk("storescu"), *_addr(server, "CT1"), str(ct))
    refused = run(dcmtk("storescu"), *_addr(server, "STRANGER"), str(ct), check=False)
    assert refused.returncode != 0
    assert len(_lines(path, 2)) == 2  # the rejection is recorded just after the A-ASSOCIATE-RJ is sent
    found = tmp_path / "found"
    found.mkdir()
    run(dcmtk("findscu"), "-S", "-X", "-od", str(found), "-k", "QueryRetrieveLevel=STUDY", "-k", f"PatientName={name}",
        "-k", f"PatientID={pid}", "-k", "StudyInstanceUID", "-k", "PatientBirthDate", *_addr(server, "WS"))
    assert len(list(found.iterdir())) == 1
    got = tmp_path / "got"
    got.mkdir()
    run(dcmtk("getscu"), "-S", "-od", str(got), "-k", "QueryRetrieveLevel=SERIES",
        "-k", f"StudyInstanceUID={ds.StudyInstanceUID}", "-k", f"SeriesInstanceUID={ds.SeriesInstanceUID}",
        *_addr(server, "WS"))
    assert len(list(got.iterdir())) == 1
    # C-MOVE at PATIENT level: the identifier holds the patient ID, the trail must not
    run(dcmtk("movescu"), "-P", "-aem", "STORESCP", "-k", "QueryRetrieveLevel=PATIENT", "-k", f"PatientID={pid}",
        *_addr(server, "WS"))
    assert len(storescp.files()) == 1
    unknown = run(dcmtk("movescu"), "-S", "-aem", "NOBODY", "-k", "QueryRetrieveLevel=STUDY",
                  "-k", f"StudyInstanceUID={ds.StudyInstanceUID}", *_addr(server, "WS"), check=False)
    assert "MoveDestinationUnknown" in unknown.stdout + unknown.stderr or unknown.returncode != 0

    lines = _lines(path, 6)
    assert [(x["service"], x["action"], x["user"], x["outcome"]) for x in lines] == [
        ("C-STORE", "store", "CT1", "success"),
        ("A-ASSOCIATE", "associate", "STRANGER", "denied"),
        ("C-FIND", "search", "WS", "success"),
        ("C-GET", "retrieve", "WS", "success"),
        ("C-MOVE", "retrieve", "WS", "success"),
        ("C-MOVE", "retrieve", "WS", "failure"),
    ]
    store, rejected, find, get, move, unknown_move = lines
    for line in lines:
        assert line["auth"] == "ae-title" and line["client"] == "127.0.0.1" and line["called"] == "DCMSTREAM"
        assert line["time"].endswith("Z") and line["role"] is None
    assert (store["study"], store["series"], store["instance"], store["status"], store["result"]) == (
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, 0, "stored")
    assert rejected["reason"] == "calling AE title not accepted" and rejected["status"] is None
    assert find["level"] == "STUDY" and find["matches"] == 1 and find["status"] == 0
    assert find["query"] == ["QueryRetrieveLevel", "PatientName", "PatientID", "PatientBirthDate", "StudyInstanceUID"]
    assert get["destination"] == "WS" and get["instances"] == [ds.SOPInstanceUID]
    assert get["studies"] == [ds.StudyInstanceUID] and get["series_list"] == [ds.SeriesInstanceUID]
    assert move["destination"] == "STORESCP" and move["instances"] == [ds.SOPInstanceUID] and move["level"] == "PATIENT"
    assert move["query"] == ["QueryRetrieveLevel", "PatientID"]
    assert unknown_move["destination"] == "NOBODY" and unknown_move["status"] == 0xA801
    assert "instances" not in unknown_move
    text = path.read_text()
    for secret in (name, pid, name.split("^")[0]):
        assert secret not in text, secret
    # and counted, by service and outcome
    ops = server.operations()
    assert ops[("C-STORE", "success")] == 1 and ops[("A-ASSOCIATE", "denied")] == 1
    assert ops[("C-MOVE", "success")] == 1 and ops[("C-MOVE", "failure")] == 1
    metrics = server.metrics()
    assert metrics["rejected_associations"] == 1 and metrics["instances_sent"] == 2 and metrics["stored"] == 1


def test_a_failed_store_and_a_bad_find_are_recorded(audited: tuple[DimseServer, Path], tmp_path: Path) -> None:
    server, path = audited
    ct = pydicom.dcmread(corpus_file("CT_small.dcm"))
    ct.SOPInstanceUID = ct.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    first = tmp_path / "first.dcm"
    ct.save_as(first, enforce_file_format=True)
    ct.PatientName = "OTHER^BYTES"  # same SOP Instance UID, other bytes: refused (0x0111)
    second = tmp_path / "second.dcm"
    ct.save_as(second, enforce_file_format=True)
    run(dcmtk("storescu"), *_addr(server, "CT1"), str(first))
    run(dcmtk("storescu"), *_addr(server, "CT1"), str(second), check=False)
    run(dcmtk("findscu"), "-S", "-k", "QueryRetrieveLevel=NOPE", "-k", "PatientName=SECRET^NAME",
        *_addr(server, "WS"), check=False)
    lines = _lines(path, 3)
    assert [(x["service"], x["outcome"], x["status"]) for x in lines] == [
        ("C-STORE", "success", 0), ("C-STORE", "failure", 0x0111), ("C-FIND", "failure", 0xA900)]
    assert lines[1]["instance"] == ct.SOPInstanceUID and lines[1]["result"] == "failed"
    assert lines[2]["query"] == ["QueryRetrieveLevel", "PatientName"]
    assert "SECRET" not in path.read_text() and "OTHER" not in path.read_text()


def test_storage_commitment_is_recorded(audited: tuple[DimseServer, Path], archive: Archive) -> None:
    server, path = audited
    ct = corpus_file("CT_small.dcm")
    assert archive.ingest_file(ct).ok
    ds = pydicom.dcmread(ct, stop_before_pixels=True)
    got = threading.Event()

    def on_report(event: evt.Event) -> tuple[int, None]:
        got.set()
        return 0x0000, None

    ae = AE("WS")
    ae.add_requested_context(STORAGE_COMMITMENT)
    assoc = ae.associate("127.0.0.1", server.port, ae_title="DCMSTREAM", evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    assert assoc.is_established
    request = Dataset()
    request.TransactionUID = generate_uid()
    items = []
    for sop in (str(ds.SOPInstanceUID), "1.2.3.4.5"):
        item = Dataset()
        item.ReferencedSOPClassUID = str(ds.SOPClassUID)
        item.ReferencedSOPInstanceUID = sop
        items.append(item)
    request.ReferencedSOPSequence = items
    try:
        status, _ = assoc.send_n_action(request, 1, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE)
        assert status.Status == 0x0000
        assert got.wait(20)
    finally:
        assoc.release()
    (line,) = _lines(path, 1)
    assert (line["service"], line["action"], line["user"], line["outcome"]) == ("N-ACTION", "commit", "WS", "failure")
    assert line["transaction"] == request.TransactionUID and line["report"] == "same association"
    assert line["instances"] == [ds.SOPInstanceUID] and line["failed"] == ["1.2.3.4.5"]


def test_without_a_trail_operations_are_still_counted(server: DimseServer) -> None:
    run(dcmtk("storescu"), "-aec", "DCMSTREAM", "127.0.0.1", str(server.port), str(corpus_file("CT_small.dcm")))
    deadline = time.monotonic() + 10
    while not server.operations() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.operations() == {("C-STORE", "success"): 1}


def test_outcomes_and_key_names() -> None:
    assert [dimse_outcome(s) for s in (0, 0xB000, 0xFE00, 0xA700, 0xC001, 0x0111, 0xA801, None)] == [
        "success", "success", "cancelled", "error", "error", "failure", "failure", "incomplete"]
    identifier = Dataset()
    identifier.PatientName = "DOE^JOHN"
    identifier.add_new(0x00091010, "LO", "private")
    assert key_names(identifier) == ["00091010", "PatientName"]  # in tag order, never the values


# -- dcmstream serve: the trail, /metrics and the bind guard ------------------------------------
SRC = Path(__file__).resolve().parents[2] / "src"


def test_serve_config_audits_dimse_and_shows_its_metrics(tmp_path: Path, storescp: Storescp) -> None:
    """One process: DIMSE and HTTP lines in one [audit] file; /metrics has the listener's and
    the forwarder's counters."""
    import os
    import signal
    import sys

    import httpx

    from tests.server_util import free_port

    from .conftest import wait_port

    http_port, dimse_port = free_port(), free_port()
    audit = tmp_path / "audit.jsonl"
    config = tmp_path / "archive.toml"
    config.write_text(f"""
[catalog]
url = "sqlite:///catalog.sqlite"
[storage.hot]
url = "file://{tmp_path / 'blobs'}"
[server]
port = {http_port}
[audit]
path = "{audit}"
[dimse]
port = {dimse_port}
accepted_calling_ae_titles = ["CT1"]
[[dimse.peers]]
ae_title = "STORESCP"
host = "127.0.0.1"
port = {storescp.port}
[[forward]]
to = "STORESCP"
""")
    log = tmp_path / "serve.log"
    process = subprocess.Popen([sys.executable, "-m", "dcmstream", "serve", "--config", str(config)],
                               stdout=log.open("w"), stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(SRC)})
    try:
        wait_port(dimse_port, 60)
        wait_port(http_port, 60)
        ct = corpus_file("CT_small.dcm")
        run(dcmtk("storescu"), "-aet", "CT1", "-aec", "DCMSTREAM", "127.0.0.1", str(dimse_port), str(ct))
        assert run(dcmtk("echoscu"), "-aet", "NOBODY", "-aec", "DCMSTREAM", "127.0.0.1", str(dimse_port),
                   check=False).returncode != 0
        assert httpx.get(f"http://127.0.0.1:{http_port}/dicomweb/studies", timeout=30).status_code == 200
        deadline = time.monotonic() + 30
        metrics = ""
        while 'dcmstream_forward_instances_total{result="sent"} 1.0' not in metrics and time.monotonic() < deadline:
            metrics = httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=30).text
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        finally:
            process.kill()
            process.wait(10)
    for sample in ('dcmstream_dimse_stores_total{result="stored"} 1.0',
                   'dcmstream_dimse_associations_total{result="accepted"} 1.0',
                   'dcmstream_dimse_associations_total{result="rejected"} 1.0',
                   'dcmstream_dimse_operations_total{outcome="success",service="C-STORE"} 1.0',
                   'dcmstream_forward_instances_total{result="sent"} 1.0',
                   "dcmstream_forward_pending 0.0"):
        assert sample in metrics, (sample, metrics)
    lines = [json.loads(x) for x in audit.read_text().splitlines()]
    # (the rejection's line is written just after the A-ASSOCIATE-RJ: maybe after the GET's)
    assert sorted((x["action"], x["user"], x["outcome"]) for x in lines) == [
        ("associate", "NOBODY", "denied"), ("search", "anonymous", "success"), ("store", "CT1", "success")]
    assert lines[0]["service"] == "C-STORE" and {x.get("method") for x in lines} == {None, "GET"}


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    import sys

    return subprocess.run([sys.executable, "-m", "dcmstream", "serve", *args], capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})


def test_serve_refuses_dimse_on_a_public_address_without_calling_ae_titles(tmp_path: Path) -> None:
    from tests.server_util import free_port

    port = str(free_port())
    result = _serve(str(tmp_path / "archive"), "--port", "1", "--dimse-port", port, "--dimse-host", "0.0.0.0")
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "refusing to accept DICOM associations on 0.0.0.0" in out and "--insecure-bind" in out, out
    assert "accepted_calling_ae_titles" in out and "--dimse-accept" in out, out
    config = tmp_path / "archive.toml"
    config.write_text(f'[catalog]\nurl = "sqlite:///{tmp_path}/c.sqlite"\n[storage.hot]\nurl = "file://{tmp_path}/b"\n'
                      f'[dimse]\nhost = "::"\nport = {port}\n')
    result = _serve("--config", str(config), "--port", "1")
    assert result.returncode != 0 and "refusing to accept DICOM associations on ::" in result.stdout + result.stderr


def test_dimse_bind_rules() -> None:
    from dcmstream.cli.serve import ServeSecurityError, check_dimse_bind, dimse_options

    # the DIMSE address is --dimse-host, else [dimse] host, else loopback: never --host
    settings = dimse_options(None, 11112, None, None)
    assert settings.host == "127.0.0.1" and settings.accepted_calling_ae_titles == ()
    check_dimse_bind(settings, False)
    public = dimse_options(None, 11112, None, None, "0.0.0.0")
    with pytest.raises(ServeSecurityError, match="--insecure-bind"):
        check_dimse_bind(public, False)
    check_dimse_bind(public, True)
    listed = dimse_options(None, 11112, None, None, "0.0.0.0", ["CT1", " WS ", "CT1"])
    assert listed.accepted_calling_ae_titles == ("CT1", "WS")
    check_dimse_bind(listed, False)
    check_dimse_bind(dimse_options(None, 11112, None, None, "localhost"), False)
    check_dimse_bind(None, False)  # no listener
    from dcmstream.config import ConfigError

    with pytest.raises(ConfigError, match="--dimse-accept"):
        dimse_options(None, 11112, None, None, None, ["A" * 17])
