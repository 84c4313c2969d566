"""Viewer traces against the frame cache, the stack prefetcher and a pydicom loader.

Input: a 1,000-frame 512x512 16-bit JPEG-LS CT with a Basic Offset Table, generated
once under ``bench/data/`` by :func:`dcmstream.samples.write_multiframe`.

Each measurement runs in a fresh interpreter (``bench/common.py``), so its cache
starts cold and its peak RSS (kernel high-water mark, reset after opening the file)
belongs to it alone. Traces are replayed in real time: the replayer sleeps until
each request's time stamp and calls the loader; *frame-ready latency* is the time
from the request's time stamp to the array being returned (so a loader that falls
behind accumulates latency, as a viewer would show it).

Traces (indices for 1,000 frames; shorter files scale down):

* ``slow-scroll``: 10 frames/s in bursts of 10-20 frames with 0.8 s pauses, one reversal;
* ``fast-scroll``: 60 frames/s, 200 frames forward then 120 back;
* ``cine-fwd`` / ``cine-bwd``: 30 frames/s over 150 frames, forward / backward;
* ``random``: 30 jumps to random frames, 4 per second.

Loaders:

* ``no-cache``: ``Instance(cache=False).frame(i)`` in the viewer thread;
* ``cache``: ``Instance(cache=FrameCache(budget)).frame(i)``, no prefetch;
* ``prefetch``: the same cache + ``StackPrefetcher`` on a 2-thread ``DecodePool``
  (idle fill after 0.3 s without requests);
* ``pydicom``: ``pydicom.pixels.pixel_array(path, index=i)`` (default plugins).

Also: peak RSS against budgets of 64 MB..1 GB under a whole-file volume load + cine +
random reads through the prefetcher, with glibc's default allocator and with
``dcmstream.cache.tune_malloc()``; and decode throughput with 1 and 2 threads.

RSS of recycled frame buffers (issue 12, ``--rss-only`` runs just this, into
``results/cache-rss.md``): a plain ``import dcmstream`` process, 4 threads reading random
frames (``dcmstream.open(path, cache=cache).frame(i)``) through a ``FrameCache`` of
64/128/256 MB whose frames the reader decodes into the cache's buffer pool (the default)
or into fresh memory (``FrameCache(buffers=False)``), each with glibc's default allocator
and with ``tune_malloc()``. Target: peak RSS growth <= budget x 1.1 + 20 MB without
``tune_malloc()``.
A loader that falls more than 3 s behind a trace is stopped there (pydicom on the
fast traces); its row says how many requests it served.

    python bench/bench_cache.py                 # full run, about 4 minutes on a quiet 2-core machine
    python bench/bench_cache.py --frames 200    # shorter file, same traces
    python bench/run.py --only cache --quick    # smoke run through the driver

Exit status 1 when a target is missed (including the RSS bound with glibc's default
allocator, which is reported next to the ``tune_malloc()`` one).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    DATA_DIR,
    MiB,
    PeakRss,
    machine_info,
    markdown_table,
    run_worker,
    summarize,
    versions,
    worker_main,
    write_results,
)

FRAME_BYTES = 512 * 512 * 2
TRACES = ("slow-scroll", "fast-scroll", "cine-fwd", "cine-bwd", "random")
LOADERS = ("no-cache", "cache", "prefetch", "pydicom")
SWEEP_BUDGETS_MB = (64, 128, 256, 512, 1024)
MAX_BACKLOG_S = 3.0  # a loader this far behind the trace is stopped (reported as such)


def sample_path(frames: int) -> Path:
    return DATA_DIR / f"ct-jpegls-bot-{frames}.dcm"


def ensure_input(frames: int) -> Path:
    from dcmstream.samples import ensure_sample

    return ensure_sample(sample_path(frames), frames=frames, syntax="jpeg-ls", kind="ct", offset_table="bot")


# -- traces ---------------------------------------------------------------------------------


def make_trace(name: str, n: int) -> list[tuple[float, int]]:
    """``(seconds from start, frame index)`` pairs; deterministic."""
    out: list[tuple[float, int]] = []
    t = 0.0

    def run(start: int, step: int, count: int, fps: float) -> int:
        nonlocal t
        i = start
        for _ in range(count):
            i = min(max(i, 0), n - 1)
            out.append((t, i))
            t += 1.0 / fps
            i += step
        return min(max(i - step, 0), n - 1)

    if name == "slow-scroll":
        i = n // 3
        for step, count in ((1, 15), (1, 15), (-1, 10), (1, 20)):
            count = min(count, max(1, n // 8))
            i = run(i + (step if out else 0), step, count, 10.0)
            t += 0.8
    elif name == "fast-scroll":
        forward, back = min(200, n - n // 4 - 1), min(120, n // 2)
        i = run(n // 4, 1, forward, 60.0)
        run(i - 1, -1, back, 60.0)
    elif name in ("cine-fwd", "cine-bwd"):
        count = min(150, n)
        start = max(0, n // 2 - count // 2)
        if name == "cine-fwd":
            run(start, 1, count, 30.0)
        else:
            run(min(n - 1, start + count - 1), -1, count, 30.0)
    elif name == "random":
        rng = random.Random(0)
        for _ in range(30):
            out.append((t, rng.randrange(n)))
            t += 0.25
    else:
        raise ValueError(name)
    return out


# -- workers (each in a fresh interpreter) ------------------------------------------------------


def _cache_for(budget: int):
    from dcmstream.cache import FrameCache

    # The budget is the whole cache: 80 % decoded frames, 20 % encoded bytes.
    return FrameCache(max_bytes=budget, encoded_share=0.2)


def trace_worker(p: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import pydicom.pixels

    import dcmstream
    from dcmstream.cache import DecodePool, StackPrefetcher

    path, loader_name, budget = p["path"], p["loader"], int(p["budget"])
    trace = make_trace(p["trace"], int(p["frames"]))
    inst = pool = prefetcher = cache = None
    decodes = 0
    if loader_name == "pydicom":

        def load(i: int) -> np.ndarray:
            return pydicom.pixels.pixel_array(path, index=i)

        def cached(i: int) -> bool:
            return False

        load(0)  # warm imports and plugin selection, like the others' open()
    elif loader_name == "no-cache":
        inst = dcmstream.open(path, cache=False)
        load, cached = inst.frame, (lambda i: False)
    else:
        cache = _cache_for(budget)
        inst = dcmstream.open(path, cache=cache)
        cached = inst.is_cached
        if loader_name == "cache":
            load = inst.frame
        else:
            pool = DecodePool(2)
            prefetcher = StackPrefetcher(inst, pool, idle_after=0.3)
            load = prefetcher.request
    rss = PeakRss().start()
    latencies: list[float] = []
    times: list[float] = []
    hits = 0
    stopped = None
    t0 = time.perf_counter() + 0.05
    for at, i in trace:
        due = t0 + at
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        hits += bool(cached(i))
        arr = load(i)
        ready = time.perf_counter()
        latencies.append(ready - due)
        times.append(at)
        assert arr.shape == (512, 512)
        if loader_name in ("no-cache", "pydicom"):
            decodes += 1
        if ready - due > MAX_BACKLOG_S:
            stopped = len(latencies)  # hopelessly behind: the rest would only pile up
            break
    mem = rss.stop()
    result: dict[str, Any] = {
        "trace": p["trace"],
        "loader": loader_name,
        "budget": budget,
        "requests": len(latencies),
        "trace_requests": len(trace),
        "stopped_behind": stopped,
        "duration_s": round(trace[-1][0], 2),
        "latency_ms": summarize(latencies),
        "latency_after_1s_ms": summarize([lat for lat, at in zip(latencies, times, strict=True) if at >= 1.0]),
        "hit_rate": hits / len(latencies),
        "rss": mem,
    }
    if prefetcher is not None:
        result["prefetcher"] = prefetcher.stats().as_dict()
        prefetcher.close()
    if pool is not None:
        result["pool"] = pool.stats().as_dict()
        pool.shutdown()
    if cache is not None:
        s = cache.stats()
        decodes = s.decodes
        result["cache"] = s.as_dict()
        result["prefetched"] = s.prefetch_issued
        result["prefetch_used"] = s.prefetch_used
        result["prefetch_never_shown"] = s.prefetch_issued - s.prefetch_used
    result["decodes"] = decodes
    result["bytes_decoded"] = decodes * FRAME_BYTES
    if inst is not None:
        inst.close()
    return result


def memory_worker(p: dict[str, Any]) -> dict[str, Any]:
    """Whole-file volume load, a full-speed cine and random reads through the prefetcher."""
    import dcmstream
    from dcmstream.cache import DecodePool, StackPrefetcher, load_volume, tune_malloc

    budget = int(p["budget"])
    tuned = p.get("malloc") == "tuned" and tune_malloc()
    cache = _cache_for(budget)
    inst = dcmstream.open(p["path"], cache=cache)
    n = len(inst)
    rss = PeakRss().start()
    started = time.perf_counter()
    with DecodePool(2) as pool:
        load_volume(inst, pool).wait()
        prefetcher = StackPrefetcher(inst, pool)
        for i in range(n // 2):
            prefetcher.request(i)
        rng = random.Random(1)
        for _ in range(min(n, 200)):
            prefetcher.request(rng.randrange(n))
        prefetcher.close()
    mem = rss.stop()
    s = cache.stats()
    inst.close()
    return {
        "budget": budget,
        "malloc": "tuned" if tuned else "default",
        "seconds": round(time.perf_counter() - started, 2),
        "rss": mem,
        "cache_bytes_end": s.bytes,
        "decodes": s.decodes,
        "evictions": s.evictions,
        "limit_above_baseline": int(budget * 1.10),
        "ok": mem["above"] <= budget * 1.10,
    }


def rss_worker(p: dict[str, Any]) -> dict[str, Any]:
    """4 threads, random frames, one FrameCache: RSS growth against what the cache holds.

    The frames are read as a user reads them, ``dcmstream.open(path, cache=cache).frame(i)``:
    the frame reader decodes a cached full-resolution frame into the cache's buffer pool
    (``FrameCache(buffers=True)``, the default) or into fresh memory (``buffers=False``).
    """
    import dcmstream
    from dcmstream.cache import tune_malloc

    budget, pooled = int(p["budget"]), p["buffers"] == "pooled"
    tuned = p.get("malloc") == "tuned" and tune_malloc()
    cache = dcmstream.FrameCache(budget, buffers=pooled)
    inst = dcmstream.open(p["path"], cache=cache)
    n = len(inst)
    with dcmstream.open(p["path"], cache=False) as plain:  # the reader's cached path agrees with the plain one
        assert (inst.frame(0) == plain.frame(0)).all()
    cache.clear()
    held = [0]
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.005):
            held[0] = max(held[0], cache.bytes)

    def read(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(int(p["reads"])):
            inst.frame(rng.randrange(n))

    rss = PeakRss().start()
    started = time.perf_counter()
    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=read, args=(k,)) for k in range(int(p.get("threads", 4)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watcher.join()
    mem = rss.stop()
    s = cache.stats()
    inst.close()
    limit = int(budget * 1.10 + 20 * MiB)
    return {
        "budget": budget,
        "buffers": "pooled" if pooled else "fresh",
        "malloc": "tuned" if tuned else "default",
        "threads": len(threads),
        "reads": len(threads) * int(p["reads"]),
        "seconds": round(time.perf_counter() - started, 2),
        "rss": mem,
        "held_max": held[0],
        "held_end": s.bytes,
        "decodes": s.decodes,
        "pool": None if s.buffers is None else s.buffers.as_dict(),
        "limit": limit,
        "ok": mem["above"] <= limit,
    }


def throughput_worker(p: dict[str, Any]) -> dict[str, Any]:
    """Frames per second decoding a whole file (read + decode, no cache) with 1 and 2 threads."""
    import imagecodecs

    import dcmstream
    from dcmstream.cache import DecodePool, OrderedLoad, Priority

    inst = dcmstream.open(p["path"], cache=False)
    n = len(inst)
    encoded = [inst.encoded_frame(i) for i in range(min(n, 200))]

    def whole_file(threads: int) -> float:
        with DecodePool(threads) as pool:
            started, cpu = time.perf_counter(), time.process_time()
            load = OrderedLoad(pool, inst.frame, range(n), priority=Priority.BACKGROUND, depth=4 * threads).start()
            load.wait()
            elapsed = time.perf_counter() - started
            cores[threads].append((time.process_time() - cpu) / elapsed)
        assert load.completed == n
        return n / elapsed

    def pure_codec(threads: int) -> float:
        chunks = [encoded[k::threads] for k in range(threads)]
        barrier = threading.Barrier(threads + 1)

        def work(chunk: list[bytes]) -> None:
            barrier.wait()
            for data in chunk:
                imagecodecs.jpegls_decode(data)

        workers = [threading.Thread(target=work, args=(c,)) for c in chunks]
        for w in workers:
            w.start()
        barrier.wait()
        started = time.perf_counter()
        for w in workers:
            w.join()
        return len(encoded) / (time.perf_counter() - started)

    results: dict[str, list[float]] = {"file_1": [], "file_2": [], "codec_1": [], "codec_2": []}
    cores: dict[int, list[float]] = {1: [], 2: []}  # CPU seconds per wall second: cores actually obtained
    for _ in range(int(p.get("repeats", 3))):
        for threads in (1, 2):  # interleaved so drift of the machine hits both
            results[f"file_{threads}"].append(whole_file(threads))
            results[f"codec_{threads}"].append(pure_codec(threads))
    inst.close()
    med = {k: statistics.median(v) for k, v in results.items()}
    return {
        "frames": n,
        "runs": {k: [round(x, 1) for x in v] for k, v in results.items()},
        "file_fps_1": round(med["file_1"], 1),
        "file_fps_2": round(med["file_2"], 1),
        "file_speedup": round(med["file_2"] / med["file_1"], 3),
        "codec_fps_1": round(med["codec_1"], 1),
        "codec_fps_2": round(med["codec_2"], 1),
        "codec_speedup": round(med["codec_2"] / med["codec_1"], 3),
        "cores_used_1": round(statistics.median(cores[1]), 2),
        "cores_used_2": round(statistics.median(cores[2]), 2),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def handler(p: dict[str, Any]) -> dict[str, Any]:
    kind = p["kind"]
    if kind == "trace":
        return trace_worker(p)
    if kind == "memory":
        return memory_worker(p)
    if kind == "throughput":
        return throughput_worker(p)
    if kind == "rss":
        return rss_worker(p)
    raise ValueError(kind)


# -- driver ---------------------------------------------------------------------------------


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def _mb(x: float) -> str:
    return f"{x / MiB:.0f}"


def render(data: dict[str, Any]) -> str:
    budget = data["budget_mb"]
    lines = [
        "# Frame cache, prefetch and decode pool: viewer traces",
        "",
        (
            f"File: {data['frames']}-frame 512x512 16-bit JPEG-LS CT (BOT), `{Path(data['path']).name}`. "
            f"Cache budget {budget} MB (80 % decoded, 20 % encoded). Machine: {data['machine']['cpu_count']} CPUs "
            f"({data['machine']['cpu_model']}), load average at start {data['machine']['loadavg']}, "
            f"at end {data['machine_end']['loadavg']}. "
            "Traces replayed in real time; latency = request time stamp to array returned. "
            "Hit = frame already decoded when requested. RSS = peak above the baseline after opening "
            "(kernel VmHWM). Each cell is a fresh process; the cache starts cold."
        ),
        "",
        "## Traces",
        "",
    ]
    rows = []
    for r in data["traces"]:
        if "error" in r:
            rows.append([r.get("trace", "?"), r.get("loader", "?"), "error: " + r["error"]] + [""] * 9)
            continue
        lat, late = r["latency_ms"], r["latency_after_1s_ms"]
        rows.append(
            [
                r["trace"],
                r["loader"],
                str(r["requests"]) if not r.get("stopped_behind") else f"{r['requests']} of {r['trace_requests']} (stopped {MAX_BACKLOG_S:g} s behind)",
                _ms(lat["median"]),
                _ms(lat["p95"]),
                _ms(lat["max"]),
                _ms(late.get("p95")),
                f"{100 * r['hit_rate']:.0f} %",
                f"{_mb(r['rss']['above'])}",
                r["decodes"],
                f"{r['bytes_decoded'] / MiB:.0f}",
                "-" if "prefetched" not in r else f"{r['prefetch_never_shown']} / {r['prefetched']}",
            ]
        )
    lines.append(
        markdown_table(
            [
                "trace",
                "loader",
                "requests",
                "p50 ms",
                "p95 ms",
                "max ms",
                "p95 after 1 s",
                "hit rate",
                "peak RSS MB",
                "decodes",
                "MB decoded",
                "prefetch never shown / prefetched",
            ],
            rows,
            "ll" + "r" * 10,
        )
    )
    lines += ["", "## Peak RSS against the budget (whole-file volume load + cine over half the file + 200 random reads, prefetcher, 2 threads)", ""]
    rows = []
    for r in data["memory"]:
        if "error" in r:
            rows.append([_mb(r.get("budget", 0)), r.get("malloc", "?"), "error: " + r["error"], "", "", "", "", ""])
            continue
        rows.append(
            [
                _mb(r["budget"]),
                "glibc default" if r["malloc"] == "default" else "tune_malloc() (64 KiB mmap threshold, 2 arenas)",
                f"{r['rss']['above'] / r['budget']:.2f}x",
                _mb(r["rss"]["above"]),
                _mb(r["limit_above_baseline"]),
                _mb(r["rss"]["baseline"]),
                r["decodes"],
                "yes" if r["ok"] else "**NO**",
            ]
        )
    lines.append(
        markdown_table(["budget MB", "allocator", "peak / budget", "peak RSS above baseline MB", "limit (budget + 10 %) MB", "baseline MB", "decodes", "within"], rows)
    )
    tp = data["throughput"]
    lines += ["", "## Decode throughput, whole file", ""]
    if "error" in tp:
        lines.append("error: " + tp["error"])
    else:
        lines.append(
            markdown_table(
                ["what", "1 thread frames/s", "2 threads frames/s", "speed-up"],
                [
                    ["read + decode via DecodePool (Instance, no cache)", tp["file_fps_1"], tp["file_fps_2"], f"{tp['file_speedup']:.2f}x"],
                    ["imagecodecs.jpegls_decode only (raw threads)", tp["codec_fps_1"], tp["codec_fps_2"], f"{tp['codec_speedup']:.2f}x"],
                ],
            )
        )
        lines.append("")
        lines.append(
            f"Median of {len(tp['runs']['file_1'])} interleaved runs; all runs: `{tp['runs']}`. "
            f"CPU time / wall time through the pool (cores this process actually got): "
            f"{tp['cores_used_1']} with 1 thread, {tp['cores_used_2']} with 2 threads; "
            f"load average after: {tp['loadavg']}."
        )
    if data.get("rss"):
        lines += ["", *rss_section(data["rss"])]
    lines += ["", "## Targets", ""]
    for name, ok, detail in data["targets"]:
        lines.append(f"- {'met' if ok else '**not met**'}: {name} — {detail}")
    lines += ["", f"Versions: {data['versions']}", ""]
    return "\n".join(lines)


RSS_BUDGETS_MB = (64, 128, 256)


def rss_section(rows_in: list[dict[str, Any]]) -> list[str]:
    """The recycled-buffer RSS table (markdown lines)."""
    lines = [
        "## RSS with recycled frame buffers (4 threads, random frames, plain `import dcmstream` process)",
        "",
        "Each thread calls `dcmstream.open(path, cache=cache).frame(i)` (one shared instance) for random `i`; "
        "the frame reader decodes into the cache's buffer pool (`pooled`, `FrameCache()`, the default) or into "
        "fresh memory (`fresh`, `FrameCache(buffers=False)`). Growth = peak RSS (VmHWM) above the RSS after "
        "opening the file and decoding one frame. Limit = budget x 1.1 + 20 MB. Held = most bytes the cache "
        "held (both tiers).",
        "",
    ]
    rows = []
    for r in rows_in:
        if "error" in r:
            rows.append([_mb(r.get("budget", 0)), r.get("buffers", "?"), r.get("malloc", "?"), "error: " + r["error"]] + [""] * 6)
            continue
        pool = r.get("pool") or {}
        rows.append(
            [
                _mb(r["budget"]),
                r["buffers"],
                "glibc default" if r["malloc"] == "default" else "tune_malloc()",
                f"{r['held_max'] / MiB:.1f}",
                f"{r['rss']['above'] / MiB:.1f}",
                f"{r['rss']['above'] / max(r['held_max'], 1):.2f}x",
                _mb(r["limit"]),
                "yes" if r["ok"] else "**NO**",
                r["decodes"],
                "-" if not pool else f"{pool['reused']} / {pool['recycled']} / {pool['kept']}",
            ]
        )
    lines.append(
        markdown_table(
            ["budget MB", "buffers", "allocator", "held MB", "RSS growth MB", "growth / held", "limit MB", "within",
             "decodes", "pool reused / recycled / kept"],
            rows,
            "lll" + "r" * 7,
        )
    )
    return lines


def rss_targets(rows: list[dict[str, Any]]) -> list[tuple[str, bool, str]]:
    pooled = [r for r in rows if "error" not in r and r["buffers"] == "pooled" and r["malloc"] == "default"]
    if not pooled:
        return []
    worst = max(pooled, key=lambda r: r["rss"]["above"] - r["limit"])
    return [
        (
            "RSS growth <= budget x 1.1 + 20 MB, 4 threads, random frames, recycled buffers, glibc's default allocator",
            all(r["ok"] for r in pooled),
            f"worst {worst['rss']['above'] / MiB:.1f} MB at {_mb(worst['budget'])} MB (limit {_mb(worst['limit'])} MB)",
        )
    ]


def render_rss_page(data: dict[str, Any]) -> str:
    lines = [
        "# Frame cache: RSS with recycled frame buffers",
        "",
        (
            f"File: {data['frames']}-frame 512x512 16-bit JPEG-LS CT (BOT), `{Path(data['path']).name}`. "
            f"Machine: {data['machine']['cpu_count']} CPUs ({data['machine']['cpu_model']}), load average at start "
            f"{data['machine']['loadavg']}, at end {data['machine_end']['loadavg']}. Each row is a fresh process; "
            "`python bench/run.py --only cache --rss-only`."
        ),
        "",
        *rss_section(data["rss"]),
        "",
        "## Targets",
        "",
    ]
    for name, ok, detail in data["targets"]:
        lines.append(f"- {'met' if ok else '**not met**'}: {name} — {detail}")
    lines += ["", f"Versions: {data['versions']}", ""]
    return "\n".join(lines)


def evaluate(data: dict[str, Any]) -> list[tuple[str, bool, str]]:
    by = {(r.get("trace"), r.get("loader")): r for r in data["traces"] if "error" not in r}
    targets = []
    cine = [by.get((t, "prefetch")) for t in ("cine-fwd", "cine-bwd")]
    if all(cine):
        p95s = [r["latency_after_1s_ms"]["p95"] for r in cine]  # type: ignore[index]
        targets.append(("cine 30 fps p95 frame-ready <= 33 ms after the first second (prefetch)", max(p95s) <= 33, f"fwd {p95s[0]:.2f} ms, bwd {p95s[1]:.2f} ms"))
    scroll = [by.get((t, "prefetch")) for t in ("slow-scroll", "fast-scroll")]
    if all(scroll):
        rates = [r["hit_rate"] for r in scroll]  # type: ignore[index]
        targets.append(("sequential scroll hit rate >= 95 % (prefetch)", min(rates) >= 0.95, f"slow {100 * rates[0]:.1f} %, fast {100 * rates[1]:.1f} %"))
    for mode, label in (("default", "glibc's default allocator"), ("tuned", "with tune_malloc()")):
        mem = [r for r in data["memory"] if "error" not in r and r["malloc"] == mode]
        if mem:
            worst = max(mem, key=lambda r: r["rss"]["above"] / r["budget"])
            targets.append(
                (
                    f"peak RSS <= budget + 10 % + baseline, 64 MB..1 GB, {label}",
                    all(r["ok"] for r in mem),
                    f"worst {worst['rss']['above'] / worst['budget']:.2f}x of budget at {_mb(worst['budget'])} MB",
                )
            )
    tp = data["throughput"]
    if "error" not in tp:
        detail = f"{tp['file_speedup']:.2f}x through the pool, {tp['codec_speedup']:.2f}x codec only"
        if tp["cores_used_2"] < 1.5:
            detail += (
                f" — NOT MEASURABLE here: with 2 threads this process got only {tp['cores_used_2']} cores "
                f"(load average {tp['loadavg']}); rerun on a quiet machine"
            )
        targets.append(("2 threads >= 1.7x single-thread throughput", tp["file_speedup"] >= 1.7, detail))
    targets += rss_targets(data.get("rss", []))
    return targets


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if worker_main(argv, handler):
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=1000, help="frames in the generated file (1000 for the real run)")
    parser.add_argument("--budget-mb", type=int, default=256, help="cache budget for the traces")
    parser.add_argument("--traces", default=",".join(TRACES), help="comma-separated subset, or none")
    parser.add_argument("--loaders", default=",".join(LOADERS))
    parser.add_argument("--no-memory", action="store_true", help="skip the budget sweep")
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument("--no-rss", action="store_true", help="skip the recycled-buffer RSS section")
    parser.add_argument("--rss-only", action="store_true", help="only the recycled-buffer RSS section (results/cache-rss.md)")
    parser.add_argument("--rss-reads", type=int, default=1500, help="random reads per thread in the RSS section")
    parser.add_argument("--quick", action="store_true", help="smoke run: 100 frames, 64 MB sweep only, one throughput pass")
    parser.add_argument("--results-dir", type=Path, default=None)
    parser.add_argument("--name", default=None, help="results/<name>.md (default: cache, or cache-quick with --frames < 1000)")
    args, _unknown = parser.parse_known_args(argv)  # bench/run.py passes every benchmark the same options
    if args.quick:
        args.frames = min(args.frames, 100)
    sweep = SWEEP_BUDGETS_MB[:1] if args.quick else SWEEP_BUDGETS_MB
    if args.rss_only:
        args.traces, args.no_memory, args.no_throughput = "none", True, True

    path = str(ensure_input(args.frames))
    budget = args.budget_mb * MiB
    data: dict[str, Any] = {
        "path": path,
        "frames": args.frames,
        "budget_mb": args.budget_mb,
        "machine": machine_info(),
        "versions": versions(["dcmstream", "pydicom", "numpy", "imagecodecs", "pylibjpeg", "pyjpegls", "python-gdcm"]),
        "traces": [],
        "memory": [],
        "throughput": {"error": "skipped"},
        "rss": [],
    }
    started = time.perf_counter()
    traces = [] if args.traces == "none" else args.traces.split(",")
    for trace in traces:
        for loader in args.loaders.split(","):
            payload = {"kind": "trace", "path": path, "trace": trace, "loader": loader, "budget": budget, "frames": args.frames}
            r = run_worker("bench_cache", payload, timeout=300)
            r.setdefault("trace", trace)
            r.setdefault("loader", loader)
            data["traces"].append(r)
            if "error" in r:
                print(f"{trace:12s} {loader:9s} ERROR {r['error']}", file=sys.stderr)
            else:
                print(
                    f"{trace:12s} {loader:9s} p50 {r['latency_ms']['median']:7.2f} p95 {r['latency_ms']['p95']:7.2f} "
                    f"max {r['latency_ms']['max']:7.2f} hit {r['hit_rate']:.2f} rss {r['rss']['above'] / MiB:5.0f} MB",
                    file=sys.stderr,
                )
    if not args.no_memory:
        for malloc in ("default", "tuned"):
            for mb in sweep:
                payload = {"kind": "memory", "path": path, "budget": mb * MiB, "malloc": malloc}
                r = run_worker("bench_cache", payload, timeout=300)
                r.setdefault("budget", mb * MiB)
                r.setdefault("malloc", malloc)
                data["memory"].append(r)
                print(f"memory {mb} MB {malloc}: {r}", file=sys.stderr)
    if not args.no_throughput:
        payload = {"kind": "throughput", "path": path, "repeats": 1 if args.quick else 3}
        data["throughput"] = run_worker("bench_cache", payload, timeout=600)
        print(f"throughput: {data['throughput']}", file=sys.stderr)
    if not args.no_rss:
        budgets = RSS_BUDGETS_MB[:1] if args.quick else RSS_BUDGETS_MB
        reads = min(args.rss_reads, 300) if args.quick else args.rss_reads
        for mb in budgets:
            for buffers in ("pooled", "fresh"):
                for malloc in ("default", "tuned"):
                    payload = {"kind": "rss", "path": path, "budget": mb * MiB, "buffers": buffers, "malloc": malloc, "reads": reads}
                    r = run_worker("bench_cache", payload, timeout=600)
                    r.setdefault("budget", mb * MiB)
                    r.setdefault("buffers", buffers)
                    r.setdefault("malloc", malloc)
                    data["rss"].append(r)
                    if "error" in r:
                        print(f"rss {mb} MB {buffers} {malloc}: ERROR {r['error']}", file=sys.stderr)
                    else:
                        print(
                            f"rss {mb:4d} MB {buffers:6s} {malloc:7s}: held {r['held_max'] / MiB:6.1f} MB, "
                            f"growth {r['rss']['above'] / MiB:6.1f} MB (limit {r['limit'] / MiB:.0f})",
                            file=sys.stderr,
                        )
    data["seconds"] = round(time.perf_counter() - started, 1)
    data["machine_end"] = machine_info()
    data["targets"] = evaluate(data)
    if args.rss_only:
        name = args.name or ("cache-rss" if args.frames >= 1000 else "cache-rss-quick")
        md, js = write_results(name, render_rss_page(data), data, args.results_dir)
        print(md.read_text())
        print(f"wrote {md} and {js} in {data['seconds']} s", file=sys.stderr)
        return 0 if all(ok for _, ok, _ in data["targets"]) else 1
    name = args.name or ("cache" if args.frames >= 1000 else "cache-quick")
    md, js = write_results(name, render(data), data, args.results_dir)
    print(md.read_text())
    print(f"wrote {md} and {js} in {data['seconds']} s", file=sys.stderr)
    return 0 if all(ok for _, ok, _ in data["targets"]) else 1


if __name__ == "__main__":
    sys.exit(main())
