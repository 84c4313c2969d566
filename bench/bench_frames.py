"""Frame engine benchmark: random frame access on 1,000-frame files, side by side.

For each file (generated once into bench/data/ by :func:`dcmstream.samples.ensure_sample`)
every reader runs in a fresh interpreter, so its peak RSS is attributable:

* ``pydicom-full``    ``pydicom.dcmread(path).pixel_array`` (the whole file; the anchor)
* ``pydicom-index``   ``pydicom.pixels.pixel_array(path, index=i)`` (re-parses the file per call)
* ``highdicom-lazy``  ``highdicom.imread(path, lazy_frame_retrieval=True).get_stored_frame(i)``
* ``dcmstream``       ``dcmstream.open(path, cache=False).frame(i)`` (the pure engine)
* ``dcmstream-cache`` ``dcmstream.open(path).frame(i)`` (the default FrameCache)
* ``raw codec``       imagecodecs on ``inst.encoded_frame(i)`` already in memory (the limit),
  measured inside the ``dcmstream`` worker, interleaved frame by frame with
  ``inst.frame(i)`` so that machine noise hits both alike.

Every reader gets the same random frame sequence (without repeats, so caches cannot
help). The files are in the page cache (they were just written or read): this measures
the engines, not the disk. Run through the driver: ``python bench/run.py --only frames``.
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    DATA_DIR,
    MiB,
    PeakRss,
    io_counters,
    machine_info,
    markdown_table,
    run_worker,
    summarize,
    versions,
    worker_main,
    write_results,
)

NAME = "frames"
SEED = 20240115
RANDOM_FRAMES = 200  # random-frame sample per fast reader
SLOW_RANDOM_FRAMES = 50  # ... for pydicom pixel_array(index=), which re-parses per call
TIME_CAP_S = 30.0  # per reader and file: stop the random sample early past this
INTERLEAVE_PASSES = 3  # passes over the sequence for the raw-codec comparison
INTERLEAVE_CAP_S = 20.0
WARM_OPENS = 7
HIT_FRAMES = 20  # cache-hit latency: re-read this many of the most recent frames

# Targets (issue 2, "Benchmark").
RAW_RATIO_MAX = 1.15
PYDICOM_SPEEDUP_MIN = 3.0
NATIVE_FRAME_MAX_MS = 0.3
SCAN_RSS_MAX_MB = 80.0
OPEN_FIRST_BUDGET_MS = 10.0


@dataclass(frozen=True)
class FileSpec:
    key: str
    title: str
    sample: dict[str, Any]
    offset_table: bool = True  # the frame index comes without walking the fragments
    speedup_target: bool = False  # >= 3x pydicom pixel_array(index=)
    native: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


FILES = [
    FileSpec("ct-native", "CT 512x512x16 native (explicit VR LE)", dict(syntax="explicit", kind="ct"), native=True),
    FileSpec(
        "ct-jpegls-bot", "CT 512x512x16 JPEG-LS lossless, BOT",
        dict(syntax="jpeg-ls", kind="ct", offset_table="bot"), speedup_target=True,
    ),
    FileSpec(
        "ct-j2k-nobot", "CT 512x512x16 JPEG 2000 lossless, no BOT",
        dict(syntax="j2k-lossless", kind="ct", offset_table="none"), offset_table=False,
    ),
    FileSpec("ct-htj2k-bot", "CT 512x512x16 HTJ2K lossless RPCL, BOT", dict(syntax="htj2k-rpcl", kind="ct", offset_table="bot")),
    FileSpec(
        "us-jpeg-bot", "US 600x800 RGB JPEG baseline (YBR_FULL_422), BOT",
        dict(syntax="jpeg-baseline", kind="us", rows=600, columns=800, offset_table="bot"), speedup_target=True,
    ),
]
READERS = ["pydicom-full", "pydicom-index", "highdicom-lazy", "dcmstream", "dcmstream-cache"]
READER_TITLES = {
    "pydicom-full": "pydicom dcmread().pixel_array (all frames)",
    "pydicom-index": "pydicom pixel_array(path, index=i)",
    "highdicom-lazy": "highdicom imread(lazy).get_stored_frame",
    "dcmstream": "dcmstream open(cache=False).frame",
    "dcmstream-cache": "dcmstream open().frame (default cache)",
    "raw": "raw codec, bytes in memory (limit)",
}
VERSIONED = [
    "dcmstream", "pydicom", "numpy", "imagecodecs", "highdicom", "pylibjpeg", "pylibjpeg-libjpeg",
    "pylibjpeg-openjpeg", "pyjpegls", "python-gdcm", "psutil",
]


# ==============================================================================================
# Worker side: one reader on one file, in a fresh interpreter
# ==============================================================================================


def _raw_decoder(ts: str, spec: Any) -> tuple[str, Any]:
    """The bare codec call for ``ts`` (what dcmstream's frame time is compared with)."""
    import imagecodecs
    from pydicom.uid import UID

    uid = UID(ts)
    if not uid.is_compressed:
        dtype = spec.dtype.newbyteorder("<" if uid.is_little_endian else ">")
        shape = spec.shape
        return "numpy frombuffer+copy", lambda data: np.frombuffer(data, dtype).reshape(shape).copy()
    if uid.startswith("1.2.840.10008.1.2.4.8"):
        return "imagecodecs.jpegls_decode (CharLS)", imagecodecs.jpegls_decode
    if uid.startswith("1.2.840.10008.1.2.4.20"):
        return "imagecodecs.htj2k_decode (OpenJPH)", imagecodecs.htj2k_decode
    if uid.startswith("1.2.840.10008.1.2.4.9"):
        return "imagecodecs.jpeg2k_decode (OpenJPEG)", imagecodecs.jpeg2k_decode
    return "imagecodecs.jpeg8_decode (libjpeg-turbo)", imagecodecs.jpeg8_decode


def _open_reader(name: str, path: str) -> tuple[Any, Any, Any]:
    """(open(), frame(handle, i), close(handle)) for a reader; imports happen here."""
    if name == "pydicom-index":
        from pydicom.pixels import pixel_array

        return (lambda: None), (lambda h, i: pixel_array(path, index=i)), (lambda h: None)
    if name == "highdicom-lazy":
        import highdicom as hd

        return (
            lambda: hd.imread(path, lazy_frame_retrieval=True),
            lambda h, i: h.get_stored_frame(i, as_index=True),
            lambda h: None,
        )
    if name in ("dcmstream", "dcmstream-cache", "dcmstream-scan"):
        import dcmstream

        cache = None if name == "dcmstream-cache" else False
        return (lambda: dcmstream.open(path, cache=cache)), (lambda h, i: h.frame(i)), (lambda h: h.close())
    raise ValueError(f"unknown reader {name!r}")


def _worker_full(payload: dict[str, Any]) -> dict[str, Any]:
    import pydicom
    import pydicom.pixels  # noqa: F401 - import cost belongs to the baseline

    path = payload["path"]
    mem = PeakRss().start()
    io0 = io_counters()
    t0 = time.perf_counter()
    ds = pydicom.dcmread(path)
    t_open = time.perf_counter() - t0
    arr = ds.pixel_array
    t_full = time.perf_counter() - t0
    io1 = io_counters()
    rss = mem.stop()
    shape = list(arr.shape)
    return {
        "open_ms": t_open * 1e3,
        "first_ms": t_full * 1e3,
        "full_load_s": t_full,
        "shape": shape,
        "rss_above_mb": rss["above"] / MiB,
        "rss_baseline_mb": rss["baseline"] / MiB,
        "rss_method": rss["method"],
        "rchar_mb": (io1.get("rchar", 0) - io0.get("rchar", 0)) / MiB,
    }


def _worker_scan(payload: dict[str, Any]) -> dict[str, Any]:
    """Every frame, one by one, with dcmstream (cache=False): peak RSS and throughput."""
    opener, get, close = _open_reader("dcmstream-scan", payload["path"])
    mem = PeakRss().start()
    t0 = time.perf_counter()
    inst = opener()
    n = len(inst)
    checksum = 0
    for i in range(n):
        checksum += int(get(inst, i)[0, 0])  # touch the array, keep no reference
    elapsed = time.perf_counter() - t0
    rss = mem.stop()
    out = {
        "frames": n,
        "elapsed_s": elapsed,
        "per_frame_ms": elapsed * 1e3 / n,
        "rss_above_mb": rss["above"] / MiB,
        "rss_baseline_mb": rss["baseline"] / MiB,
        "rss_peak_mb": rss["peak"] / MiB,
        "rss_method": rss["method"],
        "source_bytes_read_mb": inst.source.bytes_read / MiB,
    }
    close(inst)
    return out


def _time_calls(fn: Any, indices: list[int], cap_s: float) -> list[float]:
    times: list[float] = []
    deadline = time.perf_counter() + cap_s
    for i in indices:
        t = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t)
        if t > deadline:
            break
    return times


