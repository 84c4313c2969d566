"""`dcmstream import` and `dcmstream serve --demo` (with tiny demo samples)."""

from __future__ import annotations

from pathlib import Path

from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from dcmstream.archive import Archive
from dcmstream.cli import serve as serve_cli
from dcmstream.cli.main import app

runner = CliRunner()


def test_import_files_and_folders(tmp_path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm"):
        (folder / name).write_bytes(Path(get_testdata_file(name)).read_bytes())
    (folder / "notes.txt").write_text("not dicom")
    archive = tmp_path / "archive"
    result = runner.invoke(app, ["import", str(folder), get_testdata_file("JPEG2000.dcm"), "--archive", str(archive), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "3 instances" in result.output
    again = runner.invoke(app, ["import", str(folder), "--archive", str(archive), "--quiet"])
    assert again.exit_code == 0 and "3 instances" in again.output
    with Archive(archive, cache=False) as arc:
        assert arc.catalog.counts() == {"studies": 3, "series": 3, "instances": 3}


def test_import_only_failures_exits_nonzero(tmp_path) -> None:
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"nope" * 100)
    result = runner.invoke(app, ["import", str(bad), "--archive", str(tmp_path / "a"), "--quiet"])
    assert result.exit_code == 1


def test_demo_fill_runs_once(tmp_path, monkeypatch) -> None:
    from rich.console import Console

    monkeypatch.setattr(serve_cli, "DEMO_SAMPLES", (("tiny CT", dict(frames=4, syntax="jpeg-ls", kind="ct", rows=32, columns=32, seed=5)),))
    with Archive(tmp_path / "demo", cache=False) as arc:
        serve_cli.fill_demo(arc, Console(quiet=True))
        counts = arc.catalog.counts()
        assert counts["instances"] == 1 + sum(get_testdata_file(n) is not None for n in serve_cli.DEMO_TEST_FILES)
        assert list(arc.blobs.tmp.iterdir()) == []
        serve_cli.fill_demo(arc, Console(quiet=True))  # marker: nothing regenerated
        assert arc.catalog.counts() == counts


def test_serve_help() -> None:
    result = runner.invoke(app, ["serve", "--help"])
    assert result.exit_code == 0 and "--cors-origin" in result.output and "--demo" in result.output
