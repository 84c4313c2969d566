"""DIMSE test fixtures: an archive with its listener on a free port (in this process), DCMTK
tools as real peers (subprocesses with timeouts, killed at teardown), sample files.

pynetdicom installs Python apps called ``echoscu``, ``storescu``, ... on the PATH; the
DCMTK binaries are taken from /usr/bin (skipped when DCMTK is not installed).
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from dcmstream.archive import Archive
from dcmstream.config import DimsePeer, DimseSettings
from dcmstream.dimse import DimseServer
from tests.server_util import free_port

DCMTK = Path("/usr/bin")


def dcmtk(name: str) -> str:
    path = DCMTK / name
    if not path.is_file():
        pytest.skip(f"DCMTK's {name} is not installed (apt-get install dcmtk)")
    return str(path)


def run(*args: str, timeout: float = 120, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a DCMTK tool; its output is in the assertion message when it fails."""
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if check:
        assert result.returncode == 0, f"{' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


class Storescp:
    """DCMTK's storescp in a folder, accepting every transfer syntax it knows (+xa)."""

    def __init__(self, folder: Path, ae_title: str = "STORESCP") -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.peer = DimsePeer(ae_title, "127.0.0.1", self.port)
        self.log = folder.parent / f"{folder.name}.log"
        self.process = subprocess.Popen(
            [dcmtk("storescp"), "-aet", ae_title, "+xa", "-od", str(folder), str(self.port)],
            stdout=self.log.open("w"), stderr=subprocess.STDOUT,
        )
        wait_port(self.port)

    def files(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.is_file())

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Archive]:
    with Archive(tmp_path / "archive", cache=False) as arc:
        yield arc


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[Storescp]:
    scp = Storescp(tmp_path / "received")
    try:
        yield scp
    finally:
        scp.stop()


@pytest.fixture
def server(archive: Archive, storescp: Storescp) -> Iterator[DimseServer]:
    """The archive's listener on a free port, with storescp as the C-MOVE peer STORESCP."""
    srv = DimseServer(archive, DimseSettings(port=0, peers=(storescp.peer,), network_timeout=10.0), dimse_timeout=20.0)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def with_settings(srv: DimseServer, **changes: object) -> None:
    srv.settings = replace(srv.settings, **changes)  # type: ignore[arg-type]


# -- files --------------------------------------------------------------------------------------
#: Real files of pydicom's corpus, one per transfer syntax it has (plus a multi-frame).
TEST_FILES = (
    "CT_small.dcm",                      # explicit VR little endian
    "MR_small_implicit.dcm",             # implicit
    "MR_small_bigendian.dcm",            # explicit big endian
    "image_dfl.dcm",                     # deflated
    "SC_rgb_rle.dcm",                    # RLE
    "SC_rgb_small_odd_jpeg.dcm",         # JPEG baseline
    "JPEG-lossy.dcm",                    # JPEG extended (12 bit)
    "SC_rgb_jpeg_gdcm.dcm",              # JPEG lossless SV1
    "MR_small_jpeg_ls_lossless.dcm",     # JPEG-LS lossless
    "MR_small_jp2klossless.dcm",         # JPEG 2000 lossless
    "JPEG2000.dcm",                      # JPEG 2000
    "emri_small_jpeg_2k_lossless.dcm",   # JPEG 2000 lossless, 10 frames
)


def corpus_file(name: str) -> Path:
    path = get_testdata_file(name)
    assert isinstance(path, str), name
    return Path(path)


def sample_files(folder: Path) -> list[Path]:
    """Small generated files (2 frames, 32x32) in every transfer syntax the samples write
    that pydicom's corpus lacks (encapsulated uncompressed, JPEG lossless .57, JPEG 2000
    Part 2, HTJ2K, JPEG XL ...)."""
    from dcmstream.samples import SYNTAXES, write_multiframe

    folder.mkdir(parents=True, exist_ok=True)
    have = {str(pydicom.dcmread(corpus_file(n), stop_before_pixels=True).file_meta.TransferSyntaxUID) for n in TEST_FILES}
    from dcmstream.codecs.syntaxes import by_name

    out = []
    for i, name in enumerate(SYNTAXES):
        if by_name(name).uid in have:
            continue
        path = folder / f"{name}.dcm"
        write_multiframe(path, frames=2, syntax=name, kind="mr", rows=32, columns=32, seed=100 + i)
        out.append(path)
    return out


def storescu_config(folder: Path, files: list[Path]) -> tuple[Path, str]:
    """A storescu association profile (-xf FILE PROFILE) proposing each file's exact
    (SOP class, transfer syntax): DCMTK's flags propose one compressed syntax per run."""
    pairs: dict[tuple[str, str], None] = {}
    for f in files:
        meta = pydicom.dcmread(f, stop_before_pixels=True).file_meta
        pairs[(str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))] = None
    lines = ["[[TransferSyntaxes]]"]
    syntaxes = sorted({ts for _, ts in pairs})
    for i, ts in enumerate(syntaxes):
        lines += [f"[TS{i}]", f"TransferSyntax1 = {ts}"]
    lines += ["[[PresentationContexts]]", "[Contexts]"]
    for n, (sop_class, ts) in enumerate(pairs, 1):
        lines.append(f"PresentationContext{n} = {sop_class}\\TS{syntaxes.index(ts)}")
    lines += ["[[Profiles]]", "[Everything]", "PresentationContexts = Contexts"]
    path = folder / "storescu.cfg"
    path.write_text("\n".join(lines) + "\n")
    return path, "Everything"


def pixel_bytes(path: Path) -> bytes:
    """The Pixel Data value as encoded (native bytes or the encapsulated fragments)."""
    ds = pydicom.dcmread(path)
    for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if keyword in ds:
            return bytes(ds[keyword].value)
    raise AssertionError(f"{path} has no pixel data")