def _worker(payload: dict[str, Any]) -> dict[str, Any]:
    reader = payload["reader"]
    if reader == "pydicom-full":
        return _worker_full(payload)
    if reader == "dcmstream-scan":
        return _worker_scan(payload)
    path, seq = payload["path"], payload["seq"]
    opener, get, close = _open_reader(reader, path)
    if reader.startswith("dcmstream"):
        import imagecodecs  # noqa: F401 - the decoders' import belongs to the baseline

    # -- phase 1: what a user of this reader sees; RSS and bytes attributable to it ----------
    gc.collect()
    mem = PeakRss().start()
    io0 = io_counters()
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.perf_counter()
    handle = opener()
    t_open = time.perf_counter() - t0
    frame0 = get(handle, 0)
    t_first = time.perf_counter() - t0
    del frame0
    source = getattr(handle, "source", None)
    open_bytes = source.bytes_read if source is not None else None
    times = _time_calls(lambda i: get(handle, i), seq, payload["cap_s"])
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
    io1 = io_counters()
    rss = mem.stop()
    out: dict[str, Any] = {
        "open_ms": t_open * 1e3,
        "first_ms": t_first * 1e3,
        "random": summarize(times),
        # First-touch page faults: memory a reader keeps (a cache) costs kernel time per frame.
        "minor_faults_per_frame": faults / (len(times) + 1),
        "rss_above_mb": rss["above"] / MiB,
        "rss_baseline_mb": rss["baseline"] / MiB,
        "rss_method": rss["method"],
        "rchar_mb": (io1.get("rchar", 0) - io0.get("rchar", 0)) / MiB,
    }
    if source is not None:
        out["source_bytes_read_mb"] = source.bytes_read / MiB
        out["open_bytes_read_kb"] = open_bytes / 1024
        out["index_kind"] = str(handle.frame_index.kind)

    # -- phase 2 (not in the RSS above): cache hits, warm opens, the raw-codec anchor -------
    if reader == "dcmstream-cache":
        # The most recently read frames, newest first: these are in the cache whatever its budget.
        recent = seq[: len(times)][-HIT_FRAMES:][::-1]
        stats = handle.cache.stats() if hasattr(handle.cache, "stats") else None
        out["hit"] = summarize(_time_calls(lambda i: get(handle, i), recent, payload["cap_s"]))
        after = handle.cache.stats() if stats is not None else None
        if after is not None:
            out["hit"]["hits"] = after.decoded.hits - stats.decoded.hits
        out["cache_budget_mb"] = handle.cache.max_bytes / MiB
    if reader == "dcmstream":
        out.update(_interleaved(handle, path, seq[: len(times)], payload, opener, get, close))
    close(handle)
    return out


