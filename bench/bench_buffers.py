"""Does decoding into pooled buffers (``out=``) pay on 512x512 16-bit frames?

Compares, for JPEG-LS (CharLS) and HTJ2K (OpenJPH) frames of the synthetic CT:

* ``fresh``: ``decode(data)`` — a new output array per frame;
* ``pooled``: ``BufferPool.decode_into(decode, data, ...)`` — the output array
  comes from a pool, and goes back to it when the frame is dropped.

Two lifetimes of the decoded frames:

* ``drop``: the frame is dropped at once (a batch loop): the allocator can hand
  the same memory straight back, so "fresh" is nearly a pool already;
* ``resident``: the last 128 frames (64 MiB) stay alive, like a frame cache, and
  the oldest is dropped per decode: fresh arrays are new pages (mmap + page faults).

Each variant runs in interleaved blocks (A, B, A, B, ...) so drift of the machine
hits both; reported: median per-frame time over blocks, minor page faults per
frame, and the relative gain; also the decoding threads' CPU time per frame
(``time.thread_time``), which other processes on the machine disturb far less
than wall time. Runs with 1 and 2 threads.

    python bench/bench_buffers.py [--decodes 800] [--quick] [--out bench/results/buffers]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import threading
import time
from collections import deque
from pathlib import Path

import imagecodecs
import numpy as np

from dcmstream.cache import BufferPool
from dcmstream.samples import synthetic_frames

SHAPE, DTYPE = (512, 512), np.uint16
CODECS = {
    "JPEG-LS": (imagecodecs.jpegls_encode, imagecodecs.jpegls_decode),
    "HTJ2K": (imagecodecs.htj2k_encode, imagecodecs.htj2k_decode),
}
RESIDENT = 128


def run_block(variant: str, lifetime: str, decode, datas: list[bytes], count: int, pool: BufferPool, ring: deque) -> float:
    """Decode ``count`` frames; returns this thread's CPU seconds (robust to other processes)."""
    start = time.thread_time()
    for k in range(count):
        data = datas[k % len(datas)]
        if variant == "fresh":
            arr = decode(data)
        else:
            arr = pool.decode_into(decode, data, SHAPE, DTYPE)
        if lifetime == "resident":
            ring.append(arr)
            if len(ring) > RESIDENT:
                old = ring.popleft()
                if variant == "pooled":
                    pool.release(old)
                del old
        elif variant == "pooled":
            pool.release(arr)
        del arr
    return time.thread_time() - start


