"""``dcmstream compress`` as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from dcmstream.cli.main import app

from .conftest import frames_of

runner = CliRunner()


def test_compress_folder_recursive_with_report(synthetic, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    (inputs / "sub" / "ct.dcm").write_bytes(synthetic["ct"].read_bytes())
    (inputs / "us.dcm").write_bytes(synthetic["us"].read_bytes())
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "dcmstream", "compress", str(inputs), "-o",
                           str(out), "--to", "jpeg-ls", "--report", str(tmp_path / "r.html"),
                           "--jobs", "2"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "saved" in proc.stderr
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.dcm")) == [
        "sub/ct.dcm", "us.dcm"]
    np.testing.assert_array_equal(frames_of(out / "sub" / "ct.dcm"), frames_of(synthetic["ct"]))
    assert pydicom.dcmread(out / "us.dcm").file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.80"
    assert (tmp_path / "r.html").exists()


def test_compress_refusal_exit_code(synthetic, tmp_path: Path) -> None:
    result = runner.invoke(app, ["compress", str(synthetic["ct"]), "-o", str(tmp_path / "o"),
                                 "--to", "htj2k-lossy:ratio=50", "--min-psnr", "70", "-q"])
    assert result.exit_code == 1
    assert "refused" in result.output
    assert not list((tmp_path / "o").glob("*")) if (tmp_path / "o").exists() else True


def test_compress_bad_arguments(synthetic, tmp_path: Path) -> None:
    bad = runner.invoke(app, ["compress", str(synthetic["ct"]), "-o", str(tmp_path), "--to", "nope"])
    assert bad.exit_code == 2 and "unknown target" in bad.output
    lossy_in_place = runner.invoke(app, ["compress", str(synthetic["ct"]), "--in-place",
                                         "--to", "jpeg-ls-near:2"])
    assert lossy_in_place.exit_code == 2
    no_out = runner.invoke(app, ["compress", str(synthetic["ct"]), "--to", "jpeg-ls"])
    assert no_out.exit_code == 2


def test_compress_in_place_and_hybrid(synthetic, tmp_path: Path) -> None:
    work = tmp_path / "ct.dcm"
    work.write_bytes(synthetic["ct"].read_bytes())
    result = runner.invoke(app, ["compress", str(work), "--in-place", "--to", "htj2k", "-q"])
    assert result.exit_code == 0, result.output
    assert pydicom.dcmread(work).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.201"
    np.testing.assert_array_equal(frames_of(work), frames_of(synthetic["ct"]))
    out = tmp_path / "hy"
    result = runner.invoke(app, ["compress", str(synthetic["mr"]), "-o", str(out), "--to",
                                 "htj2k-rpcl", "--hybrid", "--preview-size", "32", "-q"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["mr.dcm", "mr.preview.dcm"]


def test_many_small_files_run_in_worker_processes(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # A series of slices with 2 jobs: whole files in worker processes; results in input
    # order, progress and on_result for each, outputs bit-exact; a bad file among them
    # fails alone.
    from dcmstream.compress import batch, compress
    from dcmstream.samples import write_series

    folder = write_series(tmp_path / "series", files=17, syntax="explicit", rows=64, columns=48)
    (folder / "slice-0005.dcm").write_bytes(b"DICM? no")
    calls = []
    real = batch._in_processes
    monkeypatch.setattr(batch, "_in_processes",
                        lambda indexes, *a: calls.append(len(indexes)) or real(indexes, *a))
    seen, ticks = [], []
    run = compress([folder], tmp_path / "out", "htj2k", jobs=2, on_result=seen.append,
                   progress=lambda frames, nbytes: ticks.append((frames, nbytes)))
    assert calls == [17]  # unreadable files count as small: they fail fast anywhere
    names = [Path(r.source).name for r in run.results]
    assert names == sorted(p.name for p in folder.iterdir())
    assert sorted(Path(r.source).name for r in seen) == names
    bad = run.results[5]
    assert bad.status == "failed" and bad.output is None
    good = [r for i, r in enumerate(run.results) if i != 5]
    assert all(r.status == "written" and r.verified for r in good)
    assert sum(f for f, _ in ticks) == 16 and sum(b for _, b in ticks) == 16 * 64 * 48 * 2
    for r in good:
        np.testing.assert_array_equal(frames_of(r.output), frames_of(r.source))
    assert not (tmp_path / "out" / "slice-0005.dcm").exists()


def test_planning_without_a_progress_bar_reads_no_header(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # Frame counts only feed a progress bar: without one, planning takes file sizes alone
    # (the parent would otherwise parse every slice's header, one by one).
    from dcmstream.compress import batch
    from dcmstream.samples import write_series

    folder = write_series(tmp_path / "series", files=3, syntax="explicit", rows=64, columns=48)
    items = batch.plan_work([folder], tmp_path / "out", count_frames=False)
    assert [(i.frames, i.raw_bytes) for i in items] == [(0, 0)] * 3
    assert [i.file_bytes for i in items] == [p.stat().st_size for p in sorted(folder.iterdir())]
    counted = batch.plan_work([folder], tmp_path / "out")
    assert [(i.frames, i.raw_bytes) for i in counted] == [(1, 64 * 48 * 2)] * 3

    opened = []
    monkeypatch.setattr(batch, "open_instance", lambda *a, **k: opened.append(a))
    run = batch.compress([folder], tmp_path / "out", "jpeg-ls")
    assert opened == [] and [r.status for r in run.results] == ["written"] * 3


def test_quiet_prints_nothing_and_a_growing_target_says_it_grew(synthetic, tmp_path: Path) -> None:
    source = tmp_path / "in.dcm"
    write = runner.invoke(app, ["compress", str(synthetic["ct"]), "-o", str(tmp_path / "jls"),
                                "--to", "jpeg-ls", "-q"])
    assert write.exit_code == 0 and write.output == ""
    source.write_bytes((tmp_path / "jls" / "ct.dcm").read_bytes())
    quiet = runner.invoke(app, ["compress", str(source), "-o", str(tmp_path / "q"), "--to",
                                "explicit", "-q"])
    assert quiet.exit_code == 0 and quiet.output == ""
    loud = runner.invoke(app, ["compress", str(source), "-o", str(tmp_path / "l"), "--to",
                               "explicit"])
    assert loud.exit_code == 0
    assert "grew by" in loud.output and "saved -" not in loud.output


def test_output_fits_80_columns_and_explains_its_numbers(synthetic, tmp_path: Path) -> None:
    """As a user sees it in an 80-column terminal: nothing cut into an ellipsis, the speed by
    the wall clock, the two PSNRs named; the report says the same."""
    long_name = tmp_path / "a-rather-long-file-name-of-a-ct-series.dcm"
    long_name.write_bytes(synthetic["ct"].read_bytes())
    report = tmp_path / "r.html"
    proc = subprocess.run([sys.executable, "-m", "dcmstream", "compress", str(long_name),
                           str(synthetic["mr"]), "-o", str(tmp_path / "o"), "--to",
                           "htj2k-lossy:psnr=45", "--report", str(report)],
                          capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "COLUMNS": "80"}, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in proc.stderr and "..." not in proc.stderr
    text = " ".join(proc.stderr.split())  # lines joined, as wrapped sentences read
    # The name is folded over lines of its column, not cut.
    header = next(i for i, line in enumerate(lines) if line.startswith("file "))
    width = lines[header].index("status")
    body = lines[header + 2:next(i for i, line in enumerate(lines) if line.startswith("saved "))]
    assert long_name.name in "".join(line[:width].strip() for line in body)
    assert "MB/s wall clock" in text and "codec per core" in text
    assert "over the stored range" in text and "as displayed through the file's window" in text
    html = report.read_text()
    assert "MB/s wall clock" in html and "window PSNR" in html and "20*log10(range/width)" in html
