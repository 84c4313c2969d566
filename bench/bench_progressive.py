"""Progressive HTJ2K benchmark: first and final render of a frame, progressive vs today's viewer.

Files (generated once into bench/data/):

* a mammography-like image, 3000 x 4000 (columns x rows), 16 bits allocated, 14 stored,
  HTJ2K lossless RPCL (1.2.840.10008.1.2.4.202, OpenJPH through imagecodecs, TLM markers):
  a breast-shaped region with smooth tissue density, fibroglandular texture and noise;
* the 1,000-frame 512 x 512 CT of the samples package, written as HTJ2K lossless RPCL.

Both are ingested into an archive served by ``dcmstream serve`` (a subprocess) and also put
on a plain range-capable HTTP server (tests/range_server.py) for the ``?url=`` path. Headless
Debian chromium, its link throttled over CDP (``Network.emulateNetworkConditions``: ``--mbit``
down, ``--latency-ms``), opens a deep link (or ``?url=``) cold, ``--runs`` times:

* ``first render``: navigation start to the first image on the canvas (progressive: the
  reduced-resolution decode of the first range; today's viewer: the server-rendered
  low-resolution JPEG it asks for when the full frame is late, or the full frame);
* ``final render``: navigation start to the full-quality frame on the canvas.

Pages: ``archive/today`` (``progressive=0``: the whole stored frame, as before this change),
``archive/progressive`` (a first range, then the rest), ``url/today`` and ``url/progressive``
(the same file opened with ``?url=``, no archive).

    python bench/run.py --only progressive [--quick] [--mbit 20] [--latency-ms 20] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_viewer import CHROMIUM, CHROMIUM_ARGS, _serve
from bench.common import DATA_DIR, MiB, free_port, machine_info, markdown_table, versions, write_results

NAME = "progressive"
PAGES = ["archive/today", "archive/progressive", "url/today", "url/progressive"]
#: The CT's 512x512 frames are below the viewer's progressive threshold (2 MiB decoded):
#: measured also with a forced 16 KiB first range.
FORCED = {"ct": ["archive/forced-16k", "url/forced-16k"]}


def _log(msg: str) -> None:
    print(f"[bench_progressive] {msg}", file=sys.stderr, flush=True)


def mammo_pixels(rows: int = 4000, columns: int = 3000, seed: int = 7) -> np.ndarray:
    """A mammography-like 14-bit image: breast region (half ellipse at the chest wall, skin
    line falloff), smooth density, fibroglandular texture, quantum noise; air around it."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:columns].astype(np.float32)
    cy, ry, rx = rows / 2, rows * 0.46, columns * 0.82
    r = np.sqrt(((y - cy) / ry) ** 2 + (x / rx) ** 2)
    inside = np.clip((1.0 - r) * 25.0, 0.0, 1.0)  # soft skin edge
    thickness = np.sqrt(np.clip(1.0 - r**2, 0.0, 1.0))
    # Texture: coarse random field upsampled (cheap low-pass), plus a finer one.
    def field(step: int) -> np.ndarray:
        small = rng.standard_normal((rows // step + 2, columns // step + 2)).astype(np.float32)
        big = np.kron(small, np.ones((step, step), np.float32))[:rows, :columns]
        k = np.ones(step, np.float32) / step  # box blur along both axes
        big = np.apply_along_axis(lambda v: np.convolve(v, k, mode="same"), 0, big)
        return np.apply_along_axis(lambda v: np.convolve(v, k, mode="same"), 1, big)

    texture = 0.6 * field(64) + 0.3 * field(16)
    tissue = 5200 + 5200 * thickness + 1100 * texture * thickness
    noise = rng.normal(0, 35, (rows, columns)).astype(np.float32)
    img = 300 + inside * (tissue - 300) + noise
    return np.clip(img, 0, (1 << 14) - 1).astype(np.uint16)


def write_mammo(path: Path, rows: int = 4000, columns: int = 3000) -> Path:
    """The mammography-like image as an HTJ2K lossless RPCL DICOM file (written once)."""
    if path.exists():
        return path
    import imagecodecs
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import generate_uid

    from dcmstream.codecs.syntaxes import uid_of

    px = mammo_pixels(rows, columns)
    codestream = bytes(imagecodecs.htj2k_encode(px, reversible=True, tlm=True))
    ts = uid_of("htj2k-rpcl")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography X-Ray (presentation)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ts
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = "Bench^Mammo", "BENCH-MG", "MG"
    ds.StudyDescription, ds.SeriesDescription = "progressive HTJ2K bench", "synthetic MG 3000x4000"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 14, 13, 0
    ds.WindowCenter, ds.WindowWidth = 8000, 8000
    ds.PixelData = encapsulate([codestream])
    ds["PixelData"].VR = "OB"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    ds.save_as(tmp, enforce_file_format=True)
    tmp.replace(path)
    return path


def _throttle(page: Any, mbit: float, latency_ms: float) -> None:
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    rate = mbit * 1e6 / 8
    cdp.send("Network.emulateNetworkConditions",
             {"offline": False, "latency": latency_ms, "downloadThroughput": rate, "uploadThroughput": rate})


def _one(browser: Any, url: str, mbit: float, latency_ms: float, timeout_s: float) -> dict[str, Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    try:
        pg = context.new_page()
        if mbit > 0:
            _throttle(pg, mbit, latency_ms)
        pg.goto(url)
        pg.wait_for_function("(() => { const s = window.dcmviewer && window.dcmviewer.stats();"
                             " return s && (s.firstFullMs !== null || s.error); })()", timeout=timeout_s * 1000, polling=10)
        s = pg.evaluate("window.dcmviewer.stats()")
        partial = (s["loader"].get("partials") or [None])[0]
        return {"first_ms": s["firstImageMs"], "first_kind": s["firstImageKind"], "final_ms": s["firstFullMs"],
                "error": s.get("error") or None, "partial": partial}
    finally:
        context.close()


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench_progressive", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="100-frame CT, 1 run each")
    p.add_argument("--runs", type=int, default=3, help="cold page loads per page (median)")
    p.add_argument("--mbit", type=float, default=20.0, help="throttled download rate, Mbit/s (0: no throttling)")
    p.add_argument("--latency-ms", type=float, default=20.0)
    p.add_argument("--data-dir", type=Path, default=DATA_DIR)
    p.add_argument("--results-dir", type=Path, default=None)
    args, _ = p.parse_known_args(argv)
    if args.quick:
        args.runs = 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(list(argv or []))
    if not os.access(CHROMIUM, os.X_OK):
        _log(f"{CHROMIUM} is missing: skipped")
        return 0
    from playwright.sync_api import sync_playwright

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from dcmstream.archive import Archive
    from dcmstream.samples import ensure_sample
    from tests.range_server import range_server

    ct_frames = 100 if args.quick else 1000
    files = {
        "mammo": (write_mammo(args.data_dir / "mg-htj2k-rpcl-3000x4000.dcm"), "MG 3000x4000 16-bit (14 stored), HTJ2K lossless RPCL, 1 frame"),
        "ct": (args.data_dir / f"ct-htj2k-rpcl-{ct_frames}.dcm", f"CT 512x512 16-bit, HTJ2K lossless RPCL, {ct_frames} frames"),
    }
    ensure_sample(files["ct"][0], frames=ct_frames, syntax="htj2k-rpcl", kind="ct", offset_table="bot")
    work = Path(tempfile.mkdtemp(prefix="bench-progressive-"))
    archive = Archive(work / "archive")
    uids: dict[str, tuple[str, str]] = {}
    try:
        for key, (path, _) in files.items():
            r = archive.ingest_file(path)
            uids[key] = (r.study_uid, r.series_uid)
    finally:
        archive.close()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = _serve(work / "archive", port, 256)
    results: dict[str, Any] = {}
    try:
        with range_server({f"{k}.dcm": p for k, (p, _) in files.items()}) as http, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                def url_of(key: str, page: str) -> str:
                    flag = "&progressive=0" if page.endswith("today") else "&progressive=16384" if page.endswith("forced-16k") else ""
                    if page.startswith("url/"):
                        return f"{base}/viewer?url={http.url(key + '.dcm')}&cacheMB=256{flag}"
                    study, series = uids[key]
                    return f"{base}/viewer?StudyInstanceUIDs={study}&SeriesInstanceUIDs={series}&cacheMB=256{flag}"

                _one(browser, url_of("ct", "archive/today"), 0, 0, 120)  # warm-up (server, codecs)
                for key in files:
                    for page in PAGES + FORCED.get(key, []):
                        runs = []
                        for _ in range(args.runs):
                            try:
                                runs.append(_one(browser, url_of(key, page), args.mbit, args.latency_ms, 300))
                            except Exception as exc:  # noqa: BLE001 - reported in the table
                                runs.append({"error": f"{type(exc).__name__}: {exc}"[:200]})
                        ok = [r for r in runs if r.get("final_ms") is not None]
                        results[f"{key}|{page}"] = {
                            "runs": runs,
                            "first_ms": statistics.median(r["first_ms"] for r in ok) if ok else None,
                            "final_ms": statistics.median(r["final_ms"] for r in ok) if ok else None,
                            "first_kind": ok[0]["first_kind"] if ok else None,
                            "partial": ok[0].get("partial") if ok else None,
                        }
                        _log(f"{key} {page}: {results[f'{key}|{page}']}")
            finally:
                browser.close()
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(work, ignore_errors=True)

    rows = []
    for key in files:
        for page in PAGES + FORCED.get(key, []):
            r = results.get(f"{key}|{page}", {})
            p = r.get("partial")
            rows.append([
                key, page,
                "-" if r.get("first_ms") is None else f"{r['first_ms']:.0f}",
                r.get("first_kind") or "-",
                "-" if r.get("final_ms") is None else f"{r['final_ms']:.0f}",
                f"{p['width']}x{p['height']} from {p['bytes'] / 1024:.0f} of {p['total'] / 1024:.0f} KiB" if p else "-",
                "; ".join(sorted({x.get('error') or '' for x in r.get("runs", [])} - {""}))[:80],
            ])
    info = machine_info()
    link = f"{args.mbit:g} Mbit/s, {args.latency_ms:g} ms latency" if args.mbit > 0 else "unthrottled loopback"
    md = [
        "# Progressive HTJ2K benchmark (bench/bench_progressive.py)",
        "",
        f"{info['date']} · {info['cpu_count']} cores ({info['cpu_model']}) · load {info['loadavg']} (shared machine)",
        "",
        f"Headless Debian chromium, link throttled over CDP ({link}); `dcmstream serve` on loopback and a plain "
        f"range-capable HTTP server for `?url=`; median of {args.runs} cold page loads; times from navigation start.",
        "",
        markdown_table(["file", "page", "first render ms", "first image", "final render ms", "reduced image", "error"], rows),
        "",
        "Files: " + "; ".join(f"{k}: {t}, {p.stat().st_size / MiB:.1f} MB" for k, (p, t) in files.items()) + ".",
        "",
        "*today*: `progressive=0`, the viewer as before (whole stored frame; from the archive it also asks the server "
        "for a 256-px rendered JPEG when the frame is late: first image `low-res`). *progressive*: the default; for frames of >= 2 MiB "
        "decoded (the mammogram, not the CT) a first range of the frame (1/32 of the decoded size, 16-128 KiB) decoded by OpenJPH at reduced resolution (first image `partial`), "
        "then the rest of the frame (one more range), decoded in full. *forced-16k*: `progressive=16384` on the CT.",
    ]
    data = {"machine": info, "versions": versions(["dcmstream", "playwright", "imagecodecs"]),
            "args": {k: str(v) for k, v in vars(args).items()}, "results": results}
    md_path, _ = write_results(NAME + ("-quick" if args.quick else ""), "\n".join(md), data, args.results_dir)
    _log(f"wrote {md_path}")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