def _interleaved(inst: Any, path: str, seq: list[int], payload: dict[str, Any], opener: Any, get: Any, close: Any) -> dict[str, Any]:
    """dcmstream frame(i) against the bare codec on the same bytes, alternating, same process."""
    raw_name, raw = _raw_decoder(str(inst.transfer_syntax), inst.pixel_spec)
    encoded = {i: inst.encoded_frame(i) for i in seq}
    # Same pixels? (lossless: exact; JPEG: libjpeg-turbo vs itself, so exact too)
    ref, mine = raw(encoded[seq[0]]), inst.frame(seq[0])
    same_shape = tuple(ref.shape) == tuple(mine.shape)
    max_diff = int(np.abs(ref.astype(np.int64) - mine.astype(np.int64)).max()) if same_shape else None
    raw_t: list[float] = []
    eng_t: list[float] = []
    deadline = time.perf_counter() + payload["interleave_cap_s"]
    for rep in range(payload["interleave_passes"]):
        for k, i in enumerate(seq):
            data = encoded[i]
            if (k + rep) % 2:
                t = time.perf_counter(); raw(data); raw_t.append(time.perf_counter() - t)  # noqa: E702
                t = time.perf_counter(); inst.frame(i); eng_t.append(time.perf_counter() - t)  # noqa: E702
            else:
                t = time.perf_counter(); inst.frame(i); eng_t.append(time.perf_counter() - t)  # noqa: E702
                t = time.perf_counter(); raw(data); raw_t.append(time.perf_counter() - t)  # noqa: E702
        if time.perf_counter() > deadline:
            break
    ratios = np.asarray(eng_t) / np.asarray(raw_t)
    # Open + first frame, warm (imports and one-time initialisations done), and the
    # decode time of frame 0 alone: the "10 ms plus one decode" budget.
    warm, dec0 = [], []
    data0 = inst.encoded_frame(0)
    for _ in range(payload["warm_opens"]):
        t = time.perf_counter()
        h = opener()
        get(h, 0)
        warm.append(time.perf_counter() - t)
        close(h)
        t = time.perf_counter()
        raw(data0)
        dec0.append(time.perf_counter() - t)
    return {
        "raw_codec": raw_name,
        "raw_same_shape": same_shape,
        "raw_max_abs_diff": max_diff,
        "raw": summarize(raw_t),
        "engine_interleaved": summarize(eng_t),
        "ratio_of_medians": float(np.median(eng_t) / np.median(raw_t)),
        "median_of_ratios": float(np.median(ratios)),
        # Noise from other processes only adds time: the lower quartiles are less affected.
        "ratio_of_p25": float(np.percentile(eng_t, 25) / np.percentile(raw_t, 25)),
        "warm_open_first": summarize(warm),
        "decode0": summarize(dec0),
    }


