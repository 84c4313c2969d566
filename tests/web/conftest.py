"""A real server for the DICOMweb tests: uvicorn on 127.0.0.1, a free port, a thread.

One per test session, over a temporary archive holding pydicom's test files and a
few generated multiframe instances (JPEG-LS, native, RGB JPEG).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from pydicom.data import get_testdata_file

from dcmstream.archive import Archive
from dcmstream.cache import FrameCache
from dcmstream.samples import write_multiframe
from dcmstream.web import create_app
from dcmstream.web.common import ServerConfig

from ..server_util import start_server, stop_server

TEST_FILES = ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "SC_rgb_jpeg.dcm", "emri_small_jpeg_2k_lossless.dcm", "rtdose.dcm")
ALLOWED_ORIGIN = "http://viewer.example"
MAX_UPLOAD = 8 << 20


@dataclass
class Server:
    url: str  # http://127.0.0.1:PORT
    root: str  # .../dicomweb
    archive: Archive
    app: object
    files: dict[str, Path] = field(default_factory=dict)
    sops: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # name -> (study, series, sop)

    def instance_url(self, name: str) -> str:
        st, se, sop = self.sops[name]
        return f"{self.root}/studies/{st}/series/{se}/instances/{sop}"


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    data = tmp_path_factory.mktemp("web-data")
    files: dict[str, Path] = {}
    files["jls"] = write_multiframe(data / "jls.dcm", frames=50, syntax="jpeg-ls", kind="ct", rows=128, columns=128, seed=11)
    files["native"] = write_multiframe(data / "native.dcm", frames=50, syntax="explicit", kind="ct", rows=128, columns=128, seed=11)
    files["htj2k"] = write_multiframe(data / "htj2k.dcm", frames=4, syntax="htj2k-lossless", kind="ct", rows=64, columns=64, seed=13)
    files["rgb"] = write_multiframe(data / "rgb.dcm", frames=8, syntax="jpeg-baseline", kind="us", rows=64, columns=80, seed=12)
    for name in TEST_FILES:
        path = get_testdata_file(name)
        if path is not None:
            files[name] = Path(path)
    archive = Archive(tmp_path_factory.mktemp("web-archive"), cache=FrameCache(80 << 20))
    sops = {}
    for name, path in files.items():
        result = archive.ingest_file(path)
        assert result.status == "stored", (name, result)
        sops[name] = (result.study_uid, result.series_uid, result.sop_uid)
    config = ServerConfig(cors_origins=(ALLOWED_ORIGIN,), max_upload_bytes=MAX_UPLOAD)
    app = create_app(archive, config)
    url, uv, thread = start_server(app)
    yield Server(url, f"{url}/dicomweb", archive, app, files, sops)
    stop_server(uv, thread)
    archive.close()


@pytest.fixture(scope="session")
def http(server: Server) -> httpx.Client:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def multipart_parts(response: httpx.Response) -> list[tuple[dict[str, str], bytes]]:
    """Split a multipart/related response into (headers, body) parts (test helper)."""
    from dcmstream.web.media import parse_content_type
    from dcmstream.web.multipart import MultipartParser, PartData, PartEnd, PartHeaders

    media, params = parse_content_type(response.headers["content-type"])
    assert media == "multipart/related", response.headers["content-type"]
    parser = MultipartParser(params["boundary"])
    parts: list[tuple[dict[str, str], bytes]] = []
    body = bytearray()
    headers: dict[str, str] = {}
    for event in parser.feed(response.content):
        if isinstance(event, PartHeaders):
            headers, body = event.headers, bytearray()
        elif isinstance(event, PartData):
            body += event.data
        elif isinstance(event, PartEnd):
            parts.append((headers, bytes(body)))
    parser.finish()
    return parts
