"""DICOM opened where it lies: requests, bytes and latency of open + frames over HTTP and S3.

Files (generated once into bench/data/ by :func:`dcmstream.samples.ensure_sample`, the
same as bench_frames'): the 1,000-frame 512x512 16-bit enhanced CT, native
(``ct-native``), JPEG-LS with a Basic Offset Table (``ct-jpegls-bot``) and HTJ2K RPCL
with a BOT (``ct-htj2k-bot``).

Transports, both on loopback, each server a process of its own (no shared GIL):

* ``http``: the range-capable test server (tests/range_server.py); it counts every
  request and body byte it sends, so every reader's requests and bytes are measured the
  same way, from the server side. ``http+20ms`` adds 20 ms before each answer (a WAN
  round trip) to show what request counts cost in time.
* ``s3``: moto's S3 server; requests and bytes are dcmstream's own counters
  (``RangedSource.fetched``; moto counts nothing), peers are timed only.

Readers:

* ``dcmstream``: ``dcmstream.open(url)`` cold (no open cache), then frames;
  ``dcmstream-warm``: the second open of the URL (the open cache: one HEAD);
  ``dcmstream-local``: ``dcmstream.open(path)`` of the local file (latency anchor).
* ``fsspec+pydicom``: ``fsspec.open(url)`` (fsspec's HTTP file system on aiohttp, its
  default 5 MiB read-ahead blocks), ``pydicom.dcmread(f, stop_before_pixels=True)`` to
  open, ``pydicom.pixels.pixel_array(f, index=i)`` per frame (pydicom keeps no index:
  each call parses the header and offset table again, from fsspec's cache where it can).
* ``fsspec+highdicom``: ``highdicom.imread(f, lazy_frame_retrieval=True)`` over the same
  fsspec file, ``get_stored_frame(i)``.
* ``download``: GET the whole object into a temporary file, then open it locally.

Targets (issue 16): open <= 3 requests and <= 256 KiB with a BOT; a frame = 1 request of
its bytes + <= 64 KiB. Latency: median over ``--frames`` random frames (seeded).

    python bench/run.py --only remote [--quick] [--frames 40]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from .common import DATA_DIR, REPO, MotoProcess, free_port, machine_info, markdown_table, summarize, versions, write_results

KIB = 1024
SEED = 11
FILES = {
    "ct-native": dict(syntax="explicit", kind="ct"),
    "ct-jpegls-bot": dict(syntax="jpeg-ls", kind="ct", offset_table="bot"),
    "ct-htj2k-bot": dict(syntax="htj2k-rpcl", kind="ct", offset_table="bot"),
}
OPEN_REQUESTS, OPEN_BYTES, FRAME_EXTRA = 3, 256 * KIB, 64 * KIB
OPENS = 3  # opens timed per URL and reader (median)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class HttpServer:
    """tests/range_server.py as a child process, with its counters at /__stats."""

    def __init__(self, files: dict[str, Path], delay: float = 0.0) -> None:
        self.port = free_port()
        args = [sys.executable, "-m", "tests.range_server", "--port", str(self.port), "--delay", str(delay)]
        args += [f"/{name}.dcm={path}" for name, path in files.items()]
        self.proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the HTTP server did not start")

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}.dcm"

    def stats(self, reset: bool = False) -> dict[str, int]:
        path = "/__reset" if reset else "/__stats"
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
            return json.loads(r.read())

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Counter:
    """Requests/bytes of one measurement: the HTTP server's counters, or dcmstream's own."""

    def __init__(self, server: HttpServer | None) -> None:
        self.server = server

    def reset(self) -> None:
        if self.server is not None:
            self.server.stats(reset=True)

    def read(self, source: Any = None) -> tuple[int | None, int | None]:
        if self.server is not None:
            s = self.server.stats()
            return s["requests"], s["body_bytes"]
        fetched = getattr(source, "fetched", None)
        return (fetched.requests, fetched.bytes) if fetched is not None else (None, None)


def _timed(fn: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def measure_dcmstream(url: str, counter: Counter, seq: list[int], *, warm: bool, cache_dir: Path) -> dict[str, Any]:
    import dcmstream
    from dcmstream.io.open_cache import OpenCache
    from dcmstream.io.remote import open_url

    cache: OpenCache | bool = OpenCache(cache_dir) if warm else False
    if warm:  # a first open fills the open cache
        with dcmstream.open(open_url(url, open_cache=cache), cache=False, close_source=True):
            pass
    # The open time is the median of OPENS opens (the machine is shared: one can be an outlier);
    # the counts are those of the last one (every open of the URL asks for the same ranges).
    open_times = []
    for _ in range(OPENS - 1):
        inst, t = _timed(lambda: dcmstream.open(open_url(url, open_cache=cache), cache=False, close_source=True))
        inst.close()
        open_times.append(t)
    counter.reset()
    inst, t_open = _timed(lambda: dcmstream.open(open_url(url, open_cache=cache), cache=False, close_source=True))
    open_times.append(t_open)
    t_open = float(np.median(open_times))
    try:
        source = inst.source
        open_req, open_bytes = counter.read(source)
        header = inst.pixel_element.value_offset if inst.pixel_element else None
        base = counter.read(source)
        _, t_first = _timed(lambda: inst.frame(0))
        after = counter.read(source)
        first = (None, None) if base[0] is None else (after[0] - base[0], after[1] - base[1])
        per_req, per_bytes, per_over, times = [], [], [], []
        for i in seq:
            before = counter.read(source)
            _, t = _timed(lambda i=i: inst.frame(i))
            now = counter.read(source)
            times.append(t)
            if before[0] is not None:
                per_req.append(now[0] - before[0])
                per_bytes.append(now[1] - before[1])
                per_over.append(now[1] - before[1] - inst.frame_index.span(i)[1])
        return {
            "open_requests": open_req, "open_bytes": open_bytes, "open_ms": t_open * 1e3, "header_bytes": header,
            "offset_table": inst.frame_index.kind.value,
            "first_frame_requests": first[0], "first_frame_bytes": first[1], "first_frame_ms": t_first * 1e3,
            "frame_requests_max": max(per_req) if per_req else None,
            "frame_bytes_mean": float(np.mean(per_bytes)) if per_bytes else None,
            "frame_extra_bytes_max": max(per_over) if per_over else None,
            "frame_ms": summarize(times),
        }
    finally:
        inst.close()


def measure_local(path: Path, seq: list[int]) -> dict[str, Any]:
    import dcmstream

    inst, t_open = _timed(lambda: dcmstream.open(path, cache=False))
    with inst:
        _, t_first = _timed(lambda: inst.frame(0))
        times = [_timed(lambda i=i: inst.frame(i))[1] for i in seq]
    return {"open_ms": t_open * 1e3, "first_frame_ms": t_first * 1e3, "frame_ms": summarize(times)}


def measure_fsspec(url: str, counter: Counter, seq: list[int], reader: str, cap_s: float) -> dict[str, Any]:
    import fsspec

    counter.reset()
    f = fsspec.open(url, "rb").open()
    try:
        if reader == "fsspec+pydicom":
            import pydicom
            from pydicom.pixels import pixel_array

            def opener() -> Any:
                return pydicom.dcmread(f, stop_before_pixels=True)

            def frame(h: Any, i: int) -> Any:
                f.seek(0)
                return pixel_array(f, index=i)
        else:
            import highdicom as hd

            def opener() -> Any:
                return hd.imread(f, lazy_frame_retrieval=True)

            def frame(h: Any, i: int) -> Any:
                return h.get_stored_frame(i + 1)

        handle, t_open = _timed(opener)
        open_req, open_bytes = counter.read()
        base = counter.read()
        _, t_first = _timed(lambda: frame(handle, 0))
        after = counter.read()
        times, per_req, per_bytes = [], [], []
        start = time.perf_counter()
        for i in seq:
            before = counter.read()
            _, t = _timed(lambda i=i: frame(handle, i))
            now = counter.read()
            times.append(t)
            if before[0] is not None:
                per_req.append(now[0] - before[0])
                per_bytes.append(now[1] - before[1])
            if time.perf_counter() - start > cap_s:
                break
        return {
            "open_requests": open_req, "open_bytes": open_bytes, "open_ms": t_open * 1e3,
            "first_frame_requests": None if base[0] is None else after[0] - base[0],
            "first_frame_bytes": None if base[0] is None else after[1] - base[1], "first_frame_ms": t_first * 1e3,
            "frame_requests_max": max(per_req) if per_req else None,
            "frame_bytes_mean": float(np.mean(per_bytes)) if per_bytes else None,
            "frame_ms": summarize(times),
        }
    finally:
        f.close()


def measure_download(url: str, counter: Counter, seq: list[int]) -> dict[str, Any]:
    import dcmstream
    from dcmstream.io.remote import open_url

    counter.reset()

    def fetch_and_open() -> Any:
        src = open_url(url, open_cache=False)
        tmp = tempfile.NamedTemporaryFile(prefix="bench-remote-", suffix=".dcm", delete=False)  # noqa: SIM115
        step = 8 << 20
        with tmp:
            for pos in range(0, src.size, step):
                tmp.write(src.read_at(pos, step))
        total = src.fetched.bytes
        requests = src.fetched.requests
        src.close()
        return dcmstream.open(tmp.name, cache=False), tmp.name, requests, total

    (inst, name, requests, total), t_open = _timed(fetch_and_open)
    try:
        counted = counter.read()
        _, t_first = _timed(lambda: inst.frame(0))
        times = [_timed(lambda i=i: inst.frame(i))[1] for i in seq]
        return {
            "open_requests": counted[0] if counted[0] is not None else requests,
            "open_bytes": counted[1] if counted[1] is not None else total,
            "open_ms": t_open * 1e3, "first_frame_requests": 0, "first_frame_bytes": 0, "first_frame_ms": t_first * 1e3,
            "frame_requests_max": 0, "frame_bytes_mean": 0.0, "frame_ms": summarize(times),
        }
    finally:
        inst.close()
        os.unlink(name)


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=40, help="random frames timed per reader (default 40)")
    p.add_argument("--quick", action="store_true", help="smoke run: 10 frames, no 20 ms transport, no native CT")
    p.add_argument("--data-dir", type=Path, default=DATA_DIR)
    p.add_argument("--no-s3", action="store_true", help="skip moto's S3 server")
    p.add_argument("--out", default=None, help="output path without suffix (default results/remote)")
    args, _ = p.parse_known_args(argv)
    return args


def _kib(x: Any) -> str:
    return "-" if x is None else f"{x / KIB:,.1f}"


def _ms(d: dict[str, Any]) -> str:
    fm = d.get("frame_ms") or {}
    return "-" if not fm.get("n") else f"{fm['median']:.2f}"


def main(argv: list[str] | None = None) -> int:
    args = _parse(list(sys.argv[1:] if argv is None else argv))
    os.environ.setdefault("DCMSTREAM_INDEX_CACHE", "off")
    from dcmstream.samples import ensure_sample

    n_frames = 10 if args.quick else args.frames
    names = [k for k in FILES if not (args.quick and k == "ct-native")]
    paths: dict[str, Path] = {}
    for key in names:
        path = args.data_dir / f"{key}-1000.dcm"
        if not path.exists():
            _log(f"generating {path} ...")
        paths[key] = ensure_sample(path, frames=1000, **FILES[key])
    seq = [int(i) for i in np.random.default_rng(SEED).permutation(1000)[:n_frames]]
    cache_dir = Path(tempfile.mkdtemp(prefix="bench-remote-cache-"))
    results: dict[str, Any] = {"machine": machine_info(), "versions": versions(
        ["dcmstream", "obstore", "fsspec", "aiohttp", "pydicom", "highdicom", "moto"]), "frames_timed": n_frames, "files": {}}

    # The first obstore request of a process starts its runtime and TLS roots (once, ~0.1 s):
    # measured here, then out of the way of the per-URL numbers.
    first = HttpServer({"warmup": paths[names[0]]})
    try:
        from dcmstream.io.remote import open_url

        _, t_first_call = _timed(lambda: open_url(first.url("warmup"), open_cache=False).close())
        results["first_request_in_process_ms"] = t_first_call * 1e3
    finally:
        first.close()

    transports: list[tuple[str, float]] = [("http", 0.0)] + ([] if args.quick else [("http+20ms", 0.020)])
    for key in names:
        path = paths[key]
        res: dict[str, Any] = {"size": path.stat().st_size, "local": measure_local(path, seq)}
        for transport, delay in transports:
            _log(f"{key} over {transport} ...")
            server = HttpServer({key: path}, delay=delay)
            try:
                counter = Counter(server)
                url = server.url(key)
                t: dict[str, Any] = {
                    "dcmstream": measure_dcmstream(url, counter, seq, warm=False, cache_dir=cache_dir),
                    "dcmstream-warm": measure_dcmstream(url, counter, seq[:3], warm=True, cache_dir=cache_dir),
                    "download": measure_download(url, counter, seq),
                }
                cap = 20.0 if delay else 60.0
                for reader in ("fsspec+pydicom", "fsspec+highdicom"):
                    try:
                        t[reader] = measure_fsspec(url, counter, seq, reader, cap)
                    except Exception as exc:  # a peer that cannot read this file: say so, go on
                        t[reader] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
                res[transport] = t
            finally:
                server.close()
        results["files"][key] = res

    if not args.no_s3:
        moto = MotoProcess()
        try:
            os.environ["AWS_ENDPOINT_URL"] = moto.url
            bucket = moto.bucket()
            client = moto.client()
            for key in names:
                _log(f"{key} over s3 (moto) ...")
                client.upload_file(str(paths[key]), bucket, f"{key}.dcm")
                url = f"s3://{bucket}/{key}.dcm"
                counter = Counter(None)
                results["files"][key]["s3"] = {
                    "dcmstream": measure_dcmstream(url, counter, seq, warm=False, cache_dir=cache_dir),
                    "dcmstream-warm": measure_dcmstream(url, counter, seq[:3], warm=True, cache_dir=cache_dir),
                    "download": measure_download(url, counter, seq),
                }
        finally:
            os.environ.pop("AWS_ENDPOINT_URL", None)
            moto.close()

    md, missed = _markdown(results)
    out = Path(args.out) if args.out else None
    write_results(out.name if out else "remote", md, results, out.parent if out else None)
    print(md)
    return 1 if missed else 0


def _markdown(data: dict[str, Any]) -> tuple[str, list[str]]:
    lines = ["# Remote sources: requests, bytes and latency (bench/bench_remote.py)", ""]
    m = data["machine"]
    lines.append(f"{m['date']}, {m['cpu_count']} CPUs ({m['cpu_model']}), Python {m['python']}; "
                 f"{data['frames_timed']} random frames per reader; versions {data['versions']}.")
    lines.append("")
    lines.append(f"open ms: median of {OPENS} opens; the first request of a process also starts obstore's runtime "
                 f"({data.get('first_request_in_process_ms', float('nan')):.0f} ms here, once). S3 is moto's server "
                 "(Python; it slices each ranged GET out of the whole object in memory), so S3 times are moto's, not "
                 "the network's; moto counts nothing, so S3 requests/bytes are dcmstream's own counters.")
    lines.append("")
    missed: list[str] = []
    rows = []
    for key, res in data["files"].items():
        local = res["local"]
        for transport in ("http", "http+20ms", "s3"):
            if transport not in res:
                continue
            for reader, d in res[transport].items():
                if "error" in d:
                    rows.append([key, transport, reader, "error", "", "", "", "", "", "", d["error"][:60]])
                    continue
                rows.append([
                    key, transport, reader, d.get("open_requests", "-"), _kib(d.get("open_bytes")), f"{d['open_ms']:.1f}",
                    d.get("first_frame_requests", "-"), _kib(d.get("first_frame_bytes")),
                    d.get("frame_requests_max", "-"), _kib(d.get("frame_bytes_mean")), _ms(d),
                ])
        rows.append([key, "local", "dcmstream-local", 0, "0", f"{local['open_ms']:.1f}", 0, "0", 0, "0", _ms(local)])
        # Targets: on loopback HTTP, dcmstream cold.
        d = res["http"]["dcmstream"]
        bot = d["offset_table"] == "bot"
        if bot and d["open_requests"] > OPEN_REQUESTS:
            missed.append(f"{key}: open took {d['open_requests']} requests (target {OPEN_REQUESTS})")
        if bot and d["open_bytes"] > OPEN_BYTES:
            why = f" (its header alone is {d['header_bytes'] / KIB:.0f} KiB)" if d["header_bytes"] > OPEN_BYTES else ""
            missed.append(f"{key}: open fetched {d['open_bytes'] / KIB:.0f} KiB (target 256 KiB){why}")
        if d["frame_requests_max"] is not None and d["frame_requests_max"] > 1:
            missed.append(f"{key}: a frame took {d['frame_requests_max']} requests (target 1)")
        if d["frame_extra_bytes_max"] is not None and d["frame_extra_bytes_max"] > FRAME_EXTRA:
            missed.append(f"{key}: a frame fetched {d['frame_extra_bytes_max'] / KIB:.0f} KiB beyond its bytes (target 64)")
    lines.append(markdown_table(
        ["file", "transport", "reader", "open req", "open KiB", "open ms", "frame 1 req", "frame 1 KiB",
         "frame req (max)", "KiB/frame (mean)", "ms/frame (median)"], rows, "lll" + "r" * 8))
    lines.append("")
    lines.append("Targets (issue 16, dcmstream cold over loopback HTTP): open <= 3 requests and <= 256 KiB with a BOT; "
                 "a frame = 1 request of its bytes + <= 64 KiB.")
    lines.append("")
    lines += [f"* missed: {x}" for x in missed] or ["* all met"]
    return "\n".join(lines), missed


if __name__ == "__main__":
    if __package__ in (None, ""):
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