# ==============================================================================================
# Parent side: data, orchestration, tables, targets
# ==============================================================================================


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench_frames", description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=1000, help="frames per file (default 1000)")
    p.add_argument("--quick", action="store_true", help="smoke run: 50 frames, fewer samples")
    p.add_argument("--files", default="", help=f"comma-separated subset of {[f.key for f in FILES]}")
    p.add_argument("--readers", default="", help=f"comma-separated subset of {READERS}")
    p.add_argument("--repeat", type=int, default=1, help="run every worker N times, report medians")
    p.add_argument("--data-dir", type=Path, default=DATA_DIR)
    p.add_argument("--results-dir", type=Path, default=None)
    args, _unknown = p.parse_known_args(argv)  # the driver passes every benchmark the same options
    if args.quick:
        args.frames = min(args.frames, 50)
    return args


def _median_merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge repeated worker results: numbers become their median, the rest the first value."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[0]
    if len(ok) == 1:
        return ok[0]
    out: dict[str, Any] = {}
    for key, value in ok[0].items():
        values = [r.get(key) for r in ok]
        if isinstance(value, dict):
            out[key] = _median_merge(values)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and all(isinstance(v, (int, float)) for v in values):
            out[key] = float(np.median(values))
        else:
            out[key] = value
    out["runs"] = len(ok)
    return out


def _full_load_fits(path: Path, info: dict[str, Any]) -> tuple[bool, str]:
    import psutil

    decoded = info["frames"] * info["frame_bytes"]
    # pydicom holds the file's bytes and the array; for YCbCr it converts the whole array
    # to RGB in floating point (peak ~9x the decoded size, measured with --quick).
    need = path.stat().st_size + decoded * (9 if info["samples"] == 3 else 2)
    avail = psutil.virtual_memory().available
    if need > 0.5 * avail:
        return False, f"skipped: needs ~{need / MiB:.0f} MB, {avail / MiB:.0f} MB available"
    return True, ""


def _file_info(path: Path) -> dict[str, Any]:
    import dcmstream

    with dcmstream.open(path, cache=False) as inst:
        spec = inst.pixel_spec
        index = inst.frame_index
        return {
            "transfer_syntax": f"{inst.transfer_syntax.name} ({inst.transfer_syntax})",
            "frames": len(inst),
            "shape": list(spec.shape),
            "samples": spec.samples_per_pixel,
            "frame_bytes": int(np.prod(spec.shape)) * spec.dtype.itemsize,
            "size_mb": path.stat().st_size / MiB,
            "index_kind": str(index.kind),
            "mean_encoded_kb": index.total_bytes / len(index) / 1024,
        }


def _warm_page_cache(path: Path) -> None:
    # Every reader then finds the file in the page cache: engines are compared, not the disk.
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(16 * MiB)
        while fh.readinto(buf):
            pass


