"""Our viewer in Debian's chromium: deep link, first image, every frame, window/level, memory.

The checks a person would make, made by a script: the deep-linked study opens its largest
multiframe instance, the first image appears, scrolling (keyboard and wheel) shows every
frame at full quality, dragging the window changes the pixels on screen, the JS heap stays
within the configured budget, and no request ever fetched a whole instance.
"""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

from .conftest import CT_FRAMES, RGB_FRAMES, WHOLE_OBJECT, js_memory

pytestmark = pytest.mark.browser

CACHE_MB = 8  # 64 frames of 256x256x16 bit: scrolling 200 frames must evict
HEAP_OVERHEAD_MB = 48  # V8 heap of the app itself, ImageData, garbage not yet collected


def stats(page) -> dict:
    return page.evaluate("window.dcmviewer.stats()")


def wait_shown(page, index: int, timeout: float = 15_000) -> None:
    page.wait_for_function(
        f"(() => {{ const s = window.dcmviewer && window.dcmviewer.stats(); return s && s.index === {index} && s.shown === 'full'; }})()",
        timeout=timeout,
    )


def canvas_pixels(page) -> np.ndarray:
    png = page.locator("canvas.viewport-canvas").screenshot()
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def test_deep_link_every_frame_window_level_memory(page, viewer_server):
    server = viewer_server
    cdp = page.context.new_cdp_session(page)
    cdp.send("Performance.enable")
    mark = server.recorder.mark()

    page.goto(server.deep_link("ct", cacheMB=CACHE_MB))
    page.wait_for_function("window.dcmviewer && window.dcmviewer.stats().firstImageMs !== null", timeout=20_000)
    first = stats(page)
    print(f"\nfirst image {first['firstImageMs']:.0f} ms after navigation start ({first['firstImageKind']})")
    assert first["frames"] == CT_FRAMES  # the multiframe instance, not the 1-frame CT_small
    assert first["firstImageMs"] < 10_000  # the benchmark holds the real target; this is a hang guard
    wait_shown(page, 0)

    # Every frame once, at full quality: keyboard for the first half, the wheel for the rest.
    canvas = page.locator("canvas.viewport-canvas")
    canvas.focus()
    started = time.perf_counter()
    peak = js_memory(cdp)
    for i in range(1, CT_FRAMES):
        if i < CT_FRAMES // 2:
            page.keyboard.press("ArrowDown")
        else:
            box = canvas.bounding_box()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.mouse.wheel(0, 100)
        wait_shown(page, i)
        if i % 25 == 0:
            m = js_memory(cdp)
            peak = {k: max(peak[k], m[k]) for k in m}
    scrolled = time.perf_counter() - started
    s = stats(page)
    print(f"scrolled {CT_FRAMES} frames in {scrolled:.1f} s; cache {s['cache']}; loader {s['loader']}")
    assert s["displayedFull"] == CT_FRAMES
    assert s["cache"]["bytes"] <= CACHE_MB << 20
    assert s["cache"]["evictions"] > 0  # the budget was binding
    assert s["loader"]["errors"] == 0

    # Window/level: a drag changes the window and the pixels on screen; so does a preset.
    before = canvas_pixels(page)
    w0 = s["window"]
    box = canvas.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 120, cy + 60, steps=6)
    page.mouse.up()
    page.wait_for_function(f"window.dcmviewer.stats().window[1] !== {w0[1]}")
    time.sleep(0.2)  # the redraw is on the next animation frame
    after = canvas_pixels(page)
    w1 = stats(page)["window"]
    changed = np.abs(after - before).max(axis=2) > 8
    print(f"window {w0} -> {w1}: {changed.mean():.1%} of the canvas changed")
    assert w1[1] > w0[1]
    assert changed.mean() > 0.05
    page.keyboard.press("3")  # Bone preset (Default, Soft tissue, Lung, Bone ...)
    page.wait_for_function("window.dcmviewer.stats().window[1] === 1500")
    time.sleep(0.2)
    bone = canvas_pixels(page)
    assert (np.abs(bone - after).max(axis=2) > 8).mean() > 0.05

    # Zoom (keyboard) and pan (shift+drag) move the image on screen.
    page.keyboard.press("+")
    page.keyboard.press("+")
    page.wait_for_function("Math.abs(window.dcmviewer.stats().zoom - 1.5625) < 1e-6")
    time.sleep(0.2)
    zoomed = canvas_pixels(page)
    assert (np.abs(zoomed - bone).max(axis=2) > 8).mean() > 0.05
    page.keyboard.down("Shift")
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 80, cy + 40, steps=4)
    page.mouse.up()
    page.keyboard.up("Shift")
    time.sleep(0.2)
    panned = canvas_pixels(page)
    assert (np.abs(panned - zoomed).max(axis=2) > 8).mean() > 0.05
    assert stats(page)["window"][1] == 1500  # shift+drag panned, it did not window

    # Memory: decoded frames live in ArrayBuffers (counted) within the configured budget.
    m = js_memory(cdp)
    peak = {k: max(peak[k], m[k]) for k in m}
    print("JS memory MB:", {k: round(v / 2**20, 1) for k, v in peak.items()})
    assert peak["total"] <= (CACHE_MB + HEAP_OVERHEAD_MB) << 20

    # Frame-level requests only; batched prefetch; never the whole instance.
    requests = server.recorder.since(mark)
    whole = [p for _, p, _ in requests if WHOLE_OBJECT.search(p)]
    assert not whole, whole
    frames = [p for _, p, _ in requests if "/frames/" in p and not p.endswith(("/rendered", "/thumbnail"))]
    assert any("," in p.rsplit("/frames/", 1)[1] for p in frames), "prefetch should batch frames/a,b,c"
    assert not page.errors, page.errors


