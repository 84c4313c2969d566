"""Helpers shared by the benchmarks in bench/: memory, timing, subprocess workers, tables.

Keep this module small and its names stable: every ``bench_*.py`` may import it.

* :class:`PeakRss` - peak resident memory above a baseline taken when it starts.
* :func:`io_counters` - this process's ``rchar``/``read_bytes`` (Linux ``/proc/self/io``).
* :func:`summarize` - median / p95 / mean / min / max of timings (seconds in, ms out).
* :func:`run_worker` / :func:`worker_main` - run one measurement in a fresh interpreter, so
  its RSS is attributable and nothing is shared with other readers (imports, caches).
* :func:`free_port` - a free TCP port on 127.0.0.1 for a server a benchmark starts.
* :class:`MotoProcess` - moto's S3 server in a child process (for the S3 benchmarks).
* :func:`machine_info`, :func:`versions`, :func:`markdown_table`, :func:`write_results`.
"""

from __future__ import annotations

import datetime as _dt
import gc
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from dcmstream.memory import peak_rss, process_rss, reset_peak_rss, total_memory

__all__ = [
    "BENCH_DIR",
    "DATA_DIR",
    "RESULTS_DIR",
    "REPO",
    "MiB",
    "PeakRss",
    "DescendantsRss",
    "io_counters",
    "summarize",
    "run_worker",
    "worker_main",
    "free_port",
    "MotoProcess",
    "machine_info",
    "versions",
    "markdown_table",
    "write_results",
]

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
DATA_DIR = BENCH_DIR / "data"  # generated inputs (gitignored)
RESULTS_DIR = BENCH_DIR / "results"
MiB = 1 << 20

_RESULT_MARK = "@@BENCH-RESULT@@ "


# -- memory -------------------------------------------------------------------------------


class PeakRss:
    """Peak RSS of this process between :meth:`start` and :meth:`stop`, above the baseline.

    The baseline is the RSS at :meth:`start` (after a ``gc.collect()``): interpreter plus
    whatever was imported. On Linux the kernel's high-water mark is reset at start, so the
    peak is exact and costs nothing while measuring; elsewhere a thread samples RSS every
    ``interval`` seconds (it can miss short spikes, and competes a little for the GIL).
    """

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.baseline = 0
        self.method = ""
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "PeakRss":
        gc.collect()
        self.baseline = process_rss()
        if reset_peak_rss():
            self.method = "VmHWM"
        else:
            self.method = f"psutil sampling every {self.interval * 1000:g} ms"
            self._peak = self.baseline
            self._stop.clear()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, process_rss())

    def stop(self) -> dict[str, Any]:
        """Return ``baseline``, ``peak``, ``above`` (bytes) and the ``method`` used."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            peak = max(self._peak, process_rss())
        else:
            peak = peak_rss() or process_rss()
        return {"baseline": self.baseline, "peak": peak, "above": max(0, peak - self.baseline), "method": self.method}

    def __enter__(self) -> "PeakRss":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.result = self.stop()


class DescendantsRss:
    """Peak of the summed RSS of this process's descendants (worker processes, a fork
    server), sampled every ``interval`` seconds with psutil while running: what
    :class:`PeakRss` (this process only) does not see."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="descendants-rss", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            own = process_rss()
            self.peak = max(self.peak, process_rss(include_children=True) - own)

    def __enter__(self) -> "DescendantsRss":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def io_counters() -> dict[str, int]:
    """``rchar`` (bytes returned by read syscalls, page cache included) and ``read_bytes``
    (bytes fetched from storage) of this process; empty where /proc/self/io is missing."""
    out: dict[str, int] = {}
    try:
        with open("/proc/self/io") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("rchar", "read_bytes"):
                    out[key] = int(value)
    except OSError:
        pass
    return out


# -- timing -------------------------------------------------------------------------------


