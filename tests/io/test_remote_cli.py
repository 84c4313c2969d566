"""URLs in the CLI (``dcmstream info URL``, ``dcmstream frame URL N``) and the pipeline
(``dcmstream process s3://bucket/prefix/``), over loopback HTTP and moto's S3 server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import dcmstream
from dcmstream import pipeline
from dcmstream.cli.main import app
from dcmstream.samples import write_multiframe, write_series

from ..range_server import range_server
from ..s3_util import moto_server

runner = CliRunner()


@pytest.fixture(autouse=True)
def _index_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DCMSTREAM_INDEX_CACHE", str(tmp_path / "index-cache"))


@pytest.fixture(scope="module")
def ct(tmp_path_factory) -> Path:
    return write_multiframe(tmp_path_factory.mktemp("ct") / "ct.dcm", frames=20, syntax="htj2k-lossless", kind="ct",
                            rows=64, columns=64, offset_table="bot")


def test_info_and_frame_of_a_url(ct, tmp_path) -> None:
    with range_server({"/data/ct.dcm": ct}) as server:
        url = server.url("/data/ct.dcm")
        result = runner.invoke(app, ["info", url, "--json"])
        assert result.exit_code == 0, result.output
        facts = json.loads(result.output)
        assert facts["path"] == url and facts["frames"] == 20 and facts["offset_table"] == "bot"
        assert facts["file_bytes"] == ct.stat().st_size
        assert 1 <= facts["open_requests"] <= 3 and facts["open_bytes_fetched"] <= 256 * 1024
        out = tmp_path / "f.npy"
        result = runner.invoke(app, ["frame", url, "17", "-o", str(out)])
        assert result.exit_code == 0, result.output
        with dcmstream.open(ct, cache=False) as local:
            np.testing.assert_array_equal(np.load(out), local.frame(16))
        # Errors keep the CLI's exit status 2 and a one-line message.
        result = runner.invoke(app, ["info", server.url("/data/missing.dcm")])
        assert result.exit_code == 2 and "no such object" in result.output
    # A local path that does not exist is still refused as before.
    assert runner.invoke(app, ["info", str(tmp_path / "nope.dcm")]).exit_code == 2


def _stats(item):  # module level: pickles for worker processes
    a = item.array
    return {"min": int(a.min()), "max": int(a.max()), "sum": int(a.sum(dtype=np.int64))}


def test_process_an_s3_prefix_equals_the_local_folder(tmp_path, monkeypatch) -> None:
    root = tmp_path / "cohort"
    root.mkdir()
    write_multiframe(root / "a-jls.dcm", frames=6, syntax="jpeg-ls", kind="ct", rows=48, columns=40, seed=1)
    write_multiframe(root / "b-htj2k.dcm", frames=4, syntax="htj2k-lossless", kind="mr", rows=40, columns=56, seed=2)
    write_series(root / "c-series", files=3, syntax="explicit", rows=32, columns=32)
    (root / "notes.txt").write_text("not DICOM")
    with moto_server() as s3:
        for key, value in s3.env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint_url)
        bucket = s3.make_bucket()
        client = s3.client()
        for f in sorted(root.rglob("*")):
            if f.is_file():
                client.upload_file(str(f), bucket, f"cohort/{f.relative_to(root).as_posix()}")
        prefix = f"s3://{bucket}/cohort/"

        local, remote = pipeline.ListSink(), pipeline.ListSink()
        pipeline.run(root, _stats, sink=local, memory_budget="64MB")
        report = pipeline.run(prefix, _stats, sink=remote, memory_budget="64MB")
        assert report.skipped == 1 and report.failed == 0  # notes.txt

        def by_name(sink, base: str) -> dict[tuple[str, int], dict]:
            return {(info.source.removeprefix(base), info.frame): value for info, value in sink.items}

        assert by_name(remote, prefix) == by_name(local, str(root) + "/")
        assert len(remote.items) == 6 + 4 + 3

        out = tmp_path / "stats.csv"
        result = runner.invoke(app, ["process", prefix, "--op", "stats", "--budget", "64MB", "-o", str(out), "-q"])
        assert result.exit_code == 0, result.output
        assert len(out.read_text().splitlines()) == 1 + 13
