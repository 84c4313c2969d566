"""Progressive HTJ2K frames: a first byte range decoded at reduced resolution, then the frame.

HTJ2K lossless RPCL (1.2.840.10008.1.2.4.202; OpenJPH writes RPCL) in an archive and on a
plain range-capable HTTP server. The frame URL answers Range requests (206, Content-Range
in the part); the viewer asks for the first bytes of the frame, shows OpenJPH's decode of
that partial codestream at reduced resolution, then asks for the rest and shows the full
frame, whose pixels equal the server's decode. The link is throttled (CDP) so that the
reduced image is on screen before the rest arrives (no timing is asserted).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import dcmstream
from dcmstream.archive import Archive
from dcmstream.cache import FrameCache
from dcmstream.samples import write_multiframe
from dcmstream.web import create_app

from ..range_server import RangeServer, range_server
from ..server_util import start_server, stop_server

ROWS, COLUMNS = 1024, 1024
FIRST = 64 << 10  # FrameLoader.progressiveBytes for a 2 MiB decoded frame: decoded / 32
AS_STORED = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


class RangeLog:
    """ASGI wrapper keeping (path, Range header, status) of every request."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.entries: list[list[Any]] = []
        self.lock = threading.Lock()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        entry = [scope["path"], headers.get(b"range", b"").decode() or None, 0]
        with self.lock:
            self.entries.append(entry)

        async def recording_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                entry[2] = int(message["status"])
            await send(message)

        await self.app(scope, receive, recording_send)

    def frames(self) -> list[tuple[str, str | None, int]]:
        with self.lock:
            return [(p, r, s) for p, r, s in self.entries if "/frames/" in p and not p.endswith("/rendered")]


@dataclass
class Served:
    url: str
    log: RangeLog
    path: Path
    uids: tuple[str, str, str]


@pytest.fixture(scope="module")
def htj2k(tmp_path_factory) -> Iterator[Served]:
    data = tmp_path_factory.mktemp("htj2k")
    path = write_multiframe(data / "rpcl.dcm", frames=3, syntax="htj2k-rpcl", kind="ct", rows=ROWS, columns=COLUMNS, seed=3)
    archive = Archive(tmp_path_factory.mktemp("htj2k-archive"), cache=FrameCache(32 << 20))
    result = archive.ingest_file(path)
    assert result.status == "stored"
    log = RangeLog(create_app(archive))
    url, uv, thread = start_server(log)
    yield Served(url, log, path, (result.study_uid, result.series_uid, result.sop_uid))
    stop_server(uv, thread)
    archive.close()


def _frame_url(s: Served, n: int) -> str:
    study, series, sop = s.uids
    return f"{s.url}/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/{n}"


def _expected(path: Path, index: int, step: int) -> np.ndarray:
    inst = dcmstream.open(path)
    try:
        return np.asarray(inst.frame(index)).reshape(-1)[::step].astype(np.int64)
    finally:
        inst.close()


def test_frame_url_answers_ranges(htj2k):
    """Server side: a single frame honours Range (206 + Content-Range), as stored or not."""
    url = _frame_url(htj2k, 2)
    whole = httpx.get(url, headers={"Accept": "image/jphc"})
    assert whole.status_code == 200 and whole.headers["accept-ranges"] == "bytes"
    full = whole.content
    part = httpx.get(url, headers={"Accept": "image/jphc", "Range": "bytes=0-999"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 0-999/{len(full)}"
    assert part.content == full[:1000]
    rest = httpx.get(url, headers={"Accept": "image/jphc", "Range": "bytes=1000-"})
    assert rest.status_code == 206 and part.content + rest.content == full
    # multipart (as the viewer asks): the part carries the range.
    mp = httpx.get(url, headers={"Accept": AS_STORED, "Range": "bytes=0-99"})
    assert mp.status_code == 206
    assert f"Content-Range: bytes 0-99/{len(full)}" in mp.content[:400].decode("latin-1")
    assert full[:100] in mp.content
    assert httpx.get(url, headers={"Accept": "image/jphc", "Range": f"bytes={len(full)}-"}).status_code == 416


def _throttle(page: Any) -> None:
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    # ~4 Mbit/s: the rest of the frame takes a while after the first range.
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 20, "downloadThroughput": 500_000, "uploadThroughput": 500_000})


def _check_progressive(page: Any, path: Path) -> dict:
    page.wait_for_function(
        "(() => { const s = window.dcmviewer && window.dcmviewer.stats(); return s && s.index === 0 && s.shown === 'full'; })()",
        timeout=60_000,
    )
    s = page.evaluate("window.dcmviewer.stats()")
    partials = s["loader"]["partials"]
    assert partials, s["loader"]
    first = partials[0]
    assert first["width"] < COLUMNS and first["height"] < ROWS and first["level"] >= 1
    assert first["bytes"] <= FIRST < first["total"]
    assert s["firstImageKind"] == "partial"  # the reduced image was on screen first
    values = np.asarray(page.evaluate("window.dcmviewer.sample(0, 37)")["values"])
    np.testing.assert_array_equal(values, _expected(path, 0, 37))  # final pixels exact
    return s


@pytest.mark.browser
def test_progressive_from_archive(page, htj2k):
    _throttle(page)
    study, series, _ = htj2k.uids
    page.goto(f"{htj2k.url}/viewer?StudyInstanceUIDs={study}&SeriesInstanceUIDs={series}&cacheMB=32")
    _check_progressive(page, htj2k.path)
    first_frame = [(r, st) for p, r, st in htj2k.log.frames() if p.endswith("/frames/1")]
    # The first range, then the rest of the frame: never the frame twice.
    assert first_frame[:2] == [(f"bytes=0-{FIRST - 1}", 206), (f"bytes={FIRST}-", 206)], first_frame
    assert not page.errors


@pytest.mark.browser
def test_progressive_from_url(page, htj2k):
    http: RangeServer
    with range_server({"rpcl.dcm": htj2k.path}) as http:
        _throttle(page)
        page.goto(f"{htj2k.url}/viewer?url={http.url('rpcl.dcm')}&cacheMB=32")
        s = _check_progressive(page, htj2k.path)
        served = http.served("rpcl.dcm")
        assert all(x.status == 206 for x in served)
        # header + first range + the rest of frame 1 (+ prefetched frames, one range each)
        first = s["file"]["headerBytes"]
        # (the header's reads come first in the log: it is in arrival order)
        assert sum(x.sent == FIRST for x in served[s["file"]["requests"]:]) == 1
        assert first <= 80 << 10
        # each frame's bytes once (the 64 KiB header read overlaps frame 1: read again)
        assert http.counts("rpcl.dcm").body_bytes <= first + htj2k.path.stat().st_size
    assert not page.errors

