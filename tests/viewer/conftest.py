"""Browser tests of /viewer and /ohif: Debian's chromium driven by Playwright, a real server.

The server is uvicorn on 127.0.0.1 (a free port, a thread) over a temporary archive with a
generated 200-frame 256x256 JPEG-LS CT, an RGB JPEG ultrasound cine and a 20-frame CT in the
same study, and pydicom's CT_small (a second study). An ASGI wrapper records every request path, so tests can prove that no
request fetched a whole instance.

Browser tests are marked ``browser``. Without /usr/bin/chromium (or playwright) they are
skipped, except under CI (``CI`` set), where scripts/install.sh installs both and a missing
browser is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydicom.data import get_testdata_file

from dcmstream.archive import Archive
from dcmstream.cache import FrameCache
from dcmstream.samples import write_multiframe
from dcmstream.web import create_app

from ..server_util import start_server, stop_server

CHROMIUM = os.environ.get("DCMSTREAM_CHROMIUM", "/usr/bin/chromium")
#: Flags for Debian's chromium on this closed network (see shared/REFERENCE.md).
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
CT_FRAMES = 200
RGB_FRAMES = 40

#: A whole study / series / instance (WADO-RS retrieve) or bulk data: never from a viewer.
WHOLE_OBJECT = re.compile(r"/studies/[0-9.]+(/series/[0-9.]+(/instances/[0-9.]+)?)?/?$|/bulkdata/")


def _need_browser() -> None:
    reason = ""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "playwright is not installed (pip install -e .[test])"
    if not reason and not os.access(CHROMIUM, os.X_OK):
        reason = f"{CHROMIUM} is missing (apt-get install chromium; scripts/install.sh does it)"
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests must run in CI: {reason}")
        pytest.skip(reason)


class RecordingApp:
    """ASGI wrapper keeping (method, path, query) of every HTTP request, and each status."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: list[tuple[str, str, str]] = []
        self.statuses: dict[int, int] = {}  # request number -> response status
        self._lock = threading.Lock()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with self._lock:
            n = len(self.requests)
            self.requests.append((scope["method"], scope["path"], scope.get("query_string", b"").decode("latin-1")))

        async def recording_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                with self._lock:
                    self.statuses[n] = int(message["status"])
            await send(message)

        await self.app(scope, receive, recording_send)

    def failures(self, mark: int = 0) -> list[tuple[int, str, str]]:
        """(status, path, query) of requests since ``mark`` answered with 4xx/5xx."""
        with self._lock:
            return [(self.statuses[i], p, q) for i, (_, p, q) in enumerate(self.requests) if i >= mark and self.statuses.get(i, 200) >= 400]

    def mark(self) -> int:
        with self._lock:
            return len(self.requests)

    def since(self, mark: int) -> list[tuple[str, str, str]]:
        with self._lock:
            return list(self.requests[mark:])


@dataclass
class ViewerServer:
    url: str
    archive: Archive
    recorder: RecordingApp
    uids: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # name -> (study, series, sop)

    def deep_link(self, name: str, **params: Any) -> str:
        study = self.uids[name][0]
        extra = "".join(f"&{k}={v}" for k, v in params.items())
        return f"{self.url}/viewer?StudyInstanceUIDs={study}{extra}"


@pytest.fixture(scope="session")
def viewer_server(tmp_path_factory) -> Iterator[ViewerServer]:
    data = tmp_path_factory.mktemp("viewer-data")
    files = {
        "ct": write_multiframe(data / "ct.dcm", frames=CT_FRAMES, syntax="jpeg-ls", kind="ct", rows=256, columns=256, seed=21),
        # Same seed: same study (the deep link must pick the 200-frame instance among three).
        "rgb": write_multiframe(data / "rgb.dcm", frames=RGB_FRAMES, syntax="jpeg-baseline", kind="us", rows=240, columns=320, seed=21),
        "short": write_multiframe(data / "short.dcm", frames=20, syntax="jpeg-ls", kind="ct", rows=128, columns=128, seed=21),
    }
    small = get_testdata_file("CT_small.dcm")
    if small:
        files["small"] = Path(small)
    archive = Archive(tmp_path_factory.mktemp("viewer-archive"), cache=FrameCache(40 << 20))
    uids = {}
    for name, path in files.items():
        result = archive.ingest_file(path)
        assert result.status == "stored", (name, result)
        uids[name] = (result.study_uid, result.series_uid, result.sop_uid)
    recorder = RecordingApp(create_app(archive))
    url, uv, thread = start_server(recorder)
    yield ViewerServer(url, archive, recorder, uids)
    stop_server(uv, thread)
    archive.close()
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1024, "height": 720})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.errors = errors  # type: ignore[attr-defined]
    yield pg
    context.close()


def js_memory(cdp: Any) -> dict[str, float]:
    """JS heap of the page in bytes: V8's used heap, and ArrayBuffer backing stores.

    ``Performance.getMetrics``' JSHeapUsedSize leaves out ArrayBuffer contents (where decoded
    frames live); ``Runtime.getHeapUsage().backingStorageSize`` counts them.
    """
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    usage = cdp.send("Runtime.getHeapUsage")
    used = float(metrics.get("JSHeapUsedSize", usage.get("usedSize", 0)))
    backing = float(usage.get("backingStorageSize", 0))
    return {"js_heap_used": used, "array_buffers": backing, "total": used + backing}