def _fmt(x: Any, unit: str = "") -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "n/a"
    if isinstance(x, str):
        return x
    a = abs(x)
    s = f"{x:.3f}" if a < 1 else f"{x:.2f}" if a < 10 else f"{x:.1f}" if a < 100 else f"{x:.0f}"
    return s + unit


def _log(msg: str) -> None:
    print(f"[frames] {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if worker_main(argv, _worker):
        return 0
    args = _parse(argv)
    started = time.perf_counter()
    machine = machine_info()
    files = [f for f in FILES if not args.files or f.key in args.files.split(",")]
    readers = [r for r in READERS if not args.readers or r in args.readers.split(",")]
    n = args.frames
    k_fast = min(RANDOM_FRAMES, n)
    k_slow = min(SLOW_RANDOM_FRAMES, n)
    seq = [int(i) for i in np.random.default_rng(SEED).permutation(n)[:k_fast]]
    cap = 10.0 if args.quick else TIME_CAP_S

    # -- data ------------------------------------------------------------------------------
    from dcmstream.samples import ensure_sample

    paths: dict[str, Path] = {}
    generation: dict[str, float] = {}
    for f in files:
        path = args.data_dir / f"{f.key}-{n}.dcm"
        if not path.exists():
            _log(f"generating {path} ...")
        t = time.perf_counter()
        paths[f.key] = ensure_sample(path, frames=n, **f.sample)
        generation[f.key] = time.perf_counter() - t

    # -- measurements ----------------------------------------------------------------------
    results: dict[str, Any] = {}
    for f in files:
        path = paths[f.key]
        info = _file_info(path)
        _warm_page_cache(path)
        res: dict[str, Any] = {"info": info, "readers": {}}
        for reader in readers:
            payload = {
                "reader": reader,
                "path": str(path),
                "seq": seq[: k_slow if reader == "pydicom-index" else k_fast],
                "cap_s": cap,
                "interleave_passes": 1 if args.quick else INTERLEAVE_PASSES,
                "interleave_cap_s": INTERLEAVE_CAP_S,
                "warm_opens": WARM_OPENS,
            }
            if reader == "pydicom-full":
                fits, why = _full_load_fits(path, info)
                if not fits:
                    res["readers"][reader] = {"skipped": why}
                    _log(f"{f.key}: {reader} {why}")
                    continue
            t = time.perf_counter()
            runs = [run_worker("bench_frames", payload) for _ in range(max(1, args.repeat))]
            res["readers"][reader] = r = _median_merge(runs)
            _log(f"{f.key}: {reader} {time.perf_counter() - t:.1f} s" + (f"  ERROR {r['error']}" if "error" in r else ""))
        if f.native and "dcmstream" in readers:
            t = time.perf_counter()
            res["scan"] = _median_merge([run_worker("bench_frames", {"reader": "dcmstream-scan", "path": str(path)})])
            _log(f"{f.key}: full scan {time.perf_counter() - t:.1f} s")
        results[f.key] = res

    runtime = time.perf_counter() - started
    machine["loadavg_end"] = machine_info()["loadavg"]
    targets = _targets(files, results)
    data = {
        "benchmark": NAME,
        "machine": machine,
        "versions": versions(VERSIONED),
        "frames": n,
        "random_sequence": {"seed": SEED, "fast_readers": k_fast, "pydicom_index": k_slow, "time_cap_s": cap},
        "generation_s": generation,
        "results": results,
        "targets": targets,
        "runtime_s": runtime,
        "argv": argv,
    }
    md = _markdown(data, files)
    if not args.files and not args.readers:
        out_md, out_js = write_results(NAME, md, data, args.results_dir)
    else:  # a partial run must not overwrite the full table
        out_md, out_js = write_results(NAME + "-partial", md, data, args.results_dir)
    print(md)
    print(f"\nwritten: {out_md} and {out_js}  (runtime {runtime:.0f} s)")
    return 0 if all(t["pass"] for t in targets if t["pass"] is not None) else 1


# ----------------------------------------------------------------------------------------------


def _get(d: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _targets(files: list[FileSpec], results: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(name: str, key: str, measured: float | None, limit: float, ok: bool | None, how: str) -> None:
        out.append({"target": name, "file": key, "measured": measured, "limit": limit, "pass": ok, "how": how})

    for f in files:
        r = results.get(f.key, {}).get("readers", {})
        eng = r.get("dcmstream", {})
        if f.native:
            med = _get(eng, "random", "median")
            add("native frame <= 0.3 ms", f.key, med, NATIVE_FRAME_MAX_MS,
                None if med is None else med <= NATIVE_FRAME_MAX_MS, "median random frame, cache=False (ms)")
            scan = results[f.key].get("scan", {})
            rss = scan.get("rss_above_mb")
            add("every frame one by one: peak RSS <= 80 MB above baseline", f.key, rss, SCAN_RSS_MAX_MB,
                None if rss is None else rss <= SCAN_RSS_MAX_MB, "MB above interpreter+imports")
        else:
            ratio = eng.get("ratio_of_medians")
            add("random frame <= 1.15x raw codec", f.key, ratio, RAW_RATIO_MAX,
                None if ratio is None else ratio <= RAW_RATIO_MAX, "median dcmstream / median raw, interleaved")
        if f.speedup_target:
            pyd = _get(r, "pydicom-index", "random", "median")
            med = _get(eng, "random", "median")
            speedup = pyd / med if pyd and med else None
            add(">= 3x faster than pydicom pixel_array(index=)", f.key, speedup, PYDICOM_SPEEDUP_MIN,
                None if speedup is None else speedup >= PYDICOM_SPEEDUP_MIN, "median pydicom / median dcmstream")
        if f.offset_table:
            warm = _get(eng, "warm_open_first", "median")
            dec = _get(eng, "decode0", "median")
            if warm is not None and dec is not None:
                limit = OPEN_FIRST_BUDGET_MS + dec
                add("open + first frame <= 10 ms + one decode", f.key, warm, limit, warm <= limit,
                    f"warm median (ms); cold first open: {_fmt(eng.get('first_ms'))} ms")
    return out


def _markdown(data: dict[str, Any], files: list[FileSpec]) -> str:
    m, v = data["machine"], data["versions"]
    seqinfo = data["random_sequence"]
    lines = [
        "# Frame engine benchmark",
        "",
        f"- command: `{' '.join(['python bench/run.py --only frames', *data['argv']])}`",
        f"- date: {m['date']}; runtime {data['runtime_s']:.0f} s",
        f"- machine: {m['cpu_count']} CPUs ({m['cpu_model']}), RAM {m['ram_gib']} GiB, {m['os']}, Python {m['python']}",
        f"- load average at start {m['loadavg']}, at end {m['loadavg_end']}"
        " (a load above 0.5 per CPU means other work competed: timings are noisy)",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- frames per file: {data['frames']}; random frames: the same sequence (seed {seqinfo['seed']}, no repeats) "
        f"for every reader, {seqinfo['fast_readers']} frames, {seqinfo['pydicom_index']} for pydicom "
        f"`pixel_array(index=)`, each reader stopped early after {seqinfo['time_cap_s']:g} s (n column)",
        "- each reader runs in a fresh interpreter; peak RSS is the kernel high-water mark (VmHWM, reset at start) "
        "above the RSS after imports, over open + first frame + the random frames",
        "- bytes read: `rchar` from /proc/self/io (read syscalls, page cache included); dcmstream also its "
        "`source.bytes_read`. Files are in the page cache: this measures the engines, not the disk.",
        "",
        "## Files",
        "",
    ]
    rows = []
    for f in files:
        info = data["results"][f.key]["info"]
        rows.append([f.key, f.title, info["transfer_syntax"], info["frames"], _fmt(info["size_mb"]),
                     _fmt(info["mean_encoded_kb"]), info["index_kind"]])
    lines += [markdown_table(["file", "content", "transfer syntax", "frames", "size MB", "mean frame KB", "dcmstream index"], rows,
                             "lllrrrl"), ""]

    lines += ["## Readers side by side", ""]
    rows = []
    for f in files:
        res = data["results"][f.key]
        for reader, r in res["readers"].items():
            title = READER_TITLES[reader]
            if "skipped" in r or "error" in r:
                rows.append([f.key, title, "", "", "", "", "", "", "", r.get("skipped") or "ERROR: " + r["error"]])
                continue
            note = ""
            if reader == "pydicom-full":
                note = f"first = whole file decoded ({_fmt(r['full_load_s'])} s); frames then in memory"
                rows.append([f.key, title, _fmt(r["open_ms"]), _fmt(r["first_ms"]), "n/a", "n/a", "", _fmt(r["rss_above_mb"]),
                             _fmt(r["rchar_mb"]), note])
                continue
            rnd = r["random"]
            read = _fmt(r["rchar_mb"])
            if "source_bytes_read_mb" in r:
                read += f" (source {_fmt(r['source_bytes_read_mb'])})"
            if reader == "pydicom-index":
                note = "no open: every call parses the file"
            if reader == "dcmstream-cache" and "hit" in r:
                note = (f"hit median {_fmt(r['hit']['median'])} ms ({r['hit'].get('hits', '?')}/{r['hit']['n']} hits); "
                        f"misses fill a {_fmt(r['cache_budget_mb'])} MB cache: "
                        f"{r['minor_faults_per_frame']:.0f} page faults/frame")
            if reader == "dcmstream":
                note = (f"open read {_fmt(r['open_bytes_read_kb'])} KB; index {r['index_kind']}; "
                        f"{r['minor_faults_per_frame']:.0f} page faults/frame")
            rows.append([f.key, title, "n/a" if reader == "pydicom-index" else _fmt(r["open_ms"]), _fmt(r["first_ms"]),
                         _fmt(rnd["median"]), _fmt(rnd["p95"]), rnd["n"], _fmt(r["rss_above_mb"]), read, note])
            if reader == "dcmstream" and "raw" in r:
                raw = r["raw"]
                rows.append([f.key, f"{READER_TITLES['raw']}: {r['raw_codec']}", "", "", _fmt(raw["median"]), _fmt(raw["p95"]),
                             raw["n"], "", "", "interleaved with dcmstream, same process"])
    lines += [markdown_table(["file", "reader", "open ms", "open + frame 0 ms", "random median ms", "random p95 ms", "n",
                              "peak RSS above baseline MB", "bytes read MB", "note"], rows, "llrrrrrrrl"), ""]

    lines += ["## dcmstream against the raw codec (interleaved frame by frame in one process)", ""]
    rows = []
    for f in files:
        r = data["results"][f.key]["readers"].get("dcmstream", {})
        if "raw" not in r:
            continue
        rows.append([f.key, r["raw_codec"], _fmt(r["raw"]["median"]), _fmt(r["engine_interleaved"]["median"]),
                     _fmt(r["engine_interleaved"]["median"] - r["raw"]["median"]), _fmt(r["ratio_of_medians"]),
                     _fmt(r["median_of_ratios"]), _fmt(r.get("ratio_of_p25")), r["raw"]["n"], r["raw_max_abs_diff"],
                     _fmt(r["warm_open_first"]["median"]), _fmt(r["decode0"]["median"])])
    lines += [markdown_table(["file", "raw codec", "raw median ms", "dcmstream median ms", "overhead ms", "ratio of medians",
                              "median of ratios", "ratio of p25", "pairs", "max abs diff", "open + frame 0 warm ms", "decode frame 0 ms"],
                             rows, "llrrrrrrrrrr"), ""]

    scans = [(f, data["results"][f.key].get("scan")) for f in files if data["results"][f.key].get("scan")]
    if scans:
        lines += ["## Every frame one by one (dcmstream, cache=False)", ""]
        rows = []
        for f, s in scans:
            if "error" in s:
                rows.append([f.key, "ERROR: " + s["error"], "", "", "", "", ""])
                continue
            rows.append([f.key, s["frames"], _fmt(s["elapsed_s"]), _fmt(s["per_frame_ms"]), _fmt(s["rss_baseline_mb"]),
                         _fmt(s["rss_above_mb"]), _fmt(s["source_bytes_read_mb"])])
        lines += [markdown_table(["file", "frames", "total s", "per frame ms", "baseline RSS MB", "peak RSS above baseline MB",
                                  "source bytes read MB"], rows), ""]

    lines += ["## Targets", ""]
    busy = max(m["loadavg"][0], m["loadavg_end"][0]) / max(1, m["cpu_count"] or 1)
    if busy > 0.5:
        lines += [f"Note: the machine was busy (load average up to {busy:.1f} per CPU): latencies and ratios are noisy. "
                  "Re-run on a quiet machine, with `--repeat 3` for medians over three runs.", ""]
    rows = [[t["target"], t["file"], _fmt(t["measured"]), _fmt(t["limit"]),
             "n/a" if t["pass"] is None else "PASS" if t["pass"] else "FAIL", t["how"]] for t in data["targets"]]
    lines += [markdown_table(["target", "file", "measured", "limit", "result", "how"], rows, "llrrll"), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
