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
