"""Ingest: atomic, idempotent, keyed by validated UIDs; frames served from the stored index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

import dcmstream
from dcmstream.archive import Archive, CatalogConflictError
from dcmstream.archive.ingest import FAILURE_CANNOT_UNDERSTAND, FAILURE_DATASET_MISMATCH, FAILURE_DUPLICATE_SOP
from dcmstream.samples import write_multiframe


@pytest.fixture
def archive(tmp_path):
    with Archive(tmp_path / "archive", cache=False) as arc:
        yield arc


def test_ingest_is_idempotent(archive: Archive, testfile) -> None:
    path = testfile("CT_small.dcm")
    first = archive.ingest_file(path)
    assert first.status == "stored" and first.ok
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert (first.sop_uid, first.study_uid, first.series_uid) == (ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID)
    again = archive.ingest_file(path)
    assert again.status == "duplicate" and again.ok
    assert archive.catalog.counts() == {"studies": 1, "series": 1, "instances": 1}
    assert list(archive.blobs.keys()) == [f"{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"]
    # the stored blob is the file, byte for byte
    with open(path, "rb") as fh:
        assert archive.blobs.read_range(archive.record(first.sop_uid).blob_key) == fh.read()


@pytest.mark.parametrize("change", ["same-size", "other-size"])
def test_same_sop_with_other_bytes_is_a_duplicate_failure(archive: Archive, testfile, tmp_path, change: str) -> None:
    path = Path(testfile("CT_small.dcm"))
    assert archive.ingest_file(path).status == "stored"
    ds = pydicom.dcmread(path)
    if change == "same-size":
        ds.PatientID = ds.PatientID[::-1]  # same length: only the byte comparison tells
    else:
        ds.PatientID = ds.PatientID + "XY"
    other = tmp_path / "other.dcm"
    ds.save_as(other)
    assert (other.stat().st_size == path.stat().st_size) == (change == "same-size")
    result = archive.ingest_file(other)
    assert result.status == "failed" and result.failure_reason == FAILURE_DUPLICATE_SOP
    assert ds.SOPInstanceUID in result.message and "different content" in result.message
    # the archived copy stays, untouched
    with open(path, "rb") as fh:
        assert archive.blobs.read_range(archive.record(ds.SOPInstanceUID).blob_key) == fh.read()
    assert archive.ingest_file(path).status == "duplicate"


def test_move_consumes_the_staged_file(archive: Archive, testfile, tmp_path) -> None:
    with archive.create_staging() as held:
        staged = held.path
        staged.write_bytes(Path(testfile("MR_small.dcm")).read_bytes())
        assert archive.ingest_file(staged, move=True).status == "stored"
        assert not staged.exists()


def test_non_dicom_fails_cleanly(archive: Archive, tmp_path) -> None:
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"GIF89a not a DICOM file at all" * 50)
    result = archive.ingest_file(bad)
    assert result.status == "failed" and result.failure_reason == FAILURE_CANNOT_UNDERSTAND
    assert "DICOM" in result.message
    assert archive.catalog.counts()["instances"] == 0 and list(archive.blobs.keys()) == []


def test_truncated_file_fails(archive: Archive, testfile, tmp_path) -> None:
    data = Path(testfile("CT_small.dcm")).read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) // 2])
    result = archive.ingest_file(cut)
    assert result.status == "failed"
    assert list(archive.blobs.keys()) == []


@pytest.mark.parametrize("bad_uid", ["../../etc/passwd", "1.2.3/../4", "1.2.abc", "1." + "2" * 70, "1..2"])
def test_invalid_uids_never_reach_storage(archive: Archive, testfile, tmp_path, bad_uid: str) -> None:
    ds = pydicom.dcmread(testfile("CT_small.dcm"))
    with pytest.warns(UserWarning, match="VR UI"):  # pydicom says so too, and still writes it
        ds.SOPInstanceUID = bad_uid
    path = tmp_path / "bad_uid.dcm"
    ds.save_as(path)
    result = archive.ingest_file(path)
    assert result.status == "failed" and result.failure_reason == FAILURE_CANNOT_UNDERSTAND
    assert "not a valid UID" in result.message
    assert list(archive.blobs.keys()) == []
    assert not any(p.is_file() for p in archive.blobs.objects.rglob("*"))


def test_expected_study_mismatch(archive: Archive, testfile) -> None:
    result = archive.ingest_file(testfile("CT_small.dcm"), expected_study="1.2.3")
    assert result.status == "failed" and result.failure_reason == FAILURE_DATASET_MISMATCH


def test_catalog_failure_removes_the_new_blob(archive: Archive, testfile, monkeypatch) -> None:
    def boom(record):
        raise CatalogConflictError("simulated")

    monkeypatch.setattr(archive.catalog, "add", boom)
    result = archive.ingest_file(testfile("CT_small.dcm"))
    assert result.status == "failed"
    assert list(archive.blobs.keys()) == []


@pytest.mark.parametrize("syntax,offset_table", [("jpeg-ls", "bot"), ("explicit", "bot"), ("jpeg-baseline", "none"), ("rle", "eot")])
def test_frames_from_the_stored_index_equal_dcmstream_open(archive: Archive, tmp_path, syntax: str, offset_table: str) -> None:
    kind = "us" if syntax == "jpeg-baseline" else "ct"
    path = write_multiframe(tmp_path / f"{syntax}.dcm", frames=6, syntax=syntax, kind=kind, rows=64, columns=48, offset_table=offset_table)
    result = archive.ingest_file(path)
    assert result.status == "stored"
    record = archive.record(result.sop_uid)
    stored = archive.stored(record)
    assert stored is not None and len(stored) == 6
    with dcmstream.open(path, cache=False) as inst:
        assert record.frame_index == inst.frame_index.to_dict()
        for i in (0, 3, 5):
            assert stored.encoded_frame(i) == inst.encoded_frame(i)
            np.testing.assert_array_equal(stored.frame(i), inst.frame(i))


def test_frame_read_touches_only_that_frame(archive: Archive, tmp_path) -> None:
    path = write_multiframe(tmp_path / "ls.dcm", frames=20, syntax="jpeg-ls", rows=64, columns=64)
    record = archive.record(archive.ingest_file(path).sop_uid)
    stored = archive.stored(record)
    before = archive.blobs.bytes_read
    stored.encoded_frame(7)
    offset, length = stored.index.span(7)
    assert archive.blobs.bytes_read - before == length


def test_deflated_instances_are_served_through_the_full_reader(archive: Archive, tmp_path) -> None:
    path = write_multiframe(tmp_path / "defl.dcm", frames=3, syntax="deflated", rows=32, columns=32)
    record = archive.record(archive.ingest_file(path).sop_uid)
    assert record.frame_index is None and archive.stored(record) is None
    with archive.open_instance(record) as inst, dcmstream.open(path, cache=False) as ref:
        np.testing.assert_array_equal(inst.frame(2), ref.frame(2))


def test_metadata_json_has_pixel_bulk_uri(archive: Archive, testfile) -> None:
    import json

    result = archive.ingest_file(testfile("CT_small.dcm"))
    data = json.loads(archive.catalog.metadata(result.study_uid, result.series_uid)[0])
    assert data["7FE00010"]["BulkDataURI"].endswith(f"/instances/{result.sop_uid}/bulkdata/7FE00010")
    assert data["00083002"]["Value"] == ["1.2.840.10008.1.2.1"]
    assert data["00100010"]["Value"][0]["Alphabetic"] == "CompressedSamples^CT1"


def test_public_layout_api(archive: Archive, testfile, tmp_path) -> None:
    # What other packages use instead of the archive's internals.
    assert Archive.is_archive(archive.root) and not Archive.is_archive(tmp_path)
    seen = []
    archive.add_listener(seen.append)
    archive.add_listener(lambda result: 1 / 0)  # a failing listener does not stop the others
    ct = archive.ingest_file(testfile("CT_small.dcm"))
    mr = archive.ingest_file(testfile("MR_small.dcm"))
    assert [r.sop_uid for r in seen] == [ct.sop_uid, mr.sop_uid]
    records = list(archive.iter_records())
    assert sorted(r.sop_uid for r in records) == sorted([ct.sop_uid, mr.sop_uid])
    for record in records:
        path = archive.blobs.local_path(record.blob_key)
        assert path is not None and path.read_bytes() == archive.blobs.read_range(record.blob_key)
    record = archive.record(ct.sop_uid)
    new_key = archive.replacement_key(record)
    assert new_key != record.blob_key and new_key.endswith(f"/{ct.sop_uid}.dcm")
    assert archive.instance_lock(ct.sop_uid) is archive.instance_lock(ct.sop_uid)
