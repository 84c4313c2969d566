"""The command line, run as a user runs it (a real subprocess) and in-process."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pydicom
from typer.testing import CliRunner

from dcmstream.cli.main import app

runner = CliRunner()


def test_info_json_keys_and_values(testfile) -> None:
    path = testfile("emri_small_jpeg_2k_lossless.dcm")
    result = subprocess.run([sys.executable, "-m", "dcmstream", "info", path, "--json"], capture_output=True, text=True, check=True)
    facts = json.loads(result.stdout)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert facts["transfer_syntax"] == ds.file_meta.TransferSyntaxUID
    assert facts["frames"] == int(ds.NumberOfFrames)
    assert (facts["rows"], facts["columns"]) == (ds.Rows, ds.Columns)
    assert facts["samples_per_pixel"] == ds.SamplesPerPixel
    assert (facts["bits_allocated"], facts["bits_stored"]) == (ds.BitsAllocated, ds.BitsStored)
    assert facts["photometric_interpretation"] == ds.PhotometricInterpretation
    assert facts["offset_table"] == "fragments"


def test_info_table(testfile) -> None:
    result = runner.invoke(app, ["info", testfile("CT_small.dcm")])
    assert result.exit_code == 0
    assert "native" in result.output and "Explicit VR Little Endian" in result.output


def test_info_rejects_non_dicom(tmp_path) -> None:
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"this is not dicom at all" * 10)
    result = runner.invoke(app, ["info", str(bad)])
    assert result.exit_code == 2
    assert "error:" in result.output


def test_frame_npy_is_the_raw_frame(testfile, tmp_path) -> None:
    path = testfile("emri_small.dcm")
    out = tmp_path / "f.npy"
    # Frame numbers start at 1, as in DICOM and DICOMweb: frame 4 is pixel_array[3].
    result = runner.invoke(app, ["frame", path, "4", "-o", str(out)])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(np.load(out), pydicom.dcmread(path).pixel_array[3])


def test_frame_png_uses_the_window(testfile, tmp_path) -> None:
    import imagecodecs

    path = testfile("CT_small.dcm")
    default, narrow = tmp_path / "a.png", tmp_path / "b.png"
    assert runner.invoke(app, ["frame", path, "1", "-o", str(default)]).exit_code == 0
    assert runner.invoke(app, ["frame", path, "1", "-o", str(narrow), "--window", "40,80"]).exit_code == 0
    a = imagecodecs.png_decode(default.read_bytes())
    b = imagecodecs.png_decode(narrow.read_bytes())
    assert a.shape == b.shape == (128, 128) and a.dtype == np.uint8
    # A narrower window saturates more pixels to black or white.
    assert np.isin(b, (0, 255)).sum() > np.isin(a, (0, 255)).sum()


def test_frame_out_of_range_is_a_clean_error(testfile, tmp_path) -> None:
    for number in ("0", "2"):  # CT_small has one frame: number 1
        result = runner.invoke(app, ["frame", testfile("CT_small.dcm"), number, "-o", str(tmp_path / "x.png")])
        assert result.exit_code == 2
        assert result.output.strip() == f"error: CT_small.dcm has no frame {number}: its frames are numbered 1 to 1"
    assert not (tmp_path / "x.png").exists()


def _all_commands() -> list[str]:
    from dcmstream.cli.main import _COMMANDS

    return [name for name, *_ in _COMMANDS]


def test_help_shows_flags_without_placeholders() -> None:
    """Flags take no value: no ``<bool>`` after them; every command has a one-line summary."""
    top = runner.invoke(app, ["--help"], terminal_width=80)
    assert top.exit_code == 0
    assert "<bool>" not in top.output and "..." not in top.output.split("Commands:")[1]
    for name in _all_commands():
        result = runner.invoke(app, [name, "--help"], terminal_width=80)
        assert result.exit_code == 0, result.output
        assert "<bool>" not in result.output
        assert max(len(line) for line in result.output.splitlines()) <= 80
    frame_help = runner.invoke(app, ["frame", "--help"]).output
    assert "NUMBER" in frame_help and "from 1" in frame_help


def _truncated(tmp_path) -> str:
    from dcmstream.samples import write_multiframe

    path = write_multiframe(tmp_path / "full.dcm", frames=40, rows=32, columns=32, syntax="jpeg-ls")
    data = path.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) * 2 // 3])
    return str(cut)


def test_a_truncated_file_gives_one_warning_line_and_one_error_line(tmp_path) -> None:
    """As a user runs it: library warnings are one line, not Python's file:line + source."""
    cut = _truncated(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "dcmstream", "info", cut], capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 2, proc.stderr
    assert lines[0].startswith("warning: ") and "past the end of the file" in lines[0] and "truncated?" in lines[0]
    assert lines[1].startswith("error: ")
    assert "UserWarning" not in proc.stderr and "Traceback" not in proc.stderr


def test_an_unhandled_error_is_one_line_and_exit_1(tmp_path) -> None:
    not_a_folder = tmp_path / "archive.txt"
    not_a_folder.write_text("a file where the archive folder should be")
    result = runner.invoke(app, ["import", str(not_a_folder), "--archive", str(not_a_folder), "-q"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and result.output.startswith("error: ")


def test_serve_banner_names_every_address(tmp_path) -> None:
    from dcmstream.cli.serve import banner

    text = banner(tmp_path, {"studies": 1, "series": 2, "instances": 3}, "127.0.0.1", 8042, ["*"])
    for path in ("/dicomweb", "/viewer", "/metrics"):
        assert f"http://127.0.0.1:8042{path}" in text
    assert "CORS" in text and max(len(line) for line in text.splitlines()[1:]) <= 80
    assert "[::1]:8042" in banner(tmp_path, {"studies": 0, "series": 0, "instances": 0}, "::1", 8042)


def test_serve_banner_names_ohif_only_when_installed(tmp_path, monkeypatch) -> None:
    from dcmstream.cli.serve import banner

    counts = {"studies": 0, "series": 0, "instances": 0}
    monkeypatch.setenv("DCMSTREAM_OHIF_DIR", str(tmp_path / "none"))
    assert "/ohif" not in banner(tmp_path, counts, "127.0.0.1", 8042)
    (tmp_path / "ohif").mkdir()
    (tmp_path / "ohif" / "index.html").write_text("<html></html>")
    monkeypatch.setenv("DCMSTREAM_OHIF_DIR", str(tmp_path / "ohif"))
    assert "http://127.0.0.1:8042/ohif" in banner(tmp_path, counts, "127.0.0.1", 8042)
