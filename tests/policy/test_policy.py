"""Ingest compression policy: rule matching, and the background verify-then-swap worker."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest

import dcmstream
from dcmstream.archive import Archive
from dcmstream.compress.encoders import UnsupportedTarget
from dcmstream.policy import (
    CompressionPolicy,
    CompressionRule,
    PolicyWorker,
    load_policy,
)
from dcmstream.samples import write_multiframe

JPEG_LS = "1.2.840.10008.1.2.4.80"
EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"


@pytest.fixture
def archive(tmp_path):
    with Archive(tmp_path / "archive", cache=False) as arc:
        yield arc


@pytest.fixture
def ct_policy() -> CompressionPolicy:
    return CompressionPolicy([CompressionRule("jpeg-ls", modalities={"CT"})])


def _worker(archive: Archive, policy: CompressionPolicy, **kwargs) -> PolicyWorker:
    worker = PolicyWorker(archive, policy, **kwargs).start()
    return worker


# -- rules ---------------------------------------------------------------------------------------


def test_first_matching_rule_wins() -> None:
    policy = CompressionPolicy(
        [
            CompressionRule("htj2k", modalities={"dx", "CR"}),
            CompressionRule("jpeg-ls", modalities={"CT"}, transfer_syntaxes={EXPLICIT, IMPLICIT}, min_bytes=1000),
            CompressionRule("rle", modalities={"CT"}),
            CompressionRule("deflate"),
        ]
    )
    assert policy.match({"modality": "DX", "transfer_syntax": EXPLICIT, "size": 10}) == "htj2k"
    assert policy.match({"modality": "CT", "transfer_syntax": IMPLICIT, "size": 5000}) == "jpeg-ls"
    assert policy.match({"modality": "CT", "transfer_syntax": IMPLICIT, "size": 10}) == "rle"  # too small for rule 2
    assert policy.match({"modality": "CT", "transfer_syntax": JPEG_LS, "size": 5000}) == "rle"  # syntax not listed
    assert policy.match({"modality": "MR", "transfer_syntax": EXPLICIT, "size": 5000}) == "deflate"
    only_ls = CompressionPolicy([CompressionRule("jpeg-ls")])
    # already in the target syntax: nothing to do
    assert only_ls.match({"modality": "CT", "transfer_syntax": JPEG_LS, "size": 5000}) is None
    assert CompressionPolicy([]).match({"modality": "CT", "transfer_syntax": EXPLICIT, "size": 1}) is None


def test_lossy_targets_are_refused_unless_allowed() -> None:
    with pytest.raises(ValueError, match="lossy"):
        CompressionPolicy([CompressionRule("jpeg-ls-near")])
    assert CompressionPolicy([CompressionRule("jpeg-ls-near")], allow_lossy=True).rules
    with pytest.raises(UnsupportedTarget):
        CompressionRule("zip")


def test_load_policy_json_and_toml(tmp_path) -> None:
    j = tmp_path / "policy.json"
    j.write_text(json.dumps({"rules": [{"target": "jpeg-ls", "modalities": ["CT"], "min_bytes": 10}]}))
    policy = load_policy(j)
    assert policy.rules == [CompressionRule("jpeg-ls", frozenset({"CT"}), None, 10)]
    t = tmp_path / "policy.toml"
    t.write_text('[[rules]]\ntarget = "htj2k"\ntransfer_syntaxes = ["1.2.840.10008.1.2.1"]\n')
    assert load_policy(t).match({"modality": "MR", "transfer_syntax": EXPLICIT, "size": 1}) == "htj2k"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rules": [{"target": "jpeg", "modalities": ["CT"]}]}))
    with pytest.raises(ValueError, match="lossy"):
        load_policy(bad)
    bad.write_text(json.dumps({"rules": [{"target": "jpeg-ls", "modality": ["CT"]}]}))
    with pytest.raises(ValueError, match="unknown keys"):
        load_policy(bad)


def test_no_worker_without_rules(archive: Archive) -> None:
    with pytest.raises(ValueError):
        PolicyWorker(archive, CompressionPolicy([]))
    assert archive.policy_worker is None


# -- the worker ----------------------------------------------------------------------------------


def _check_swapped(archive: Archive, path, sop: str, old_key: str, old_size: int) -> None:
    record = archive.record(sop)
    assert record.transfer_syntax == JPEG_LS
    assert record.size < old_size and record.size == archive.blobs.size(record.blob_key)
    assert record.blob_key != old_key and not archive.blobs.exists(old_key)
    assert list(archive.blobs.keys()) == [record.blob_key]
    meta = json.loads(archive.catalog.metadata(record.study_uid, record.series_uid, sop)[0])
    assert meta["00083002"]["Value"] == [JPEG_LS]
    stored = archive.stored(record)
    assert stored is not None and stored.transfer_syntax == JPEG_LS
    with dcmstream.open(path) as original:
        assert len(stored) == len(original)
        for i in range(len(original)):
            assert np.array_equal(stored.frame(i), original.frame(i))
            expected = original.frame(i)
            assert stored.uncompressed_frame(i) == expected.astype(expected.dtype.newbyteorder("<")).tobytes()
    ds = pydicom.dcmread(archive.blobs.objects / record.blob_key, stop_before_pixels=True)
    assert ds.file_meta.TransferSyntaxUID == JPEG_LS and ds.SOPInstanceUID == sop


def test_native_ct_is_swapped_for_verified_jpeg_ls(archive: Archive, ct_policy, testfile) -> None:
    path = testfile("CT_small.dcm")
    worker = _worker(archive, ct_policy)
    try:
        result = archive.ingest_file(path)
        assert result.status == "stored"
        assert worker.join(timeout=60)
    finally:
        worker.stop()
    assert worker.counts["compressed"] == 1 and worker.counts["failed"] == 0
    old_key = Archive.blob_key(result.study_uid, result.series_uid, result.sop_uid)
    with open(path, "rb") as fh:
        old_size = len(fh.read())
    _check_swapped(archive, path, result.sop_uid, old_key, old_size)
    assert worker.metrics()["dcmstream_policy_bytes_saved_total"] == old_size - archive.record(result.sop_uid).size
    assert not worker.running


def test_multiframe_frames_stay_bit_exact_and_open_readers_keep_working(archive: Archive, ct_policy, tmp_path) -> None:
    path = write_multiframe(tmp_path / "mf.dcm", frames=6, syntax="explicit", kind="ct", rows=64, columns=64, seed=3)
    assert archive.ingest_file(path).status == "stored"  # no worker attached: stored as is
    sop = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
    before = archive.record(sop)
    assert before.transfer_syntax == EXPLICIT
    old_stored = archive.stored(before)
    reader = archive.blobs.open(before.blob_key)  # a request in flight on the old blob
    try:
        worker = PolicyWorker(archive, ct_policy)
        assert worker.process(sop) == "compressed"
        offset, length = old_stored.index.span(5)
        with dcmstream.open(path) as original:
            expected = original.frame(5)
            assert reader.read_at(offset, length) == expected.astype(expected.dtype.newbyteorder("<")).tobytes()
    finally:
        reader.close()
    _check_swapped(archive, path, sop, before.blob_key, before.size)
    # already JPEG-LS: a second pass has nothing to do
    assert worker.process(sop) == "skipped"


def test_instances_in_a_cold_tier_are_compressed_in_that_tier(tmp_path, ct_policy) -> None:
    from dcmstream.archive import FilesystemBlobStore
    from dcmstream.archive.lifecycle import LifecycleRule, run_lifecycle

    hot, cold = FilesystemBlobStore(tmp_path / "hot"), FilesystemBlobStore(tmp_path / "cold")
    paths = [write_multiframe(tmp_path / f"mf{i}.dcm", frames=3, syntax="explicit", kind="ct", rows=48, columns=48, seed=i)
             for i in (5, 6)]
    with Archive(tmp_path / "archive", tiers={"hot": hot, "cold": cold}, cache=False) as archive:
        sops = [archive.ingest_file(path).sop_uid for path in paths]
        moved = run_lifecycle(archive, [LifecycleRule("hot", "cold", after_days_since_ingest=0)], now=2e9, limit=1)
        assert moved.moved == 1
        before = {sop: archive.catalog.get(sop) for sop in sops}
        in_cold = next(sop for sop, r in before.items() if r.tier == "cold")
        worker = PolicyWorker(archive, ct_policy)
        assert [worker.process(sop) for sop in sops] == ["compressed", "compressed"]
        for sop, path in zip(sops, paths, strict=True):
            record = archive.record(sop)
            assert record.transfer_syntax == JPEG_LS and record.tier == before[sop].tier  # swapped in its own tier
            store = archive.store_of(record)
            assert store is (cold if sop == in_cold else hot)
            assert list(store.keys()) == [record.blob_key] and record.size == store.size(record.blob_key)
            assert record.last_access == before[sop].last_access and record.ingested_at == before[sop].ingested_at
            stored = archive.stored(record)
            with dcmstream.open(path) as original:
                for i in range(len(original)):
                    assert np.array_equal(stored.frame(i), original.frame(i))
        assert archive.tier_totals()["cold"][0] == 1 and list(hot.tmp.iterdir()) == list(cold.tmp.iterdir()) == []


def test_instance_not_matching_is_untouched(archive: Archive, ct_policy, testfile) -> None:
    path = testfile("MR_small.dcm")
    worker = _worker(archive, ct_policy)
    try:
        result = archive.ingest_file(path)
        assert worker.join(timeout=60)
    finally:
        worker.stop()
    record = archive.record(result.sop_uid)
    assert worker.counts["skipped"] == 1 and worker.counts["compressed"] == 0
    assert record.blob_key == Archive.blob_key(result.study_uid, result.series_uid, result.sop_uid)
    with open(path, "rb") as fh:
        assert archive.blobs.read_range(record.blob_key) == fh.read()


def _assert_original_intact(archive: Archive, path, sop: str) -> None:
    record = archive.catalog.get(sop)
    assert record.transfer_syntax != JPEG_LS
    assert list(archive.blobs.keys()) == [record.blob_key]
    with open(path, "rb") as fh:
        assert archive.blobs.read_range(record.blob_key) == fh.read()
    assert list(archive.blobs.tmp.iterdir()) == []  # no staging leftovers


def test_transcode_failure_leaves_the_original(archive: Archive, ct_policy, testfile) -> None:
    path = testfile("CT_small.dcm")

    def broken(src, dst, target, **kwargs):
        with open(dst, "wb") as fh:
            fh.write(b"half a file")
        raise RuntimeError("encoder crashed")

    worker = _worker(archive, ct_policy, transcode=broken)
    try:
        result = archive.ingest_file(path)
        assert worker.join(timeout=60)
        assert worker.running  # the thread survives
    finally:
        worker.stop()
    assert worker.counts["failed"] == 1 and worker.counts["compressed"] == 0
    _assert_original_intact(archive, path, result.sop_uid)


def test_catalog_failure_after_the_new_blob_leaves_the_original(archive: Archive, ct_policy, testfile, monkeypatch) -> None:
    path = testfile("CT_small.dcm")
    result = archive.ingest_file(path)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(archive.catalog, "replace_blob", crash)
    assert PolicyWorker(archive, ct_policy).process(result.sop_uid) == "failed"
    _assert_original_intact(archive, path, result.sop_uid)


def test_stop_without_drain_and_full_queue(archive: Archive, ct_policy) -> None:
    worker = PolicyWorker(archive, ct_policy, queue_size=1)
    # not started: the queue fills, the next one is dropped
    assert worker.submit("1.2.3")
    assert not worker.submit("1.2.4")
    assert worker.counts["dropped"] == 1
    worker.start()
    assert worker.join(timeout=60)
    assert worker.counts["skipped"] == 1  # unknown instance
    worker.stop(drain=False)
    assert not worker.running and not worker.submit("1.2.5")


def test_import_cli_applies_the_policy(tmp_path, testfile) -> None:
    from typer.testing import CliRunner

    from dcmstream.cli.main import app

    policy = tmp_path / "policy.toml"
    policy.write_text('[[rules]]\ntarget = "jpeg-ls"\nmodalities = ["CT"]\n')
    archive_dir = tmp_path / "archive"
    args = ["import", testfile("CT_small.dcm"), testfile("MR_small.dcm"), "--archive", str(archive_dir), "--quiet"]
    result = CliRunner().invoke(app, args + ["--compress-policy", str(policy)])
    assert result.exit_code == 0, result.output
    assert "1 compressed" in result.output
    with Archive(archive_dir, cache=False) as arc:
        syntaxes = sorted(r.transfer_syntax for r in (arc.catalog.get(s) for s in _sops(arc)))
    assert JPEG_LS in syntaxes and len(syntaxes) == 2


def _sops(arc: Archive) -> list[str]:
    return [key.rsplit("/", 1)[1][: -len(".dcm")] for key in arc.blobs.keys()]  # noqa: SIM118 - a BlobStore, not a dict


def test_metrics_expose_policy_counters(archive: Archive, ct_policy, testfile) -> None:
    from starlette.testclient import TestClient

    from dcmstream.web import create_app

    worker = _worker(archive, ct_policy)
    try:
        archive.ingest_file(testfile("CT_small.dcm"))
        assert worker.join(timeout=60)
        text = TestClient(create_app(archive)).get("/metrics").text
    finally:
        worker.stop()
    assert "dcmstream_policy_compressed_total 1" in text
    assert "dcmstream_policy_bytes_saved_total" in text
