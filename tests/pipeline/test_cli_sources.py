"""``dcmstream process``, DICOMweb inputs, and dtype handling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import dcmstream
from dcmstream import pipeline
from dcmstream.cli.main import app
from dcmstream.pipeline.dtypes import (
    modality_dtype,
    narrowest_int,
    storage_dtype,
    to_modality,
)

from ..server_util import running_server
from .test_run import expected_stats, files, stats

runner = CliRunner()


# -- dtypes -------------------------------------------------------------------------------------
def test_narrowest_types() -> None:
    assert narrowest_int(0, 255) == np.uint8 and narrowest_int(-1, 255) == np.int16
    assert storage_dtype("uint16", 8, False) == np.uint8 and storage_dtype("uint16", 12, False) == np.uint16
    assert storage_dtype("int16", 8, True) == np.int8 and storage_dtype("float32", 32, True) == np.float32
    assert modality_dtype(12, False, 1, -1024) == np.int16  # CT
    assert modality_dtype(16, False, 1, -1024) == np.int32  # 0..65535 - 1024 does not fit int16
    assert modality_dtype(12, False, 0.5, 0) == np.float32  # exact in float32
    assert modality_dtype(12, False, 0.1, 0) == np.float64  # 0.1 is not
    assert modality_dtype(12, False, 10, -30000) == np.int32  # 4095 * 10 overflows int16 on the way
    stored = np.array([0, 4095], np.uint16)
    np.testing.assert_array_equal(to_modality(stored, 10, -30000, np.dtype(np.int32)), [-30000, 10950])


# -- CLI ----------------------------------------------------------------------------------------
def test_process_stats_csv_and_report(cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "stats.csv"
    result = runner.invoke(app, ["process", str(cohort), "--op", "stats", "--budget", "64MB", "-w", "2", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "items" in result.output and "peak memory" in result.output and "throughput" in result.output
    rows = out.read_text().splitlines()
    assert len(rows) == 27
    header = rows[0].split(",")
    got = {}
    for row in rows[1:]:
        rec = dict(zip(header, row.split(","), strict=True))
        got[f"{rec['source']}#{rec['frame']}"] = {"min": int(rec["min"]), "max": int(rec["max"]), "sum": int(rec["sum"])}
    assert got == expected_stats(cohort)


def test_process_histogram_mip_thumbnails_to_zarr(cohort: Path, tmp_path: Path) -> None:
    jls = cohort / "ct-jls.dcm"
    r = runner.invoke(app, ["process", str(jls), "--op", "histogram", "-o", str(tmp_path / "h.csv"), "-q"])
    assert r.exit_code == 0, r.output
    with dcmstream.open(jls, cache=False) as inst:
        frames = np.stack(list(inst.frames()))
    values, counts = np.unique(frames, return_counts=True)
    table = np.loadtxt(tmp_path / "h.csv", delimiter=",", skiprows=1, dtype=np.int64)
    np.testing.assert_array_equal(table[:, 0], values)
    np.testing.assert_array_equal(table[:, 1], counts)

    r = runner.invoke(app, ["process", str(jls), "--op", "mip", "-o", str(tmp_path / "mip"), "-q"])
    assert r.exit_code == 0, r.output
    (npy,) = (tmp_path / "mip").glob("*.mip.npy")
    np.testing.assert_array_equal(np.load(npy), frames.max(axis=0))
    assert list((tmp_path / "mip").glob("*.mip.png"))

    r = runner.invoke(app, ["process", str(cohort), "--op", "thumbnails", "-o", str(tmp_path / "th"), "-q"])
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "th").glob("*.png"))) == 8

    zarr = pytest.importorskip("zarr")
    r = runner.invoke(app, ["process", str(jls), "--op", "to-zarr", "-o", str(tmp_path / "o.zarr"), "-q"])
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(zarr.open_group(str(tmp_path / "o.zarr"), mode="r")["ct-jls"][:], frames)


def test_process_exit_codes(cohort: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["process", str(cohort), "--op", "nope"])
    assert r.exit_code == 2
    r = runner.invoke(app, ["process", str(cohort), "--op", "stats", "--budget", "lots"])
    assert r.exit_code == 2
    bad = tmp_path / "bad.dcm"
    data = (cohort / "ct-jls.dcm").read_bytes()
    bad.write_bytes(data[: len(data) // 2])  # truncated: frames past the cut are missing
    r = runner.invoke(app, ["process", str(bad), str(cohort / "mr-htj2k.dcm"), "--op", "stats", "-q"])
    assert r.exit_code == 1 and "failed" in r.output


# -- DICOMweb -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dicomweb(cohort: Path, tmp_path_factory):
    pytest.importorskip("dicomweb_client")
    from dcmstream.archive import Archive
    from dcmstream.web import create_app

    archive = Archive(tmp_path_factory.mktemp("pipeline-web"), cache=False)
    for path in files(cohort):
        assert archive.ingest_file(path).ok
    with running_server(create_app(archive)) as url:
        yield f"{url}/dicomweb", archive
    archive.close()


def test_dicomweb_url_is_an_input(cohort: Path, dicomweb) -> None:
    url, archive = dicomweb
    sink = pipeline.ListSink()
    report = pipeline.run(url, stats, sink=sink, workers=2, memory_budget="64MB")
    assert report.items == 26 and report.failed == 0
    expected = sorted(expected_stats(cohort).values(), key=json.dumps)
    assert sorted(sink.results, key=json.dumps) == expected
    # a study URL narrows the inputs
    study = archive.ingest_file(cohort / "ct-jls.dcm").study_uid
    n = pipeline.run(f"{url}/studies/{study}", stats, memory_budget="64MB").items
    assert 12 <= n < 26
    # uint8 views of DICOMweb frames go through the instance's own renderer, as local files do
    from dcmstream.pipeline.sources import DicomWebInstance, iter_inputs
    from dcmstream.pipeline.work import ReadOptions, values_of

    sop = archive.ingest_file(cohort / "ct-jls.dcm").sop_uid
    (ref,) = [r for r in iter_inputs(f"{url}/studies/{study}") if r.sop == sop]
    remote = DicomWebInstance(ref)
    view = values_of(remote, remote.frame(1), 1, ReadOptions(values="uint8", window=(40, 400)))
    with dcmstream.open(cohort / "ct-jls.dcm") as local:
        np.testing.assert_array_equal(view, local.render(1, window=(40, 400)))
        # the thumbnails op works on DICOMweb instances too, with the same pixels
        np.testing.assert_array_equal(remote.thumbnail(1, 32), local.thumbnail(1, 32))
