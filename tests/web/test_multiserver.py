"""Several stateless servers: two ``dcmstream serve --config`` processes on two loopback
ports sharing one PostgreSQL catalog and one S3 server (moto) behave as one archive, and
killing one of them (SIGKILL) under STOW-RS load loses no acknowledged instance."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid

from dcmstream.archive.ingest import sweep_orphans
from dcmstream.config import load_config, open_archive

from ..s3_util import moto_server
from ..server_util import ServerProcess, start_config_server
from .conftest import multipart_parts

_DICOM = 'multipart/related; type="application/dicom"'


class _Instances:
    """Fresh instances of pydicom's CT_small.dcm: new SOP Instance UIDs in given series."""

    def __init__(self, path: str) -> None:
        self.template = pydicom.dcmread(path)
        self.study = generate_uid()
        self._lock = threading.Lock()

    def make(self, series: str) -> tuple[str, bytes]:
        with self._lock:
            ds = self.template
            ds.StudyInstanceUID, ds.SeriesInstanceUID = self.study, series
            sop = ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            return sop, buf.getvalue()


def _stow(client: httpx.Client, base: str, data: bytes) -> httpx.Response:
    boundary = "dcmstream-test-boundary"
    body = b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n--" + boundary.encode() + b"--\r\n"
    return client.post(f"{base}/dicomweb/studies", content=body, headers={"Content-Type": f"{_DICOM}; boundary={boundary}"})


def _stored_sops(response: httpx.Response) -> list[str]:
    items = response.json().get("00081199", {}).get("Value", [])
    return [item["00081155"]["Value"][0] for item in items]


def _retrieve(client: httpx.Client, base: str, study: str, series: str, sop: str) -> bytes | None:
    r = client.get(f"{base}/dicomweb/studies/{study}/series/{series}/instances/{sop}",
                   headers={"Accept": f"{_DICOM}; transfer-syntax=*"})
    if r.status_code == 404:
        return None
    assert r.status_code == 200, r.text
    parts = multipart_parts(r)
    assert len(parts) == 1
    return parts[0][1]


@pytest.fixture
def shared_archive(tmp_path: Path, postgres_server, monkeypatch):
    """A configuration file: a fresh PostgreSQL database + a bucket on a moto S3 server."""
    with postgres_server.database() as url, moto_server() as s3:
        for name, value in s3.env.items():
            monkeypatch.setenv(name, value)  # the servers and the checks read them
        bucket = s3.make_bucket()
        config = tmp_path / "archive.toml"
        config.write_text(
            f'[archive]\nroot = "{tmp_path}/local"\n[catalog]\nurl = "{url}"\n'
            f'[storage.hot]\nurl = "s3://{bucket}/dicom"\nendpoint_url = "{s3.endpoint_url}"\n'
            f'staging_dir = "{tmp_path}/staging"\n[server]\ncache_mb = 16\n'
        )
        yield config