def test_cine_displays_every_frame(page, viewer_server):
    page.goto(viewer_server.deep_link("ct", cacheMB=16))
    wait_shown(page, 0, timeout=20_000)
    page.evaluate("window.dcmviewer.play(60)")
    page.wait_for_function("window.dcmviewer.stats().cine.allShownMs !== null", timeout=60_000, polling=200)
    cine = stats(page)["cine"]
    page.evaluate("window.dcmviewer.stop()")
    print(f"\ncine: every one of {CT_FRAMES} frames shown in {cine['allShownMs']:.0f} ms at a requested 60 fps "
          f"(measured {cine['measuredFps']:.1f}; {cine['stalls']} stalls, longest gap {cine['maxGapMs']:.0f} ms)")
    assert cine["shownInCine"] == CT_FRAMES
    assert cine["allShownMs"] < 30_000
    assert not page.errors, page.errors


def _samples(page, url: str, index: int) -> dict:
    page.goto(url)
    wait_shown(page, 0, timeout=20_000)
    if index:
        page.evaluate(f"window.dcmviewer.go({index})")
        wait_shown(page, index)
    out = page.evaluate(f"window.dcmviewer.sample({index}, 13)")
    assert out is not None
    return out


@pytest.mark.parametrize("name, index", [("ct", 17), ("rgb", 5)])
def test_wasm_decoding_matches_server_decoding(page, viewer_server, name, index):
    """The same frame decoded by the server (octet-stream) and by the WASM codec in a worker."""
    series = viewer_server.uids[name][1]
    base = viewer_server.deep_link(name, SeriesInstanceUIDs=series)
    server = _samples(page, base + "&decode=server", index)
    mark = viewer_server.recorder.mark()
    wasm = _samples(page, base + "&decode=wasm", index)
    assert stats(page)["loader"]["mode"] == "wasm"
    assert server["length"] == wasm["length"] and server["type"] == wasm["type"]
    a, b = np.array(server["values"], float), np.array(wasm["values"], float)
    if name == "ct":  # JPEG-LS lossless: identical
        assert server["type"] == "Uint16Array"
        assert np.array_equal(a, b)
    else:  # baseline JPEG, RGB: two libjpeg-turbo builds, colour conversion may round apart
        assert server["length"] == 240 * 320 * 3
        assert np.abs(a - b).mean() < 1.5
    # The WASM path asked for the stored syntax, one frame per part, never the instance.
    requests = viewer_server.recorder.since(mark)
    assert not [p for _, p, _ in requests if WHOLE_OBJECT.search(p)]
    assert not page.errors, page.errors


def test_rgb_frames_are_colour(page, viewer_server):
    series = viewer_server.uids["rgb"][1]
    page.goto(viewer_server.deep_link("rgb", SeriesInstanceUIDs=series))
    wait_shown(page, 0, timeout=20_000)
    s = stats(page)
    assert s["frames"] == RGB_FRAMES
    time.sleep(0.2)
    px = canvas_pixels(page)
    colourful = (np.abs(px[..., 0] - px[..., 2]) > 40).mean()
    assert colourful > 0.001  # the synthetic cine has a red/blue flow region


def test_study_list_opens_a_study(page, viewer_server):
    page.goto(f"{viewer_server.url}/viewer")
    rows = page.locator("#study-table tbody tr[data-study]")
    studies = {viewer_server.uids[n][0] for n in viewer_server.uids}
    # The table fills as QIDO answers arrive: wait for all rows, not just the first.
    expect(rows).to_have_count(len(studies), timeout=20_000)
    ct_study = viewer_server.uids["ct"][0]
    page.locator(f'#study-table tbody tr[data-study="{ct_study}"]').click()
    wait_shown(page, 0, timeout=20_000)
    assert "StudyInstanceUIDs=" in page.url
    # series panel: one card per display set, with thumbnails loaded after the first image
    cards = page.locator(".series-card")
    expect(cards).to_have_count(3, timeout=20_000)  # the two CT multiframes and the RGB cine share the study
    assert "on" in (cards.first.get_attribute("class") or "") or page.locator(".series-card.on").count() == 1
    page.wait_for_function("Array.from(document.querySelectorAll('.series-card img')).every(i => i.complete && i.naturalWidth > 0)", timeout=20_000)
    page.screenshot(path=str(_shot_dir() / "viewer-study.png"))
    assert not page.errors, page.errors


def _shot_dir():
    import os
    from pathlib import Path

    d = Path(os.environ.get("DCMSTREAM_SCREENSHOTS", "/tmp/dcmstream-screenshots"))
    d.mkdir(parents=True, exist_ok=True)
    return d
