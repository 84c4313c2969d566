"""Viewer benchmark: our /viewer against a naive whole-instance page, in headless Chromium.

For the 1,000-frame RGB JPEG ultrasound file and the 1,000-frame JPEG-LS CT file (the same
samples as bench_frames, generated once into bench/data/), served by ``dcmstream serve`` (a
subprocess, as users run it) on loopback, Debian's chromium driven by Playwright measures:

* time to first image: navigation start to the first image on the canvas (median of
  ``--first-runs`` fresh page loads, each in a new browser context: cold HTTP cache);
* cine: after the first image, cine at ``--fps``; time until every frame was displayed once,
  the frame rate reached, stalls (gaps > 2 frame intervals after the first second);
* peak JS memory, sampled every 250 ms over CDP: ``JSHeapUsedSize`` (V8's heap, what
  ``Performance.getMetrics`` reports; it leaves out ArrayBuffer contents), the same plus
  ``Runtime.getHeapUsage().backingStorageSize`` (ArrayBuffers: where frames live), and the
  RSS of the page's renderer process (workers included);
* bytes transferred: the server's ``dcmstream_http_response_bytes_total`` before and after.

Pages measured:

* ``viewer/server``  our viewer, frames decoded by the server (octet-stream), decoded-frame
  budget ``--cache-mb``;
* ``viewer/wasm``    our viewer, frames as stored, decoded by WASM codecs in workers;
* ``naive``          /viewer/naive.html: fetches the WHOLE instance, keeps it, decodes every
  frame from it (WASM) and keeps the decoded frames, as whole-volume loaders do: what
  browser viewers did in the NA-MIC report (it plays the frames as they are decoded).

The viewer's default (``decode=auto``) is the WASM path for both files (see FrameLoader.modeFor).

Run through the driver: ``python bench/run.py --only viewer`` (``--quick``: 100 frames).
Targets (issue 6): first image <= 300 ms; peak JS heap <= 200 MB on the 1,000-frame files
while the naive page holds the whole file; cine at 30 fps without stalls after the first second.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    DATA_DIR,
    MiB,
    free_port,
    machine_info,
    markdown_table,
    versions,
    write_results,
)

NAME = "viewer"
CHROMIUM = os.environ.get("DCMSTREAM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
FIRST_IMAGE_MAX_MS = 300.0
PEAK_HEAP_MAX_MB = 200.0
TARGET_FPS = 30


@dataclass(frozen=True)
class FileSpec:
    key: str
    title: str
    sample: dict[str, Any]


# The same files (names and parameters) as bench_frames.
FILES = [
    FileSpec("us-jpeg-bot", "US 600x800 RGB JPEG baseline (YBR_FULL_422)",
             dict(syntax="jpeg-baseline", kind="us", rows=600, columns=800, offset_table="bot")),
    FileSpec("ct-jpegls-bot", "CT 512x512x16 JPEG-LS lossless", dict(syntax="jpeg-ls", kind="ct", offset_table="bot")),
]
PAGES = ["viewer/server", "viewer/wasm", "naive"]


def _log(msg: str) -> None:
    print(f"[bench_viewer] {msg}", file=sys.stderr, flush=True)


def _get(url: str, timeout: float = 10) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def _bytes_sent(base: str) -> float:
    total = 0.0
    for line in _get(f"{base}/metrics").decode().splitlines():
        if line.startswith("dcmstream_http_response_bytes_total"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _renderer_rss() -> int:
    """RSS of the largest chromium renderer below this process (the page's, workers included)."""
    best = 0
    for p in psutil.Process().children(recursive=True):
        try:
            if any(a == "--type=renderer" for a in p.cmdline()):
                best = max(best, p.memory_info().rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return best


class MemorySampler:
    def __init__(self, page: Any) -> None:
        self.cdp = page.context.new_cdp_session(page)
        self.cdp.send("Performance.enable")
        self.peak = {"js_heap": 0.0, "js_heap_buffers": 0.0, "renderer_rss": 0.0}

    def sample(self) -> None:
        try:
            metrics = {m["name"]: m["value"] for m in self.cdp.send("Performance.getMetrics")["metrics"]}
            usage = self.cdp.send("Runtime.getHeapUsage")
        except Exception:  # noqa: BLE001 - the page may be navigating
            return
        used = float(metrics.get("JSHeapUsedSize", 0))
        now = {"js_heap": used, "js_heap_buffers": used + float(usage.get("backingStorageSize", 0)), "renderer_rss": float(_renderer_rss())}
        self.peak = {k: max(self.peak[k], now[k]) for k in now}


def _page_url(base: str, page: str, uids: tuple[str, str, str], cache_mb: int, fps: int) -> str:
    study, series, sop = uids
    if page == "naive":
        return f"{base}/viewer/naive.html?study={study}&series={series}&sop={sop}&fps={fps}"
    mode = page.split("/")[1]
    return f"{base}/viewer?StudyInstanceUIDs={study}&SeriesInstanceUIDs={series}&cacheMB={cache_mb}&decode={mode}"


def _stats_js(page: str) -> str:
    return "window.naive && window.naive.stats()" if page == "naive" else "window.dcmviewer && window.dcmviewer.stats()"


def _first_image(browser: Any, url: str, page_kind: str, timeout_s: float) -> float | None:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        pg = context.new_page()
        pg.goto(url)
        pg.wait_for_function(f"(() => {{ const s = {_stats_js(page_kind)}; return s && (s.firstImageMs !== null || s.error); }})()",
                             timeout=timeout_s * 1000, polling=20)
        s = pg.evaluate(_stats_js(page_kind))
        return s.get("firstImageMs")
    finally:
        context.close()


def _cine_run(browser: Any, base: str, url: str, page_kind: str, frames: int, fps: int, timeout_s: float) -> dict[str, Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    sent0 = _bytes_sent(base)
    try:
        pg = context.new_page()
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        mem = MemorySampler(pg)
        pg.goto(url)
        js = _stats_js(page_kind)
        pg.wait_for_function(f"(() => {{ const s = {js}; return s && (s.firstImageMs !== null || s.error); }})()",
                             timeout=60_000, polling=20)
        if page_kind != "naive":
            pg.evaluate(f"window.dcmviewer.play({fps})")  # the user presses play at once
        deadline = time.monotonic() + timeout_s
        done_js = "s.allShownMs !== null" if page_kind == "naive" else "s.cine.allShownMs !== null"
        while time.monotonic() < deadline:
            mem.sample()
            s = pg.evaluate(js)
            if s.get("error") or pg.evaluate(f"(() => {{ const s = {js}; return {done_js}; }})()"):
                break
            time.sleep(0.25)
        mem.sample()
        s = pg.evaluate(js)
    finally:
        context.close()
    sent = _bytes_sent(base) - sent0
    out: dict[str, Any] = {"bytes_sent": sent, "errors": errors[:3]}
    out.update({f"peak_{k}": v for k, v in mem.peak.items()})
    if page_kind == "naive":
        out.update(first_image_ms=s["firstImageMs"], all_shown_ms=s["allShownMs"], stalls=s["stalls"], max_gap_ms=s["maxGapMs"],
                   displayed=s["displayed"], whole_bytes=s["wholeBytes"], download_ms=s["downloadMs"], error=s.get("error") or None,
                   fps=(frames / (s["allShownMs"] / 1000)) if s.get("allShownMs") else None)
    else:
        c = s["cine"]
        out.update(first_image_ms=s["firstImageMs"], first_kind=s["firstImageKind"], first_full_ms=s["firstFullMs"],
                   all_shown_ms=c["allShownMs"], stalls=c["stalls"], max_gap_ms=c["maxGapMs"], displayed=c["shownInCine"],
                   starved=c.get("starved"),
                   fps=(frames / (c["allShownMs"] / 1000)) if c.get("allShownMs") else None, measured_fps=c["measuredFps"],
                   cache=s["cache"], loader=s["loader"], draw_ms=s.get("drawMs"))
    return out


def _serve(archive_dir: Path, port: int, cache_mb: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "dcmstream.cli.main", "serve", str(archive_dir), "--port", str(port), "--cache-mb", str(cache_mb)]
    if shutil.which("dcmstream"):
        cmd = ["dcmstream", "serve", str(archive_dir), "--port", str(port), "--cache-mb", str(cache_mb)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dcmstream serve exited: {proc.stderr.read()[-2000:] if proc.stderr else ''}")
        try:
            _get(f"{base}/healthz", timeout=1)
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("dcmstream serve did not come up")


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench_viewer", description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=1000, help="frames per file (default 1000)")
    p.add_argument("--quick", action="store_true", help="smoke run: 100 frames, 3 first-image loads")
    p.add_argument("--files", default="", help=f"comma-separated subset of {[f.key for f in FILES]}")
    p.add_argument("--pages", default="", help=f"comma-separated subset of {PAGES}")
    p.add_argument("--cache-mb", type=int, default=128, help="the viewer's decoded-frame budget (cacheMB=)")
    p.add_argument("--server-cache-mb", type=int, default=64, help="dcmstream serve --cache-mb")
    p.add_argument("--fps", type=int, default=TARGET_FPS)
    p.add_argument("--first-runs", type=int, default=7, help="fresh page loads for the first-image median")
    p.add_argument("--data-dir", type=Path, default=DATA_DIR)
    p.add_argument("--results-dir", type=Path, default=None)
    args, _unknown = p.parse_known_args(argv)
    if args.quick:
        args.frames = min(args.frames, 100)
        args.first_runs = min(args.first_runs, 3)
    return args


def _mb(v: float | None) -> str:
    return "-" if v is None else f"{v / MiB:.0f}"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def main(argv: list[str] | None = None) -> int:
    args = _parse(list(argv or []))
    if not os.access(CHROMIUM, os.X_OK):
        _log(f"{CHROMIUM} is missing (apt-get install chromium): skipped")
        return 0
    from playwright.sync_api import sync_playwright

    from dcmstream.archive import Archive
    from dcmstream.samples import ensure_sample

    files = [f for f in FILES if not args.files or f.key in args.files.split(",")]
    pages = [p for p in PAGES if not args.pages or p in args.pages.split(",")]
    n = args.frames
    work = Path(tempfile.mkdtemp(prefix="bench-viewer-"))
    archive_dir = work / "archive"
    uids: dict[str, tuple[str, str, str]] = {}
    sizes: dict[str, int] = {}
    archive = Archive(archive_dir)
    try:
        for f in files:
            path = args.data_dir / f"{f.key}-{n}.dcm"
            if not path.exists():
                _log(f"generating {path} ...")
            ensure_sample(path, frames=n, **f.sample)
            sizes[f.key] = path.stat().st_size
            result = archive.ingest_file(path)
            uids[f.key] = (result.study_uid, result.series_uid, result.sop_uid)
    finally:
        archive.close()

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = _serve(archive_dir, port, args.server_cache_mb)
    results: dict[str, Any] = {}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                _first_image(browser, _page_url(base, "viewer/server", uids[files[0].key], args.cache_mb, args.fps), "viewer/server", 60)  # warm-up
                for f in files:
                    for page in pages:
                        url = _page_url(base, page, uids[f.key], args.cache_mb, args.fps)
                        key = f"{f.key}|{page}"
                        _log(f"{key}: first image x{args.first_runs}")
                        firsts = []
                        for _ in range(args.first_runs if page != "naive" else max(1, args.first_runs // 3)):
                            try:
                                ms = _first_image(browser, url, page, 120)
                            except Exception as exc:  # noqa: BLE001 - reported, not raised
                                _log(f"{key}: first image failed: {exc}")
                                ms = None
                            if ms is not None:
                                firsts.append(ms)
                        _log(f"{key}: cine at {args.fps} fps through {n} frames")
                        timeout = n / args.fps * 4 + 90
                        try:
                            run = _cine_run(browser, base, url, page, n, args.fps, timeout)
                        except Exception as exc:  # noqa: BLE001
                            run = {"error": f"{type(exc).__name__}: {exc}"}
                        run["first_image_runs_ms"] = firsts
                        run["first_image_median_ms"] = statistics.median(firsts) if firsts else None
                        results[key] = run
                        _log(f"{key}: {json.dumps({k: v for k, v in run.items() if k not in ('cache', 'loader')}, default=str)[:600]}")
            finally:
                browser.close()
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(work, ignore_errors=True)

    # -- report ------------------------------------------------------------------------------
    missed: list[str] = []
    rows = []
    for f in files:
        for page in pages:
            r = results.get(f"{f.key}|{page}", {})
            first = r.get("first_image_median_ms")
            if page.startswith("viewer"):
                if first is None or first > FIRST_IMAGE_MAX_MS:
                    missed.append(f"{f.key} {page}: first image {_ms(first)} ms > {FIRST_IMAGE_MAX_MS:.0f}")
                if n >= 1000 and (r.get("peak_js_heap_buffers") or 0) > PEAK_HEAP_MAX_MB * MiB:
                    missed.append(f"{f.key} {page}: peak JS heap {_mb(r.get('peak_js_heap_buffers'))} MB > {PEAK_HEAP_MAX_MB:.0f}")
                if r.get("all_shown_ms") is None or (r.get("stalls") or 0) > 0:
                    missed.append(f"{f.key} {page}: cine {r.get('stalls')} stalls after the first second "
                                  f"({r.get('starved')} waiting for a frame)")
            firsts = r.get("first_image_runs_ms") or []
            rows.append([
                f.key, page,
                f"{_ms(first)} ({_ms(min(firsts)) if firsts else '-'}-{_ms(max(firsts)) if firsts else '-'})",
                _ms(r.get("first_full_ms")) if page != "naive" else f"{_ms(r.get('download_ms'))} dl",
                f"{(r['all_shown_ms'] / 1000):.1f}" if r.get("all_shown_ms") else "-",
                f"{r['fps']:.1f}" if r.get("fps") else "-",
                f"{r.get('stalls', '-')}" + (f" ({r['starved']})" if r.get("starved") is not None else ""), _ms(r.get("max_gap_ms")),
                _mb(r.get("peak_js_heap")), _mb(r.get("peak_js_heap_buffers")), _mb(r.get("peak_renderer_rss")),
                _mb(r.get("bytes_sent")),
                r.get("error") or "",
            ])
    info = machine_info()
    md = [
        "# Viewer benchmark (bench/bench_viewer.py)",
        "",
        f"{info['date']} · {info['cpu_count']} cores ({info['cpu_model']}) · {info['ram_gib']} GiB · load {info['loadavg']} "
        f"(shared machine: other agents' jobs run alongside; the lead re-runs final numbers)",
        "",
        f"Headless Debian chromium ({CHROMIUM}) on loopback, `dcmstream serve` (server cache {args.server_cache_mb} MB); "
        f"{n}-frame files; viewer budget cacheMB={args.cache_mb}; cine at {args.fps} fps started on the first image; "
        f"first image = median of {args.first_runs} cold loads (min-max), from navigation start.",
        "",
        markdown_table(
            ["file", "page", "first image ms", "first full ms", "all frames shown s", "cine fps", "stalls >1 s (starved)",
             "max gap ms", "peak JSHeapUsed MB", "peak JS heap + ArrayBuffers MB", "peak renderer RSS MB", "MB sent", "error"],
            rows,
        ),
        "",
        "Files: " + "; ".join(f"{f.key}: {f.title}, {sizes[f.key] / MiB:.0f} MB" for f in files) + ".",
        "",
        "Columns: *peak JSHeapUsed* is CDP `Performance.getMetrics` JSHeapUsedSize (V8 objects only: ArrayBuffer contents "
        "are outside it); *JS heap + ArrayBuffers* adds `Runtime.getHeapUsage().backingStorageSize` (decoded frames, the "
        "naive page's whole file) and is the figure held to the 200 MB target; *renderer RSS* is the page's renderer "
        "process (workers included). *MB sent*: the server's response bytes for the whole run (page, QIDO, frames, "
        "renders). *stalls*: gaps longer than two frame intervals after the first second of cine; *(starved)*: "
        "how many of them waited for a frame not yet decoded (the others are the page not getting animation frames "
        "on a busy machine). *first full*: the first full-quality frame in the cine run (the first image can be a "
        "browser-decoded stored JPEG, or a low-resolution rendition).",
        "",
        "Reading: *viewer/server* vs *viewer/wasm* is the decode choice (server-decoded octet-stream frames vs "
        "stored frames decoded by WASM in workers); the viewer's default `decode=auto` takes WASM wherever a codec "
        "exists (both files here), the server for the rest. *naive* holds the whole file plus every decoded frame.",
        "",
        "Targets: " + ("all met." if not missed else "MISSED: " + "; ".join(missed)),
    ]
    data = {"machine": info, "versions": versions(["dcmstream", "playwright", "starlette", "uvicorn", "imagecodecs"]),
            "args": {k: str(v) for k, v in vars(args).items()}, "results": results, "missed": missed}
    md_path, _ = write_results(NAME + ("-quick" if args.quick else ""), "\n".join(md), data, args.results_dir)
    _log(f"wrote {md_path}")
    print("\n".join(md))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