@pytest.mark.slow
def test_two_servers_one_archive_and_a_kill_under_stow_load(shared_archive: Path, tmp_path: Path, testfile) -> None:
    config = shared_archive
    a = start_config_server(config, log=tmp_path / "a.log")
    b: ServerProcess | None = None
    try:
        b = start_config_server(config, log=tmp_path / "b.log")
        gen = _Instances(testfile("CT_small.dcm"))
        series = generate_uid()
        sent: dict[str, bytes] = {}
        with httpx.Client(timeout=30) as client:
            # -- STOW to one, QIDO/WADO from the other ----------------------------------------
            for _ in range(3):
                sop, data = gen.make(series)
                r = _stow(client, a.url, data)
                assert r.status_code == 200 and _stored_sops(r) == [sop], r.text
                sent[sop] = data
            found = client.get(f"{b.url}/dicomweb/studies/{gen.study}/series/{series}/instances").json()
            assert {hit["00080018"]["Value"][0] for hit in found} == set(sent)
            meta = f"{b.url}/dicomweb/studies/{gen.study}/series/{series}/metadata"
            assert len(client.get(meta).json()) == 3  # now in B's metadata cache
            sop, data = gen.make(series)
            assert _stow(client, a.url, data).status_code == 200
            sent[sop] = data
            assert len(client.get(meta).json()) == 4  # B's cache follows the catalog's version
            for sop, data in sent.items():
                assert _retrieve(client, b.url, gen.study, series, sop) == data
            # the same the other way round
            sop, data = gen.make(series)
            assert _stow(client, b.url, data).status_code == 200
            sent[sop] = data
            assert _retrieve(client, a.url, gen.study, series, sop) == data

        # -- kill -9 of A under STOW load; B keeps serving ------------------------------------
        acked: dict[str, tuple[str, bytes]] = {}
        unknown: dict[str, tuple[str, bytes]] = {}  # in flight when A died: stored or not, never half
        refused = []
        lock = threading.Lock()
        reads = {"qido": 0, "errors": 0}
        stop_reading = threading.Event()

        def load(worker: int) -> None:
            my_series = generate_uid()
            errors = 0
            with httpx.Client(timeout=30) as c:
                for _ in range(80):  # bounded: stops by itself
                    sop, data = gen.make(my_series)
                    try:
                        r = _stow(c, a.url, data)
                    except httpx.HTTPError:
                        with lock:
                            unknown[sop] = (my_series, data)
                        errors += 1
                        if errors >= 3:
                            return  # the server is gone
                        continue
                    with lock:
                        if r.status_code == 200 and sop in _stored_sops(r):
                            acked[sop] = (my_series, data)
                        else:
                            refused.append((r.status_code, r.text[:200]))

        def read_b() -> None:
            with httpx.Client(timeout=30) as c:
                while not stop_reading.is_set():
                    r = c.get(f"{b.url}/dicomweb/studies/{gen.study}/instances")
                    reads["qido" if r.status_code == 200 else "errors"] += 1

        threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
        reader = threading.Thread(target=read_b)
        started = time.perf_counter()
        for t in (*threads, reader):
            t.start()
        while len(acked) < 100 and any(t.is_alive() for t in threads):
            time.sleep(0.05)
        a.kill()
        for t in threads:
            t.join(120)
        stop_reading.set()
        reader.join(60)
        elapsed = time.perf_counter() - started
        assert not refused, refused[:3]
        assert reads["errors"] == 0 and reads["qido"] > 0

        # every acknowledged instance is retrievable byte-identical from B
        lost = []
        with httpx.Client(timeout=30) as client:
            for sop, (s, data) in acked.items():
                if _retrieve(client, b.url, gen.study, s, sop) != data:
                    lost.append(sop)
            in_flight_stored = 0
            for sop, (s, data) in unknown.items():
                got = _retrieve(client, b.url, gen.study, s, sop)
                assert got is None or got == data  # whole or absent
                in_flight_stored += got is not None
        assert not lost, f"{len(lost)} of {len(acked)} acknowledged instances lost"
        print(f"\nkill -9 under STOW load: {len(acked)} acknowledged, {len(lost)} lost, "
              f"{len(unknown)} without an answer ({in_flight_stored} of them stored whole), {reads['qido']} QIDO reads "
              f"from the other server meanwhile, {elapsed:.1f} s")
    finally:
        a.kill()
        if b is not None:
            b.stop()

    # -- no orphan rows; the killed server's leftovers are swept ------------------------------
    archive = open_archive(load_config(config), cache=False)
    try:
        staged = [p for p in (tmp_path / "staging").iterdir() if p.is_file()]
        swept_staging = archive.blobs.clean_staging(older_than=0)  # nothing runs any more
        orphans = sweep_orphans(archive, older_than=0)
        keys = set(archive.blobs.keys())
        records = [archive.catalog.get(sop) for sop in [*sent, *acked, *unknown]]
        referenced = {r.blob_key for r in records if r is not None}
        assert referenced <= keys, "a row without its blob"
        for r in records:
            if r is not None:
                assert archive.blobs.size(r.blob_key) == r.size
        assert keys == referenced, "an unreferenced blob"
        assert archive.catalog.counts()["instances"] == len(referenced)
        print(f"after the kill: {len(staged)} staging files left ({swept_staging} swept), "
              f"{len(orphans)} unreferenced blobs swept")
    finally:
        archive.close()


@pytest.mark.slow
def test_workers_share_one_archive(tmp_path: Path, testfile) -> None:
    """``--workers 2``: two uvicorn processes on one port, each with its own Archive from
    the configuration (SQLite + a folder here), answer as one archive."""
    config = tmp_path / "archive.toml"
    config.write_text(f'[catalog]\nurl = "sqlite:///catalog.sqlite"\n[storage.hot]\nurl = "file://{tmp_path}/store"\n'
                      "[server]\nworkers = 2\ncache_mb = 16\n")
    server = start_config_server(config, log=tmp_path / "serve.log")
    try:
        gen = _Instances(testfile("CT_small.dcm"))
        series = generate_uid()
        sent = {}
        with httpx.Client(timeout=30) as client:
            for _ in range(6):
                sop, data = gen.make(series)
                r = _stow(client, server.url, data)
                assert r.status_code == 200, r.text
                sent[sop] = data
            for _ in range(4):  # new connections: spread over the workers
                with httpx.Client(timeout=30) as fresh:
                    found = fresh.get(f"{server.url}/dicomweb/studies/{gen.study}/series/{series}/instances").json()
                    assert {hit["00080018"]["Value"][0] for hit in found} == set(sent)
                    for sop, data in sent.items():
                        assert _retrieve(fresh, server.url, gen.study, series, sop) == data
        assert "2 server processes" in server.log.read_text()
    finally:
        server.stop()
