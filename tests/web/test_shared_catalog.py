"""A server whose archive another process changes: two Archive objects on one catalog and
the same tiers (each with its own memoised records and caches, as two processes have).
A blob swap or tier move made through the other one is seen by the server's next answer:
series metadata (its cache is keyed by the catalog's version), frames, bulk data and whole
instances, all 200 with the right bytes; bytes lost for good are a 410 naming the instance."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient

import dcmstream
from dcmstream.archive import Archive, FilesystemBlobStore
from dcmstream.archive.lifecycle import LifecycleRule, run_lifecycle
from dcmstream.policy import CompressionPolicy, CompressionRule, PolicyWorker
from dcmstream.samples import write_multiframe
from dcmstream.web import create_app

from .conftest import multipart_parts

JPEG_LS = "1.2.840.10008.1.2.4.80"
EXPLICIT = "1.2.840.10008.1.2.1"
AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'
ALL_TO_COLD = [LifecycleRule("hot", "cold", after_days_since_ingest=0)]


def _archive(root: Path) -> Archive:
    tiers = {"hot": FilesystemBlobStore(root / "hot"), "cold": FilesystemBlobStore(root / "cold")}
    return Archive(root, tiers=tiers, cache=False, track_access=False)


@pytest.fixture
def two(tmp_path):
    """(server archive, its test client, the other process's archive, SOP UIDs by name)."""
    files = {
        "jls": write_multiframe(tmp_path / "jls.dcm", frames=6, syntax="jpeg-ls", kind="ct", rows=40, columns=40, seed=81),
        "native": write_multiframe(tmp_path / "native.dcm", frames=5, syntax="explicit", kind="ct", rows=40, columns=40, seed=82),
        # deflated: no stored frame index, frames go through the full parser
        "deflated": write_multiframe(tmp_path / "defl.dcm", frames=3, syntax="deflated", kind="ct", rows=40, columns=40, seed=83),
    }
    root = tmp_path / "archive"
    server, other = _archive(root), _archive(root)
    sops = {name: server.ingest_file(path).sop_uid for name, path in files.items()}
    with TestClient(create_app(server)) as client:
        yield server, client, other, sops, files
    other.close()
    server.close()


def _url(server: Archive, sop: str) -> str:
    r = server.record(sop)
    return f"/dicomweb/studies/{r.study_uid}/series/{r.series_uid}/instances/{sop}"


def _series_metadata_ts(client: TestClient, server: Archive, sop: str) -> str:
    r = server.catalog.get(sop)
    resp = client.get(f"/dicomweb/studies/{r.study_uid}/series/{r.series_uid}/metadata", headers={"Accept": "application/dicom+json"})
    assert resp.status_code == 200, resp.text
    (item,) = [i for i in resp.json() if i["00080018"]["Value"] == [sop]]
    return item["00083002"]["Value"][0]


KINDS = {
    "frame": ("/frames/2", "application/octet-stream"),
    "frames": ("/frames/1,3", 'multipart/related; type="application/octet-stream"'),
    "bulk": ("/bulkdata/7FE00010", 'multipart/related; type="application/octet-stream"'),
    "stored": ("", AS_STORED),
    "explicit": ("", 'multipart/related; type="application/dicom"'),
    "rendered": ("/rendered", "image/png"),
}


def _answer(client: TestClient, server: Archive, sop: str, kind: str) -> bytes:
    """One kind of answer (frames, pixel bulk data, whole instance as stored or as Explicit
    VR Little Endian, a rendered frame), which must be 200; its body (parts joined)."""
    path, accept = KINDS[kind]
    resp = client.get(_url(server, sop) + path, headers={"Accept": accept})
    assert resp.status_code == 200, (kind, resp.status_code, resp.text)
    if resp.headers["content-type"].startswith("multipart/"):
        return b"".join(body for _, body in multipart_parts(resp))
    return resp.content


def _answers(client: TestClient, server: Archive, sop: str) -> dict[str, bytes]:
    return {kind: _answer(client, server, sop, kind) for kind in KINDS}


def test_series_metadata_follows_a_swap_made_by_another_process(two) -> None:
    server, client, other, sops, files = two
    sop = sops["native"]
    assert _series_metadata_ts(client, server, sop) == EXPLICIT
    assert _series_metadata_ts(client, server, sop) == EXPLICIT  # now cached under the series' version
    frame_before = client.get(_url(server, sop) + "/frames/2", headers={"Accept": "application/octet-stream"}).content
    # the other process compresses it: new blob, new transfer syntax, same count of rows
    worker = PolicyWorker(other, CompressionPolicy([CompressionRule("jpeg-ls", modalities=frozenset({"CT"}))]))
    assert worker.process(sop) == "compressed"
    assert _series_metadata_ts(client, server, sop) == JPEG_LS
    # the server's memoised record (and frame reader) pointed at the deleted blob: the
    # next frame request finds the new one, and decodes the same pixels
    resp = client.get(_url(server, sop) + "/frames/2", headers={"Accept": "application/octet-stream"})
    assert resp.status_code == 200 and resp.content == frame_before
    # a tier move by the other process: a new version too (the row changed)
    version = server.catalog.version(server.record(sop).study_uid)
    assert run_lifecycle(other, ALL_TO_COLD).moved == len(sops)
    assert server.catalog.version(server.record(sop).study_uid) != version
    assert _series_metadata_ts(client, server, sop) == JPEG_LS


def test_blobs_moved_by_another_process_are_served_from_their_new_tier(two) -> None:
    server, client, other, sops, files = two
    before = {name: _answers(client, server, sop) for name, sop in sops.items()}  # records and readers memoised
    for name, path in files.items():
        assert before[name]["stored"] == path.read_bytes()
        with dcmstream.open(path) as inst:
            frame = inst.frame(1)
            assert before[name]["frame"] == np.ascontiguousarray(frame, frame.dtype.newbyteorder("<")).tobytes()
    rules = {"cold": ALL_TO_COLD, "hot": [LifecycleRule("cold", "hot", after_days_since_ingest=0)]}
    tier = "hot"
    for kind in KINDS:  # each kind of request is the first one after a move
        tier = "cold" if tier == "hot" else "hot"
        report = run_lifecycle(other, rules[tier], now=time.time() + 60)
        assert report.moved == len(sops) and not report.failures
        assert list(other.tiers["cold" if tier == "hot" else "hot"].keys()) == []
        for name, sop in sops.items():
            assert server.peek(sop)[0].tier != other.tier_value(tier)  # memoised here: where it was
            assert _answer(client, server, sop, kind) == before[name][kind], (name, kind)
    for name, sop in sops.items():
        assert _answers(client, server, sop) == before[name], name
        assert server.tier_of(server.record(sop)) == tier


def test_lost_bytes_are_a_410_naming_the_instance(two) -> None:
    server, client, other, sops, files = two
    sop = sops["jls"]
    _answers(client, server, sop)  # memoised
    record = other.catalog.get(sop)
    other.store_of(record).delete(record.blob_key)
    url = _url(server, sop)
    for path, accept in (
        ("/frames/1", "application/octet-stream"),
        ("/frames/1,2", 'multipart/related; type="application/octet-stream"'),
        ("/bulkdata/7FE00010", 'multipart/related; type="application/octet-stream"'),
        ("", AS_STORED),
        ("/rendered", "image/png"),
    ):
        resp = client.get(url + path, headers={"Accept": accept})
        assert resp.status_code == 410, (path, resp.status_code, resp.text)
        assert sop in json.loads(resp.text)["error"]
    # the metadata is still the catalog's: 200
    assert client.get(url + "/metadata", headers={"Accept": "application/dicom+json"}).status_code == 200