def measure(codec: str, lifetime: str, threads: int, frames: int, block: int, datas: list[bytes]) -> dict:
    decode = CODECS[codec][1]
    results: dict[str, list[float]] = {"fresh": [], "pooled": []}
    cpu: dict[str, list[float]] = {"fresh": [], "pooled": []}
    faults: dict[str, int] = {"fresh": 0, "pooled": 0}
    decoded: dict[str, int] = {"fresh": 0, "pooled": 0}
    states = {
        v: [(BufferPool(max_bytes=1 << 30, max_per_key=RESIDENT + 8), deque()) for _ in range(threads)] for v in results
    }
    blocks = max(2, frames // block)
    for b in range(blocks):
        for variant in (("fresh", "pooled") if b % 2 == 0 else ("pooled", "fresh")):
            per_thread = block // threads
            barrier = threading.Barrier(threads + 1)

            cpu_times = [0.0] * threads

            def work(
                t: int, variant: str = variant, barrier: threading.Barrier = barrier, n: int = per_thread, out: list = cpu_times
            ) -> None:
                pool, ring = states[variant][t]
                barrier.wait()
                out[t] = run_block(variant, lifetime, decode, datas, n, pool, ring)

            workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
            for w in workers:
                w.start()
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            barrier.wait()
            for w in workers:
                w.join()
            wall = time.perf_counter() - t0
            faults[variant] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
            decoded[variant] += per_thread * threads
            results[variant].append(wall / (per_thread * threads))  # seconds per frame (throughput)
            cpu[variant].append(sum(cpu_times) / (per_thread * threads))  # CPU seconds per frame
    for pairs in states.values():
        for pool, ring in pairs:
            ring.clear()
            pool.clear()
    fresh = statistics.median(results["fresh"]) * 1e3
    pooled = statistics.median(results["pooled"]) * 1e3
    spread = {v: (min(r) * 1e3, max(r) * 1e3) for v, r in results.items()}
    cpu_fresh = statistics.median(cpu["fresh"]) * 1e3
    cpu_pooled = statistics.median(cpu["pooled"]) * 1e3
    return {
        "codec": codec,
        "lifetime": lifetime,
        "threads": threads,
        "frames_per_variant": decoded["fresh"],
        "fresh_ms_per_frame": round(fresh, 4),
        "pooled_ms_per_frame": round(pooled, 4),
        "gain_percent": round(100 * (fresh - pooled) / fresh, 2),
        "fresh_cpu_ms_per_frame": round(cpu_fresh, 4),
        "pooled_cpu_ms_per_frame": round(cpu_pooled, 4),
        "cpu_gain_percent": round(100 * (cpu_fresh - cpu_pooled) / cpu_fresh, 2),
        "fresh_range_ms": [round(x, 4) for x in spread["fresh"]],
        "pooled_range_ms": [round(x, 4) for x in spread["pooled"]],
        "fresh_minor_faults_per_frame": round(faults["fresh"] / decoded["fresh"], 1),
        "pooled_minor_faults_per_frame": round(faults["pooled"] / decoded["pooled"], 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--decodes", type=int, default=800, help="frames decoded per variant and case")
    parser.add_argument("--block", type=int, default=40, help="frames per interleaved block")
    parser.add_argument("--quick", action="store_true", help="smoke run: 160 frames per case")
    parser.add_argument("--out", default=None, help="output path without suffix (default results/buffers)")
    args, _unknown = parser.parse_known_args(argv)  # bench/run.py passes every benchmark the same options
    if args.quick:
        args.decodes = min(args.decodes, 160)

    source = synthetic_frames("ct")
    frames = [source(n) for n in range(0, 64, 4)]
    rows = []
    for codec, (encode, decode) in CODECS.items():
        datas = [encode(f) for f in frames]
        check = BufferPool().decode_into(decode, datas[0], SHAPE, DTYPE)
        assert np.array_equal(check, frames[0]), codec
        for _ in range(40):  # warm up the codec and the allocator
            decode(datas[0])
        for lifetime in ("drop", "resident"):
            for threads in (1, 2):
                row = measure(codec, lifetime, threads, args.decodes, args.block, datas)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)

    lines = [
        "# BufferPool: decode into pooled `out=` buffers vs fresh arrays",
        "",
        (
            f"512x512 uint16 synthetic CT, imagecodecs {imagecodecs.__version__}, numpy {np.__version__}, "
            f"Python {platform.python_version()}, {platform.machine()}; median ms per frame over interleaved "
            f"blocks of {args.block} (wall time / frames, so with 2 threads it is the inverse throughput); "
            f"`resident` keeps the last {RESIDENT} frames alive like a cache; load average {os.getloadavg()}."
        ),
        "",
        (
            "| codec | lifetime | threads | fresh ms/frame | pooled ms/frame | gain (wall) | fresh range | pooled range "
            "| CPU ms/frame fresh → pooled | gain (CPU) | page faults/frame fresh → pooled |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['codec']} | {r['lifetime']} | {r['threads']} | {r['fresh_ms_per_frame']:.3f} | "
            f"{r['pooled_ms_per_frame']:.3f} | {r['gain_percent']:+.1f} % | "
            f"{r['fresh_range_ms'][0]:.3f}–{r['fresh_range_ms'][1]:.3f} | "
            f"{r['pooled_range_ms'][0]:.3f}–{r['pooled_range_ms'][1]:.3f} | "
            f"{r['fresh_cpu_ms_per_frame']:.3f} → {r['pooled_cpu_ms_per_frame']:.3f} | {r['cpu_gain_percent']:+.1f} % | "
            f"{r['fresh_minor_faults_per_frame']} → {r['pooled_minor_faults_per_frame']} |"
        )
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / ("buffers-quick" if args.quick else "buffers")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
