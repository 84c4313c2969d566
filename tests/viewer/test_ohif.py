"""OHIF (npm @ohif/app, installed by scripts/install-ohif.sh) at /ohif against our /dicomweb.

Smoke test in Debian's chromium: the study list shows our studies, and the deep link
``/ohif/viewer?StudyInstanceUIDs=UID`` renders an image (OHIF draws through WebGL into a
canvas: the screenshot of the viewport must show more than background). Every DICOMweb
request OHIF makes must succeed: a 4xx/5xx names an endpoint or parameter we lack.
"""

from __future__ import annotations

import io
import os
import time

import numpy as np
import pytest
from PIL import Image

from dcmstream.web.viewer_routes import ohif_dir

from .test_viewer import _shot_dir

pytestmark = pytest.mark.browser


@pytest.fixture
def ohif_installed():
    if ohif_dir() is None:
        if os.environ.get("CI"):
            pytest.fail("OHIF must be installed in CI (scripts/install.sh runs scripts/install-ohif.sh)")
        pytest.skip("OHIF is not installed: bash scripts/install-ohif.sh")


def _dismiss_tour(page) -> None:
    skip = page.get_by_text("Skip all")
    if skip.count():
        try:
            skip.first.click(timeout=2000)
        except Exception:  # noqa: BLE001 - the onboarding tour is optional
            pass


def test_ohif_study_list_and_deep_link(ohif_installed, page, viewer_server):
    server = viewer_server
    mark = server.recorder.mark()
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(f"{server.url}/ohif/")
    for name in ("Synthetic",):
        page.get_by_text(name).first.wait_for(timeout=60_000)
    text = page.locator("body").inner_text()
    assert "Study List" in text
    studies = {server.uids[n][0] for n in server.uids}
    assert f"{len(studies)} Studies" in " ".join(text.split()), text[:400]
    page.screenshot(path=str(_shot_dir() / "ohif-study-list.png"))

    study = server.uids["ct"][0]
    page.goto(f"{server.url}/ohif/viewer?StudyInstanceUIDs={study}")
    canvas = page.locator("canvas.cornerstone-canvas").first
    try:
        canvas.wait_for(timeout=90_000)
    except Exception:
        page.screenshot(path=str(_shot_dir() / "ohif-viewer-failed.png"))
        raise
    deadline = time.monotonic() + 60
    lit = 0.0
    while time.monotonic() < deadline:
        _dismiss_tour(page)
        png = canvas.screenshot()
        px = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
        lit = float((px > 40).mean())
        if lit > 0.05:
            break
        time.sleep(0.5)
    page.screenshot(path=str(_shot_dir() / "ohif-viewer.png"))
    assert lit > 0.05, f"OHIF's viewport stayed background ({lit:.1%} lit)"

    requests = server.recorder.since(mark)
    dicomweb = [p for _, p, _ in requests if p.startswith("/dicomweb")]
    assert any("/metadata" in p for p in dicomweb)
    assert any("/frames/" in p for p in dicomweb)
    failed = [f for f in server.recorder.failures(mark) if f[1].startswith("/dicomweb")]
    assert not failed, f"OHIF asked for what the server could not answer: {failed}"
    assert not [p for p in dicomweb if p.endswith("/instances/" + server.uids["ct"][2])], "OHIF fetched a whole instance"
