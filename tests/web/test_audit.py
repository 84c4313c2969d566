"""The audit trail (one JSON line per patient-data request) and what must never leak:
patient names and IDs in error bodies, /metrics or the trail, tokens anywhere."""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from dcmstream.archive import Archive
from dcmstream.config import AuditConfig, AuthConfig, ConfigError
from dcmstream.web import create_app
from dcmstream.web.audit import AuditLog, describe

from ..oidc_util import AUDIENCE, LocalIssuer
from ..server_util import running_server
from .test_auth import _stow

CT = get_testdata_file("CT_small.dcm")
MR = get_testdata_file("MR_small.dcm")


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Archive]:
    archive = Archive(tmp_path / "archive")
    assert archive.ingest_file(CT).ok
    yield archive
    archive.close()


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_patient_data_request_is_one_line(archive: Archive, tmp_path: Path) -> None:
    issuer = LocalIssuer(tmp_path)
    audit = tmp_path / "logs" / "audit.jsonl"
    auth = AuthConfig(mode="oidc", issuer=issuer.issuer, jwks_url=issuer.jwks_url, audience=AUDIENCE)
    ds = dcmread(CT, stop_before_pixels=True)
    name, pid = str(ds.PatientName), str(ds.PatientID)
    inst = f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    reader = issuer.token("rita", ["reader"])
    uploader = issuer.token("ulla", ["uploader"])
    admin = issuer.token("ada", ["admin"])
    with running_server(create_app(archive, auth=auth, audit=AuditConfig(audit))) as url:
        h = {"Authorization": f"Bearer {reader}"}
        get = lambda path, **kw: httpx.get(url + path, headers={**h, **kw}, timeout=30)  # noqa: E731
        assert get(f"/dicomweb/studies?PatientName={name}&PatientID={pid}&includefield=all").status_code == 200
        assert get(f"{inst}/metadata").status_code == 200
        assert get(f"{inst}/frames/1", Accept="multipart/related; type=application/octet-stream").status_code == 200
        assert get(f"{inst}/rendered?quality=80", Accept="image/jpeg").status_code == 200
        assert get(f"{inst}/thumbnail", Accept="image/jpeg").status_code == 200
        assert _stow(url, uploader, MR).status_code == 200
        assert _stow(url, reader, MR).status_code == 403
        assert httpx.get(f"{url}/dicomweb/studies", timeout=30).status_code == 401
        # Not patient data: not in the trail.
        assert httpx.get(f"{url}/healthz", timeout=30).status_code == 200
        assert httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {admin}"}, timeout=30).status_code == 200
        assert get("/dicomweb").status_code == 200
        # A client typing a name where a UID goes: masked in the trail's path.
        assert get(f"/dicomweb/studies/{name}/series").status_code == 400
        metrics = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {admin}"}, timeout=30).text
    text = audit.read_text()
    lines = _lines(audit)
    assert [(x["user"], x["role"], x["action"], x.get("resource"), x["status"], x["outcome"]) for x in lines] == [
        ("rita", "reader", "search", None, 200, "success"),
        ("rita", "reader", "retrieve", "metadata", 200, "success"),
        ("rita", "reader", "retrieve", "frames", 200, "success"),
        ("rita", "reader", "retrieve", "rendered", 200, "success"),
        ("rita", "reader", "retrieve", "thumbnail", 200, "success"),
        ("ulla", "uploader", "store", None, 200, "success"),
        ("rita", "reader", "store", None, 403, "denied"),
        ("unauthenticated", None, "search", None, 401, "denied"),
        ("rita", "reader", "search", None, 400, "failure"),
    ]
    first = lines[0]
    assert first["query"] == ["PatientName", "PatientID", "includefield"]
    assert first["client"] == "127.0.0.1" and first["auth"] == "oidc" and first["method"] == "GET"
    assert first["time"].endswith("Z") and first["time"][:2] == "20"
    frames = lines[2]
    assert (frames["study"], frames["series"], frames["instance"]) == (
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert frames["path"] == inst + "/frames/1"
    assert lines[3]["query"] == ["quality"]
    mr = dcmread(MR, stop_before_pixels=True)
    assert lines[5]["instances"] == [mr.SOPInstanceUID] and lines[5]["studies"] == [mr.StudyInstanceUID]
    assert "instances" not in lines[6]
    assert lines[8]["path"] == "/dicomweb/studies/-/series"
    for secret in (name, pid, name.split("^")[0], reader, uploader, admin, "Bearer"):
        assert secret not in text, secret
        assert secret not in metrics, secret


def test_mode_none_records_anonymous(archive: Archive, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    with running_server(create_app(archive, audit=AuditConfig(audit))) as url:
        httpx.get(f"{url}/dicomweb/studies", timeout=30)
        httpx.delete(f"{url}/dicomweb/studies/1.2.3", timeout=30)  # no such route (yet): still recorded
    lines = _lines(audit)
    assert [(x["user"], x["role"], x["auth"], x["action"]) for x in lines] == [
        ("anonymous", None, "none", "search"), ("anonymous", None, "none", "delete")]
    assert lines[1]["study"] == "1.2.3"


def test_an_unwritable_audit_path_stops_the_start(archive: Archive, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"\[audit\] path .*a-file/audit.jsonl"):
        create_app(archive, audit=AuditConfig(blocker / "audit.jsonl"))
    with pytest.raises(ConfigError, match=r"\[audit\] path"):
        create_app(archive, audit=AuditConfig(tmp_path))  # a folder


def test_serve_with_an_unwritable_audit_path_exits(tmp_path: Path) -> None:
    import subprocess
    import sys

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    config = tmp_path / "archive.toml"
    config.write_text(f'[catalog]\nurl = "sqlite:///{tmp_path}/c.sqlite"\n[storage.hot]\nurl = "file://{tmp_path}/blobs"\n'
                      f'[audit]\npath = "{blocker}/audit.jsonl"\n')
    src = str(Path(__file__).resolve().parents[2] / "src")
    result = subprocess.run([sys.executable, "-m", "dcmstream", "serve", "--config", str(config), "--port", "1"],
                            capture_output=True, text=True, timeout=120, env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"})
    assert result.returncode != 0 and "[audit] path" in result.stdout + result.stderr


def _append(path: str, worker: int, count: int) -> None:
    log = AuditLog(path)
    for i in range(count):
        log.write({"worker": worker, "i": i, "pad": "x" * (worker * 300)})
    log.close()


def test_several_processes_append_whole_lines(tmp_path: Path) -> None:
    """--workers N: each process has its own descriptor on one O_APPEND file."""
    path = tmp_path / "audit.jsonl"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append, args=(str(path), w, 400)) for w in range(1, 5)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = _lines(path)
    assert len(lines) == 1600
    for w in range(1, 5):
        assert [x["i"] for x in lines if x["worker"] == w] == list(range(400))


def test_describe_keeps_uids_and_masks_the_rest() -> None:
    assert describe("GET", "/dicomweb/studies", "/dicomweb") == {"action": "search", "path": "/dicomweb/studies"}
    d = describe("GET", "/dicomweb/studies/1.2/series/3.4/instances", "/dicomweb")
    assert d == {"action": "search", "path": "/dicomweb/studies/1.2/series/3.4/instances", "study": "1.2", "series": "3.4"}
    d = describe("GET", "/dicomweb/studies/1.2/series/3.4/instances/5.6/bulkdata/7FE00010", "/dicomweb")
    assert d is not None and d["action"] == "retrieve" and d["instance"] == "5.6" and d["resource"] == "bulkdata"
    assert describe("DELETE", "/dicomweb/studies/1.2", "/dicomweb") == {
        "action": "delete", "path": "/dicomweb/studies/1.2", "study": "1.2"}
    d = describe("GET", "/dicomweb/studies/DOE^JOHN/x y", "/dicomweb")
    assert d is not None and "DOE" not in json.dumps(d)
    assert describe("GET", "/metrics", "/dicomweb") is None
    assert describe("GET", "/dicomweb", "/dicomweb") is None


# -- patient data in error bodies -------------------------------------------------------------
@pytest.mark.parametrize("query", [
    "PatientBirthDate=19700101-DOE^JOHN",
    "StudyInstanceUID=DOE^JOHN",
    "NumberOfFrames=DOE^JOHN",
    "InstanceNumber=DOE^JOHN",
    "fuzzymatching=DOE^JOHN",
    "limit=DOE^JOHN",
])
def test_a_failing_query_does_not_echo_its_value(archive: Archive, query: str) -> None:
    with running_server(create_app(archive)) as url:
        level = "instances" if query.startswith(("NumberOf", "InstanceNumber")) else "studies"
        r = httpx.get(f"{url}/dicomweb/{level}?{query}", timeout=30)
    assert r.status_code == 400, r.text
    key = query.split("=")[0]
    assert key in r.json()["error"]  # names the parameter
    assert "DOE" not in r.text and "JOHN" not in r.text, r.text


def test_paths_and_unknown_parameters_do_not_echo_names(archive: Archive) -> None:
    with running_server(create_app(archive)) as url:
        r = httpx.get(f"{url}/dicomweb/studies/DOE^JOHN/series", timeout=30)
        assert r.status_code == 400 and "not a valid UID" in r.json()["error"] and "DOE" not in r.text
        r = httpx.get(f"{url}/dicomweb/studies/1.2.3x/series", timeout=30)
        assert r.status_code == 400 and "1.2.3x" not in r.text
        r = httpx.get(f"{url}/dicomweb/studies/1.2..3/series", timeout=30)
        assert r.status_code == 400 and "'1.2..3'" in r.text  # a UID typo is still shown
        r = httpx.get(f"{url}/dicomweb/studies?DOE^JOHN=1&includefield=SMITH^JANE", timeout=30)
        assert r.status_code == 200
        assert "DOE" not in r.headers.get("warning", "") and "SMITH" not in r.headers.get("warning", "")
        assert "not supported" in r.headers["warning"]
