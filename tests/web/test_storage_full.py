"""Storage exhausted during STOW-RS: 507 with FailureReason 0xA700 per instance, one log
line, nothing half-written, acknowledged data intact, and the next STOW succeeds once
space is back, without a restart.

Real exhaustion: the server runs with its archive (or only its catalog) on a small tmpfs
of its own (``unshare`` of a user and mount namespace, where the container allows it),
filled up from outside through ``/proc/PID/root``; or with RLIMIT_FSIZE (SIGXFSZ ignored,
so writes get EFBIG), which needs nothing. Plus injected ENOSPC at the blob write, and the
S3 error mapping (507 -> full, 5xx/slow down -> 503 with Retry-After)."""

from __future__ import annotations

import errno
import io
import os
import resource
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid

from dcmstream.archive import Archive, StorageFullError
from dcmstream.samples import write_multiframe
from dcmstream.web import create_app

from ..server_util import running_server, start_config_server

FAILED_SOP_SEQUENCE, REFERENCED_SOP_SEQUENCE = "00081198", "00081199"
FAILURE_REASON, REFERENCED_SOP = "00081197", "00081155"
OUT_OF_RESOURCES = 0xA700


def _body(*instances: bytes) -> tuple[bytes, dict[str, str]]:
    boundary = "b0undary"
    body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + d + b"\r\n" for d in instances)
    body += b"--" + boundary.encode() + b"--\r\n"
    return body, {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'}


def _stow(http: httpx.Client, base: str, *instances: bytes) -> httpx.Response:
    body, headers = _body(*instances)
    return http.post(f"{base}/dicomweb/studies", content=body, headers=headers)


def _instances(template: Path, n: int) -> list[tuple[str, bytes]]:
    """``n`` copies of ``template`` as new instances (new SOP Instance UIDs): (sop, bytes)."""
    out = []
    for _ in range(n):
        ds = pydicom.dcmread(template)
        sop = generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append((sop, buf.getvalue()))
    return out


def _assert_refused(r: httpx.Response, sops: list[str]) -> None:
    assert r.status_code == 507, (r.status_code, r.text[:500])
    body = r.json()
    assert REFERENCED_SOP_SEQUENCE not in body
    items = body[FAILED_SOP_SEQUENCE]["Value"]
    assert [i[FAILURE_REASON]["Value"] for i in items] == [[OUT_OF_RESOURCES]] * len(sops)
    assert [i[REFERENCED_SOP]["Value"][0] for i in items] == sops  # each instance named
    assert "storage" in r.headers["warning"]


def _assert_stored(r: httpx.Response, sops: list[str]) -> None:
    assert r.status_code == 200, (r.status_code, r.text[:500])
    assert [i[REFERENCED_SOP]["Value"][0] for i in r.json()[REFERENCED_SOP_SEQUENCE]["Value"]] == sops


def _assert_retrievable(http: httpx.Client, base: str, study: str, stored: dict[str, bytes]) -> None:
    qido = http.get(f"{base}/dicomweb/studies/{study}/instances").json()
    assert sorted(i["00080018"]["Value"][0] for i in qido) == sorted(stored)
    for sop, data in stored.items():
        series = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SeriesInstanceUID
        r = http.get(f"{base}/dicomweb/studies/{study}/series/{series}/instances/{sop}",
                     headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
        assert r.status_code == 200 and data in r.content


# -- injected ENOSPC at the blob write ----------------------------------------------------------
def test_injected_enospc_at_the_blob_write(tmp_path, testfile, monkeypatch, caplog) -> None:
    from dcmstream.archive import blobstore

    archive = Archive(tmp_path / "archive", cache=False)
    real_link = blobstore._link_exclusive
    with running_server(create_app(archive)) as url, httpx.Client(timeout=60) as http:
        first = _instances(Path(testfile("CT_small.dcm")), 4)
        _assert_stored(_stow(http, url, first[0][1]), [first[0][0]])

        def no_space(*args: object, **kwargs: object) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(blobstore, "_link_exclusive", no_space)
        with caplog.at_level("ERROR", logger="dcmstream.web.stow"):
            r = _stow(http, url, *(d for _, d in first[1:]))
        _assert_refused(r, [s for s, _ in first[1:]])
        lines = [rec.getMessage() for rec in caplog.records if rec.name == "dcmstream.web.stow"]
        assert len(lines) == 1 and "storage full" in lines[0] and "3 of 3" in lines[0], lines
        assert list((tmp_path / "archive" / "tmp").iterdir()) == []  # no staging file left
        monkeypatch.setattr(blobstore, "_link_exclusive", real_link)  # space is back
        _assert_stored(_stow(http, url, *(d for _, d in first[1:])), [s for s, _ in first[1:]])
        study = pydicom.dcmread(testfile("CT_small.dcm")).StudyInstanceUID
        _assert_retrievable(http, url, study, dict(first))
    assert sorted(archive.blobs.keys()) == sorted(archive.catalog.get(s).blob_key for s, _ in first)
    archive.close()


def test_storage_full_typing() -> None:
    """ENOSPC, EDQUOT, EFBIG (also as a cause) become StorageFullError; other errors do not."""
    from dcmstream.archive.blobstore import storage_full

    for code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        full = storage_full(OSError(code, os.strerror(code)), "x")
        assert isinstance(full, StorageFullError) and isinstance(full, OSError) and full.errno == code
    try:
        try:
            raise OSError(errno.ENOSPC, "full")
        except OSError as exc:
            raise RuntimeError("wrapped") from exc
    except RuntimeError as wrapped:
        assert storage_full(wrapped, "x") is not None
    assert storage_full(OSError(errno.EACCES, "denied"), "x") is None
    assert storage_full(ValueError("no"), "x") is None


def test_s3_error_mapping() -> None:
    """What an object store answers: 507 (MinIO's storage full) is StorageFullError; 503,
    slow down and a refused connection are transient (503 with Retry-After on the web)."""
    pytest.importorskip("boto3")
    from botocore.exceptions import ClientError, EndpointConnectionError

    from dcmstream.archive import S3BlobStore
    from dcmstream.archive.s3store import BlobStoreConnectionError

    store = S3BlobStore("bucket", endpoint_url="http://127.0.0.1:9")

    def client_error(status: int, code: str) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
                           "PutObject")

    assert isinstance(store._failed("PutObject", "k", client_error(507, "XMinioStorageFull")), StorageFullError)
    assert isinstance(store._failed("PutObject", "k", client_error(403, "QuotaExceeded")), StorageFullError)
    for exc in (client_error(503, "SlowDown"), client_error(500, "InternalError"),
                EndpointConnectionError(endpoint_url="http://127.0.0.1:9")):
        assert isinstance(store._failed("PutObject", "k", exc), BlobStoreConnectionError)
    other = store._failed("PutObject", "k", client_error(403, "AccessDenied"))
    assert not isinstance(other, (StorageFullError, BlobStoreConnectionError))


def test_unreachable_object_store_is_503_with_retry_after(tmp_path, testfile, monkeypatch) -> None:
    """A STOW whose blob store does not answer (a closed port): 503, Retry-After, 0xA700."""
    pytest.importorskip("boto3")
    from dcmstream.archive import S3BlobStore
    from dcmstream.archive.s3store import BlobStoreConnectionError

    from ..server_util import free_port

    for name, value in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    store = S3BlobStore("bucket", endpoint_url=f"http://127.0.0.1:{free_port()}", staging_dir=tmp_path / "staging")
    archive = Archive(tmp_path / "archive", blobs=store, cache=False)
    with pytest.raises(BlobStoreConnectionError):
        store.put_bytes("a/b.dcm", b"x")
    (sop, data), = _instances(Path(testfile("CT_small.dcm")), 1)
    with running_server(create_app(archive)) as url, httpx.Client(timeout=120) as http:
        r = _stow(http, url, data)
    assert r.status_code == 503, r.text[:500]
    assert r.headers["retry-after"].isdigit()
    (item,) = r.json()[FAILED_SOP_SEQUENCE]["Value"]
    assert item[FAILURE_REASON]["Value"] == [OUT_OF_RESOURCES] and item[REFERENCED_SOP]["Value"] == [sop]
    archive.close()


# -- real exhaustion: a server on a small tmpfs of its own ------------------------------------------
def _tmpfs_available(tmp_path: Path) -> str | None:
    """None when this container lets a process mount a tmpfs in namespaces of its own, else why not."""
    if not shutil.which("unshare"):
        return "no unshare command"
    probe = tmp_path / "probe"
    probe.mkdir()
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                           'mount -t tmpfs -o size=1m tmpfs "$0"', str(probe)], capture_output=True, text=True, timeout=30)
    return None if proc.returncode == 0 else f"cannot mount a tmpfs in a namespace: {proc.stderr.strip()[:200]}"


