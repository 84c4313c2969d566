"""The viewer without an archive: ``/viewer?url=`` and the local file picker, in chromium.

The files sit on a real range-capable HTTP server on loopback (tests/range_server.py, another
origin than the viewer: CORS). The page builds the frame index in its Part 10 worker from a
few ranged reads, then fetches each frame viewed with one Range request: the server's log
proves the page never downloaded the file. Pixels equal dcmstream's own decode of the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import generate_frames

import dcmstream
from dcmstream.samples import write_multiframe

from ..range_server import RangeServer, range_server

pytestmark = pytest.mark.browser

HEADER_ALLOWANCE = 80 << 10  # the first read is 64 KiB (a small file answers with less)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("url-files")
    return {
        "jls": write_multiframe(d / "jls.dcm", frames=60, syntax="jpeg-ls", kind="ct", rows=256, columns=256, seed=5),
        "jls-none": write_multiframe(d / "jls-none.dcm", frames=12, syntax="jpeg-ls", kind="ct", rows=128, columns=128, seed=6, offset_table="none"),
        "jls-eot": write_multiframe(d / "jls-eot.dcm", frames=12, syntax="jpeg-ls", kind="ct", rows=128, columns=128, seed=7, offset_table="eot"),
        "frag-none": write_multiframe(d / "frag-none.dcm", frames=8, syntax="jpeg-ls", kind="ct", rows=128, columns=128, seed=12, offset_table="none", fragments_per_frame=3),
        "frag-bot": write_multiframe(d / "frag-bot.dcm", frames=8, syntax="jpeg-ls", kind="ct", rows=128, columns=128, seed=13, fragments_per_frame=3),
        "native": write_multiframe(d / "native.dcm", frames=20, syntax="explicit", kind="ct", rows=200, columns=160, seed=8),
        "implicit": write_multiframe(d / "implicit.dcm", frames=6, syntax="implicit", kind="ct", rows=64, columns=96, seed=9),
        "rgb": write_multiframe(d / "rgb.dcm", frames=8, syntax="jpeg-baseline", kind="us", rows=120, columns=160, seed=10),
        "big": write_multiframe(d / "big.dcm", frames=40, syntax="explicit", kind="ct", rows=512, columns=512, seed=11),
    }


@pytest.fixture(scope="module")
def http(files) -> Iterator[RangeServer]:
    with range_server({f"{k}.dcm": v for k, v in files.items()}) as srv:
        srv.add("whole.dcm", files["big"], mode="ignore-range")
        yield srv


def stats(page) -> dict:
    return page.evaluate("window.dcmviewer.stats()")


def wait_full(page, index: int, timeout: float = 20_000) -> None:
    page.wait_for_function(
        f"(() => {{ const s = window.dcmviewer && window.dcmviewer.stats(); return s && s.index === {index} && s.shown === 'full'; }})()",
        timeout=timeout,
    )


def wait_idle(page) -> None:
    """No frame request in flight or queued (prefetch finished): the byte counts are final."""
    page.wait_for_function("(() => { const l = window.dcmviewer.stats().loader; return l.inflight === 0 && l.queued === 0; })()", timeout=20_000)


def viewer_samples(page, index: int, step: int = 7) -> np.ndarray:
    out = page.evaluate(f"window.dcmviewer.sample({index}, {step})")
    assert out is not None
    return np.asarray(out["values"])


def expected_samples(path: Path, index: int, step: int = 7) -> np.ndarray:
    inst = dcmstream.open(path)
    try:
        return np.asarray(inst.frame(index)).reshape(-1)[::step].astype(np.int64)
    finally:
        inst.close()


def frame_sizes(path: Path, frames: int) -> list[int]:
    """Bytes of each frame as stored (pydicom reads the whole file: fine for a test)."""
    ds = pydicom.dcmread(path)
    if not ds.file_meta.TransferSyntaxUID.is_compressed:
        return [len(ds.PixelData) // frames] * frames
    return [len(f) for f in generate_frames(ds.PixelData, number_of_frames=frames)]


def _open(page, viewer_server, url: str, **params) -> None:
    extra = "".join(f"&{k}={v}" for k, v in params.items())
    page.goto(f"{viewer_server.url}/viewer?url={url}{extra}")


@pytest.mark.parametrize("name", ["jls", "native", "jls-none", "jls-eot", "implicit", "frag-none", "frag-bot"])
def test_url_opens_frames_by_range(page, viewer_server, http, files, name):
    path = files[name]
    size = path.stat().st_size
    http.clear()
    mark = viewer_server.recorder.mark()
    _open(page, viewer_server, http.url(f"{name}.dcm"), cacheMB=16)
    wait_full(page, 0)
    s = stats(page)
    frames = s["file"]["frames"]
    assert s["frames"] == frames > 1
    # A few frames, each compared with dcmstream's decode of the same file.
    for index in sorted({0, 1, frames // 2, frames - 1}):
        page.evaluate(f"window.dcmviewer.go({index})")
        wait_full(page, index)
        np.testing.assert_array_equal(viewer_samples(page, index), expected_samples(path, index))
    wait_idle(page)
    served = http.served(f"{name}.dcm")
    assert served and all(x.status == 206 and x.range for x in served), served
    header = s["file"]["headerBytes"]
    assert header <= HEADER_ALLOWANCE + 16 * frames  # 64 KiB, or item headers walked (10 bytes each)
    loaded = stats(page)["loader"]["framesLoaded"]
    largest = sorted(frame_sizes(path, frames), reverse=True)[:loaded]
    # Header + the frames loaded (viewed and prefetched) + item headers (<= 3 a frame here), never the file.
    assert http.counts(f"{name}.dcm").body_bytes <= header + sum(largest) + 8 * 3 * loaded + 16
    ranges = [x.range for x in served]
    assert len(ranges) == len(set(ranges)), sorted(r for r in ranges if ranges.count(r) > 1)  # no range read twice
    assert http.counts(f"{name}.dcm").body_bytes < size or loaded == frames
    assert not viewer_server.recorder.failures(mark)
    assert not page.errors


def test_url_budget_bounds_bytes(page, viewer_server, http, files):
    """A 40-frame 512x512 native file (20 MB) with an 8 MB budget: what crosses the network
    is the header plus the frames loaded, each exactly its own bytes."""
    path = files["big"]
    http.clear()
    _open(page, viewer_server, http.url("big.dcm"), cacheMB=8)
    wait_full(page, 0)
    page.evaluate("window.dcmviewer.go(25)")
    wait_full(page, 25)
    np.testing.assert_array_equal(viewer_samples(page, 25, 101), expected_samples(path, 25, 101))
    wait_idle(page)
    s = stats(page)
    frame = 512 * 512 * 2
    ranges = [x for x in http.served("big.dcm") if x.sent == frame]
    assert len(ranges) == s["loader"]["framesLoaded"]  # one request of exactly one frame each
    assert http.counts("big.dcm").body_bytes == s["file"]["headerBytes"] + frame * s["loader"]["framesLoaded"]
    assert http.counts("big.dcm").body_bytes < path.stat().st_size
    assert s["cache"]["bytes"] <= 8 << 20


def test_server_ignoring_range_gives_a_message(page, viewer_server, http, files):
    http.clear()
    _open(page, viewer_server, http.url("whole.dcm"))
    page.wait_for_function("(() => { const s = window.dcmviewer && window.dcmviewer.stats(); return s && /ignores HTTP Range/.test(s.error); })()", timeout=20_000)
    assert page.locator("#error").is_visible()
    served = http.served("whole.dcm")
    assert len(served) == 1 and served[0].status == 200
    assert served[0].sent < files["big"].stat().st_size  # the download was aborted


def test_local_file_picker(page, viewer_server, files):
    path = files["jls"]
    page.goto(f"{viewer_server.url}/viewer")
    page.set_input_files("#file-input", str(path))
    wait_full(page, 0)
    page.evaluate("window.dcmviewer.go(33)")
    wait_full(page, 33)
    np.testing.assert_array_equal(viewer_samples(page, 33), expected_samples(path, 33))
    s = stats(page)
    assert s["file"]["frames"] == 60
    assert s["file"]["headerBytes"] <= HEADER_ALLOWANCE


def test_rgb_jpeg_by_url(page, viewer_server, http, files):
    _open(page, viewer_server, http.url("rgb.dcm"))
    wait_full(page, 0)
    page.evaluate("window.dcmviewer.go(5)")
    wait_full(page, 5)
    got = viewer_samples(page, 5, 11)
    want = expected_samples(files["rgb"], 5, 11)
    # libjpeg-turbo (WASM) and the server's decoder may round YBR->RGB differently by 1-2.
    assert got.shape == want.shape and np.abs(got - want).max() <= 3