def summarize(seconds: Sequence[float]) -> dict[str, float | int]:
    """n, median, p25, p95, mean, min, max of durations given in seconds, in milliseconds."""
    if not len(seconds):
        return {"n": 0}
    ms = np.asarray(seconds, dtype=float) * 1e3
    return {
        "n": int(ms.size),
        "median": float(np.median(ms)),
        "p25": float(np.percentile(ms, 25)),
        "p95": float(np.percentile(ms, 95)),
        "mean": float(ms.mean()),
        "min": float(ms.min()),
        "max": float(ms.max()),
    }


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


# -- fresh-process workers -------------------------------------------------------------------


def run_worker(module: str, payload: dict[str, Any], timeout: float = 1800) -> dict[str, Any]:
    """Run ``python -m bench.<module> --worker JSON`` in a fresh interpreter; return its result.

    The worker calls :func:`worker_main`, which prints the handler's JSON result on a
    marked line. A failure comes back as ``{"error": ...}`` instead of raising, so one
    broken reader does not lose a whole benchmark run.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.setdefault("PYTHONHASHSEED", "0")
    cmd = [sys.executable, "-m", f"bench.{module}", "--worker", json.dumps(payload)]
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(_RESULT_MARK):
            return json.loads(line[len(_RESULT_MARK) :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return {"error": f"worker exited with {proc.returncode}: " + " | ".join(tail)}


def worker_main(argv: Sequence[str], handler: Callable[[dict[str, Any]], dict[str, Any]]) -> bool:
    """If ``argv`` is ``[--worker, JSON]``, run ``handler(payload)``, print the result, return True."""
    if len(argv) < 2 or argv[0] != "--worker":
        return False
    payload = json.loads(argv[1])
    try:
        result = handler(payload)
    except Exception as exc:  # noqa: BLE001 - reported in the table, not raised
        import traceback

        traceback.print_exc()
        result = {"error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write(_RESULT_MARK + json.dumps(result) + "\n")
    sys.stdout.flush()
    return True


# -- servers ------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a server this benchmark starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MotoProcess:
    """moto's S3 server in a child process on loopback (its request handling must not share
    the benchmark's GIL, unlike the tests' in-thread ``tests.s3_util.moto_server``). Sets
    the ``AWS_*`` credentials of this process for boto3 and obstore; :meth:`close` stops it."""

    ACCESS_KEY, SECRET_KEY = "bench", "bench-secret"

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.environ.update(AWS_ACCESS_KEY_ID=self.ACCESS_KEY, AWS_SECRET_ACCESS_KEY=self.SECRET_KEY,
                          AWS_DEFAULT_REGION="us-east-1")
        deadline = time.time() + 30
        while True:
            try:
                self.client().list_buckets()
                break
            except Exception:
                if time.time() > deadline or self.proc.poll() is not None:
                    self.close()
                    raise
                time.sleep(0.2)

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                            config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                                          response_checksum_validation="when_required"))

    def bucket(self) -> str:
        name = f"b{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(10)


# -- reporting ----------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """Date, CPU, RAM, OS and current load, for the header of a results file."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "ram_gib": round(total_memory() / (1 << 30), 1),
        "ram_available_gib": round(psutil.virtual_memory().available / (1 << 30), 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "loadavg": [round(x, 2) for x in load],
    }


def versions(packages: Iterable[str]) -> dict[str, str]:
    """Installed versions of ``packages`` (distribution names); "-" when missing."""
    out = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "-"
    return out


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None) -> str:
    """A GitHub markdown table; ``align`` is one of "l"/"r" per column (default: first left)."""
    align = align or "l" + "r" * (len(headers) - 1)
    rule = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(map(str, headers)) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join("" if c is None else str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name: str, markdown: str, data: dict[str, Any], results_dir: Path | None = None) -> tuple[Path, Path]:
    """Write ``results/<name>.md`` and ``results/<name>.json``; return both paths."""
    out = Path(results_dir or RESULTS_DIR)
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / f"{name}.md", out / f"{name}.json"
    md.write_text(markdown.rstrip() + "\n")
    js.write_text(json.dumps(data, indent=1, default=str) + "\n")
    return md, js