def _tmpfs_prefix(mount: Path, size: str) -> list[str]:
    mount.mkdir(parents=True, exist_ok=True)
    return ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
            f'mount -t tmpfs -o size={size} tmpfs "$0" && exec "$@"', str(mount)]


def _fill(folder: Path) -> Path:
    """Write a file in ``folder`` until the file system is full (to the last block); returns it."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (1 << 20, 64 << 10, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def _disk_full_round(tmp_path: Path, config: Path, mount: Path, template: Path, where: str) -> None:
    log = tmp_path / "server.log"
    server = start_config_server(config, log=log, prefix=_tmpfs_prefix(mount, "6m"))
    try:
        inside = Path(f"/proc/{server.process.pid}/root{mount}")  # the server's tmpfs, seen from here
        assert inside.is_dir()
        batch = _instances(template, 5)
        study = pydicom.dcmread(template, stop_before_pixels=True).StudyInstanceUID
        with httpx.Client(timeout=60) as http:
            _assert_stored(_stow(http, server.url, batch[0][1]), [batch[0][0]])
            filler = _fill(inside)
            refused = [s for s, _ in batch[1:]]
            _assert_refused(_stow(http, server.url, *(d for _, d in batch[1:])), refused)
            _assert_retrievable(http, server.url, study, {batch[0][0]: batch[0][1]})  # acknowledged: intact
            filler.unlink()  # space is back: the same server stores them
            _assert_stored(_stow(http, server.url, *(d for _, d in batch[1:])), refused)
            _assert_retrievable(http, server.url, study, dict(batch))
            leftovers = [p for p in inside.rglob("*") if p.is_file() and p.parent.name == "tmp"]
            assert leftovers == []  # no staging file left
    finally:
        server.stop()
    text = log.read_text()
    assert text.count("STOW-RS: storage full") == 1, text[-3000:]
    assert where in text and "Traceback" not in text, text[-3000:]


def test_archive_on_a_full_tmpfs(tmp_path, testfile) -> None:
    """Blobs and staging on a small tmpfs (the catalog too): spooling the body runs out."""
    reason = _tmpfs_available(tmp_path)
    if reason:
        pytest.skip(reason)
    mount = tmp_path / "disk"
    config = tmp_path / "archive.toml"
    config.write_text(f'[archive]\nroot = "{mount}"\n[catalog]\nurl = "sqlite:///{mount}/catalog.sqlite"\n'
                      f'[storage.hot]\nurl = "file://{mount}"\n')
    template = write_multiframe(tmp_path / "mf.dcm", frames=4, syntax="explicit", kind="ct", rows=256, columns=256, seed=3)
    _disk_full_round(tmp_path, config, mount, template, "STOW-RS staging file")


def test_catalog_on_a_full_tmpfs(tmp_path, testfile) -> None:
    """Only the SQLite catalog on the small tmpfs: the blob is written, the catalog refuses
    ("database or disk is full"), the blob goes again; 507 all the same."""
    reason = _tmpfs_available(tmp_path)
    if reason:
        pytest.skip(reason)
    mount = tmp_path / "disk"
    config = tmp_path / "archive.toml"
    config.write_text(f'[archive]\nroot = "{tmp_path / "archive"}"\n[catalog]\nurl = "sqlite:///{mount}/catalog.sqlite"\n'
                      f'[storage.hot]\nurl = "file://{tmp_path / "archive"}"\n')
    _disk_full_round(tmp_path, config, mount, Path(testfile("CT_small.dcm")), "the catalog database is full")
    blobs = sorted(p.name for p in (tmp_path / "archive" / "objects").rglob("*.dcm"))
    assert len(blobs) == 5  # the refused instances' blobs were removed, then stored once


# -- real exhaustion without namespaces: a file size limit ------------------------------------------
def _limit_file_size(limit: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_file_size_limit_efbig(tmp_path, testfile) -> None:
    """The server under RLIMIT_FSIZE of 2 MB: an instance of 8 MB cannot be spooled (EFBIG):
    507; small instances sent next are stored by the same server."""
    config = tmp_path / "archive.toml"
    root = tmp_path / "archive"
    config.write_text(f'[archive]\nroot = "{root}"\n[catalog]\nurl = "sqlite:///{root}/catalog.sqlite"\n'
                      f'[storage.hot]\nurl = "file://{root}"\n')
    big = write_multiframe(tmp_path / "big.dcm", frames=64, syntax="explicit", kind="ct", rows=256, columns=256, seed=4)
    (big_sop, big_data), = _instances(big, 1)
    small = _instances(Path(testfile("CT_small.dcm")), 2)
    log = tmp_path / "server.log"
    server = start_config_server(config, log=log, preexec_fn=lambda: _limit_file_size(2 << 20))
    try:
        with httpx.Client(timeout=60) as http:
            _assert_stored(_stow(http, server.url, small[0][1]), [small[0][0]])
            _assert_refused(_stow(http, server.url, big_data), [big_sop])
            _assert_stored(_stow(http, server.url, small[1][1]), [small[1][0]])
            study = pydicom.dcmread(testfile("CT_small.dcm")).StudyInstanceUID
            _assert_retrievable(http, server.url, study, dict(small))
    finally:
        server.stop()
    assert list((tmp_path / "archive" / "tmp").iterdir()) == []
    text = log.read_text()
    assert text.count("STOW-RS: storage full") == 1 and "Traceback" not in text, text[-3000:]
