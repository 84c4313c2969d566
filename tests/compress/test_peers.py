"""Real peers read what dcmstream writes: DCMTK and GDCM decode every target to the same
pixels, and dicom3tools' dciodvfy finds no error in the output that the input did not have.

Peers (Debian packages installed by scripts/install.sh; versions seen when this was written):
DCMTK 3.6.7 (dcmdjpls, dcmdrle, dcmdjpeg, dcmconv), GDCM 3.0.21 (gdcmconv; no HTJ2K),
dicom3tools 2022 (dciodvfy; it knows no HTJ2K transfer syntax and does not inflate Deflated
Explicit VR, so those outputs are validated relabelled JPEG 2000 / rewritten explicit VR -
the dataset is what it checks).
HTJ2K outputs are decoded by the GDCM 3.2 ``gdcmconv`` that ships with python-gdcm.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dcmstream.compress import transcode
from dcmstream.compress.encoders import parse_target

from .conftest import frames_of


def _tool(name: str) -> str | None:
    for folder in ("/usr/bin", "/usr/local/bin"):
        if Path(folder, name).exists():
            return str(Path(folder, name))
    return shutil.which(name)


def _python_gdcmconv() -> str | None:
    candidate = Path(sys.executable).parent / "gdcmconv"
    return str(candidate) if candidate.exists() else None


DCMTK = {"jpeg-ls": "dcmdjpls", "jpeg-ls-near": "dcmdjpls", "rle": "dcmdrle", "jpeg": "dcmdjpeg",
         "deflate": "dcmconv", "explicit": "dcmconv"}
GDCM_DEBIAN = {"jpeg-ls", "jpeg-ls-near", "rle", "j2k", "j2k-lossy", "deflate", "jpeg"}
GDCM_PYTHON = {"htj2k", "htj2k-rpcl", "htj2k-lossy"}

needs_peers = pytest.mark.skipif(
    not (_tool("dcmdjpls") and _tool("dciodvfy") and Path("/usr/bin/gdcmconv").exists()),
    reason="DCMTK, GDCM and dicom3tools are installed by scripts/install.sh")


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def _peer_pixels(path: Path) -> np.ndarray:
    ds = pydicom.dcmread(path)
    assert not ds.file_meta.TransferSyntaxUID.is_compressed
    return ds.pixel_array.reshape((int(ds.get("NumberOfFrames", 1)),) + ds.pixel_array.shape[-(
        2 if ds.SamplesPerPixel == 1 else 3):])


def _compare(peer: np.ndarray, ours: np.ndarray, lossy_decoder_freedom: int = 0) -> None:
    """Equal - up to ``lossy_decoder_freedom`` for lossy codecs, whose standards let
    decoders round differently (JPEG's IDCT and colour conversion, JPEG 2000's irreversible
    9/7 wavelet and ICT)."""
    assert peer.shape == ours.shape
    if lossy_decoder_freedom:
        assert np.abs(peer.astype(int) - ours.astype(int)).max() <= lossy_decoder_freedom
    else:
        np.testing.assert_array_equal(peer, ours)


def _decode_with_peers(target: str, output: Path, tmp_path: Path) -> list[tuple[str, np.ndarray]]:
    family = target.split(":")[0]
    decoded = []
    if family in DCMTK:
        tool = _tool(DCMTK[family])
        out = tmp_path / f"dcmtk-{family}.dcm"
        args = [tool, str(output), str(out)]
        if DCMTK[family] == "dcmconv":
            args.insert(1, "+te")  # write explicit VR little endian
        if DCMTK[family] == "dcmdjpeg":
            args.insert(1, "+cn")  # no colour conversion by DCMTK: compare in YCbCr? no - RGB
            args.pop(1)
        proc = _run(args)
        assert proc.returncode == 0, proc.stderr
        decoded.append((f"DCMTK {DCMTK[family]}", _peer_pixels(out)))
    if family in GDCM_DEBIAN:
        out = tmp_path / f"gdcm-{family}.dcm"
        proc = _run(["/usr/bin/gdcmconv", "--raw", str(output), str(out)])
        assert proc.returncode == 0, proc.stderr
        decoded.append(("GDCM 3.0 gdcmconv --raw", _peer_pixels(out)))
    if family in GDCM_PYTHON:
        tool = _python_gdcmconv()
        if tool is None:
            pytest.skip("python-gdcm's gdcmconv (GDCM 3.2, HTJ2K) is not installed")
        if family == "htj2k-lossy":
            # gdcmconv 3.2.6 decodes .203 but refuses to write the result ("Failed to
            # write", exit 0): ask the same GDCM library for the pixels directly.
            decoded.append(("GDCM 3.2 ImageReader", _gdcm_pixels(output)))
        else:
            out = tmp_path / f"gdcm32-{family}.dcm"
            proc = _run([tool, "--raw", str(output), str(out)])
            assert proc.returncode == 0 and out.stat().st_size, proc.stderr
            decoded.append(("GDCM 3.2 gdcmconv --raw", _peer_pixels(out)))
    return decoded


def _gdcm_pixels(path: Path) -> np.ndarray:
    gdcm = pytest.importorskip("gdcm")
    reader = gdcm.ImageReader()
    reader.SetFileName(str(path))
    assert reader.Read()
    image = reader.GetImage()
    fmt = image.GetPixelFormat()
    dtype = {(8, 0): np.uint8, (8, 1): np.int8, (16, 0): np.uint16,
             (16, 1): np.int16}[(fmt.GetBitsAllocated(), fmt.GetPixelRepresentation())]
    data = image.GetBuffer().encode("utf-8", "surrogateescape")  # as pydicom's GDCM plugin
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    shape = (int(ds.get("NumberOfFrames", 1)), ds.Rows, ds.Columns) + (
        (3,) if ds.SamplesPerPixel == 3 else ())
    return np.frombuffer(data, dtype).reshape(shape)


def _dciodvfy_errors(path: Path, tmp_path: Path) -> set[str]:
    ds = pydicom.dcmread(path, stop_before_pixels=False)
    ts = str(ds.file_meta.TransferSyntaxUID)
    relabel = {"1.2.840.10008.1.2.4.201": "1.2.840.10008.1.2.4.90",
               "1.2.840.10008.1.2.4.202": "1.2.840.10008.1.2.4.90",
               "1.2.840.10008.1.2.4.203": "1.2.840.10008.1.2.4.91",
               "1.2.840.10008.1.2.1.99": "1.2.840.10008.1.2.1"}
    if ts in relabel:
        # This dciodvfy knows no HTJ2K and does not inflate deflated datasets: it validates
        # the same dataset labelled JPEG 2000 / written explicit VR little endian.
        relabelled = tmp_path / f"relabelled-{path.name}"
        ds.file_meta.TransferSyntaxUID = relabel[ts]
        ds.save_as(relabelled, enforce_file_format=True)
        path = relabelled
    proc = _run([_tool("dciodvfy"), str(path)])
    lines = (proc.stdout + proc.stderr).splitlines()
    return {line.strip() for line in lines if line.startswith("Error")}


CASES = [
    ("ct", "jpeg-ls"), ("ct-signed", "jpeg-ls"), ("us", "jpeg-ls"), ("ct", "jpeg-ls-near:2"),
    ("ct", "rle"), ("ct-signed", "rle"), ("us", "rle"),
    ("ct", "j2k"), ("ct-signed", "j2k"), ("us", "j2k"), ("ct", "j2k-lossy:ratio=8"),
    ("ct", "htj2k"), ("ct-signed", "htj2k-rpcl"), ("us", "htj2k"), ("ct", "htj2k-lossy:ratio=8"),
    ("us", "jpeg:90"), ("ct", "deflate"), ("us", "deflate"),
]


@needs_peers
@pytest.mark.parametrize(("kind", "target"), CASES, ids=[f"{k}-{t}" for k, t in CASES])
def test_peers_decode_the_same_pixels(synthetic, tmp_path: Path, kind: str, target: str) -> None:
    result = transcode(synthetic[kind], tmp_path / "out.dcm", target)
    assert result.status == "written", result.message
    output = Path(result.output)
    ours = frames_of(output)
    t = parse_target(target)
    if not t.lossy:
        np.testing.assert_array_equal(ours, frames_of(synthetic[kind]))
    peers = _decode_with_peers(target, output, tmp_path)
    assert peers
    for _name, pixels in peers:
        if pixels.ndim == ours.ndim + 1 and pixels.shape[0] == 1:
            pixels = pixels[0]
        freedom = {"jpeg": 3, "j2k-lossy": 2, "htj2k-lossy": 2}.get(t.name, 0)
        _compare(pixels, ours, freedom)


@needs_peers
@pytest.mark.parametrize(("kind", "target"), [
    ("ct", "jpeg-ls"), ("us", "rle"), ("ct", "j2k"), ("us", "htj2k"), ("ct", "htj2k-rpcl"),
    ("ct", "jpeg-ls-near:2"), ("ct", "htj2k-lossy"), ("us", "jpeg"), ("mr", "deflate"),
    ("us", "j2k-lossy")])
def test_dciodvfy_finds_no_new_errors(synthetic, tmp_path: Path, kind: str, target: str) -> None:
    result = transcode(synthetic[kind], tmp_path / "out.dcm", target)
    assert result.status == "written", result.message
    before = _dciodvfy_errors(synthetic[kind], tmp_path)
    after = _dciodvfy_errors(Path(result.output), tmp_path)
    assert after - before == set()


@needs_peers
@pytest.mark.parametrize("name", ["693_UNCR.dcm", "US1_UNCR.dcm", "MR2_UNCR.dcm"])
@pytest.mark.parametrize("target", ["jpeg-ls", "htj2k-rpcl", "j2k", "rle"])
def test_peers_on_real_files(testfile, tmp_path: Path, name: str, target: str) -> None:
    source = Path(testfile(name))
    result = transcode(source, tmp_path / "out.dcm", target)
    assert result.status == "written", result.message
    ours = frames_of(result.output)
    np.testing.assert_array_equal(ours, frames_of(source))
    for _, pixels in _decode_with_peers(target, Path(result.output), tmp_path):
        _compare(pixels.reshape(ours.shape), ours)
    assert _dciodvfy_errors(Path(result.output), tmp_path) - _dciodvfy_errors(source, tmp_path) \
        == set()
