"""DICOMweb server benchmark: ``dcmstream serve`` against Orthanc + its DICOMweb plugin.

Side by side in one run, on loopback, with the same files (the 1,000-frame native,
JPEG-LS and RGB JPEG files of bench_frames, generated once into bench/data/):

1. ``scripts/install-orthanc.sh`` installs Debian's ``orthanc`` and ``orthanc-dicomweb``
   when missing (a benchmark dependency, not a test one).
2. Orthanc is started as a subprocess with its own temporary configuration (HTTP on a
   free port, DICOM server disabled, storage and index in a temporary folder, only the
   DICOMweb plugin loaded, remote access and authentication off; the system service is
   never used) and the files are uploaded through ``POST /instances``.
   ``dcmstream import`` fills a temporary archive with the same files and
   ``dcmstream serve`` serves it on another free port.
3. Both are measured through DICOMweb with httpx, one server at a time:

   * the pixel bytes both return for a few frames (compared byte for byte),
   * one-frame latency (median, p95) over the same random frame sequence (fewer
     requests, and a time cap, for Orthanc: it reads the whole file per request),
   * a 100-frame list request ``frames/1,2,...,100``,
   * a series metadata request (first, then repeated),
   * N concurrent clients fetching random frames for D seconds (throughput, p99, errors),
   * each server's peak RSS (psutil, process and children, sampled every 50 ms for the
     server's whole life).

   Two Accept headers: ``multipart/related; type="application/octet-stream"`` (the
   standard's default: Explicit VR Little Endian pixels, decoded when stored compressed)
   and the same with ``transfer-syntax=*`` (as stored, what OHIF asks for). Frames are
   requested with ``Accept-Encoding: identity`` (Orthanc would otherwise gzip them).

Run through the driver: ``python bench/run.py --only orthanc [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from bench.bench_frames import FILES as FRAME_FILES
from bench.common import (
    DATA_DIR,
    REPO,
    MiB,
    free_port,
    machine_info,
    markdown_table,
    summarize,
    versions,
    write_results,
)

NAME = "orthanc"
SEED = 20240115  # the frame benchmark's seed: same random frame sequence
FILE_KEYS = ("ct-native", "ct-jpegls-bot", "us-jpeg-bot")
MODES = {
    "default": 'multipart/related; type="application/octet-stream"',
    "stored": 'multipart/related; type="application/octet-stream"; transfer-syntax=*',
}
MODE_TITLES = {"default": "octet-stream (decoded, Explicit VR LE)", "stored": "transfer-syntax=* (as stored)"}
SERVERS = ("orthanc", "dcmstream")
SAMPLE_INTERVAL_S = 0.05
INSTALL_SCRIPT = REPO / "scripts" / "install-orthanc.sh"
ORTHANC_PLUGINS_DIR = Path("/usr/share/orthanc/plugins")
ORTHANC_ROOT = "/dicom-web"
OURS_ROOT = "/dicomweb"
LOAD_SCENARIOS = "ct-native:default,ct-jpegls-bot:default,us-jpeg-bot:stored"
VERIFY_FRAMES = 3

# Targets (issue 5, "Benchmark against Orthanc").
SPEEDUP_MIN = {"ct-native": 100.0, "ct-jpegls-bot": 20.0}
RSS_MAX_MB = 250.0
FULL_FRAMES = 1000  # the speedup targets are about the 1,000-frame files (500 MB native)

VERSIONED = ["dcmstream", "pydicom", "numpy", "imagecodecs", "starlette", "uvicorn", "httpx", "psutil"]


def _log(msg: str) -> None:
    print(f"[orthanc] {msg}", file=sys.stderr, flush=True)


# ==============================================================================================
# Servers: start, watch, stop
# ==============================================================================================


class RssSampler:
    """Sum of RSS of each watched process and its children, every ``interval`` seconds.

    Keeps the peak over a process's whole life and per phase (set with :meth:`phase`),
    plus a coarse time series (one point a second) for the JSON.
    """

    def __init__(self, interval: float = SAMPLE_INTERVAL_S) -> None:
        self.interval = interval
        self._procs: dict[str, psutil.Process] = {}
        self.peak: dict[str, int] = {}
        self.last: dict[str, int] = {}
        self.by_phase: dict[str, dict[str, int]] = {}
        self.series: dict[str, list[tuple[float, float]]] = {}
        self.samples = 0
        self._phase = "start"
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def watch(self, name: str, pid: int) -> None:
        with self._lock:
            self._procs[name] = psutil.Process(pid)
            self.series.setdefault(name, [])

    def unwatch(self, name: str) -> None:
        with self._lock:
            self._procs.pop(name, None)

    def phase(self, name: str) -> None:
        self._phase = name

    @staticmethod
    def _tree_rss(proc: psutil.Process) -> int:
        total = 0
        for p in [proc, *proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return total

    def _run(self) -> None:
        last_point = -1.0
        while not self._stop.wait(self.interval):
            with self._lock:
                procs = list(self._procs.items())
            now = time.perf_counter() - self._t0
            phase = self._phase
            for name, proc in procs:
                try:
                    rss = self._tree_rss(proc)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                self.last[name] = rss
                self.peak[name] = max(self.peak.get(name, 0), rss)
                ph = self.by_phase.setdefault(name, {})
                ph[phase] = max(ph.get(phase, 0), rss)
                if now - last_point >= 1.0:
                    self.series[name].append((round(now, 1), round(rss / MiB, 1)))
            if now - last_point >= 1.0:
                last_point = now
            self.samples += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    base: str  # DICOMweb root URL
    log_path: Path
    info: dict[str, Any] = field(default_factory=dict)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM to the process group, SIGKILL after ``grace`` seconds."""
        if self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue


def _spawn(cmd: list[str], log_path: Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log = open(log_path, "wb")  # noqa: SIM115 - the child inherits it; ours is closed below
    try:
        return subprocess.Popen(
            cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole
        )
    finally:
        log.close()


def _wait_ready(server: Server, url: str, timeout: float = 90.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5, trust_env=False) as client:
        while time.monotonic() < deadline:
            if not server.alive():
                raise RuntimeError(f"{server.name} exited with {server.proc.returncode}:\n{server.log_tail()}")
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"{server.name} not ready after {timeout:g} s:\n{server.log_tail()}")


def orthanc_binary() -> str:
    found = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)
    if not found:
        raise RuntimeError("the Orthanc binary is missing after scripts/install-orthanc.sh")
    return found


def orthanc_config(tmp: Path, http_port: int, dicom_port: int) -> dict[str, Any]:
    """The temporary configuration: loopback clients only, no DICOM server, DICOMweb on."""
    plugin = ORTHANC_PLUGINS_DIR / "libOrthancDicomWeb.so"
    # Only the DICOMweb plugin of the package's plugin folder (the folder itself would
    # also load the worklist and serve-folders plugins, which play no part here).
    plugins = [str(plugin)] if plugin.exists() else [str(ORTHANC_PLUGINS_DIR)]
    return {
        "Name": "dcmstream-bench",
        "HttpPort": http_port,
        "DicomServerEnabled": False,
        "DicomPort": dicom_port,  # unused (server disabled) but free, in case
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "StorageDirectory": str(tmp / "orthanc-storage"),
        "IndexDirectory": str(tmp / "orthanc-index"),
        "StorageCompression": False,
        "SaveJobs": False,
        "KeepAlive": True,
        "Plugins": plugins,
        "DicomWeb": {"Enable": True, "Root": ORTHANC_ROOT + "/", "EnableWado": False, "Ssl": False},
        # Everything else is Orthanc's default, notably MaximumStorageCacheSize 128 (MB),
        # HttpThreadsCount 50, HttpCompressionEnabled true, DicomWeb SeriesMetadata "Full".
    }


def start_orthanc(tmp: Path, overrides: dict[str, Any] | None = None) -> Server:
    """Orthanc with :func:`orthanc_config`, updated with ``overrides`` (top-level keys)."""
    port, dicom_port = free_port(), free_port()
    config = {**orthanc_config(tmp, port, dicom_port), **(overrides or {})}
    conf_path = tmp / "orthanc.json"
    conf_path.write_text(json.dumps(config, indent=1))
    proc = _spawn([orthanc_binary(), str(conf_path)], tmp / "orthanc.log", tmp)
    server = Server("orthanc", proc, f"http://127.0.0.1:{port}{ORTHANC_ROOT}", tmp / "orthanc.log",
                    {"http": f"http://127.0.0.1:{port}", "config": config})
    _wait_ready(server, f"http://127.0.0.1:{port}/system")
    return server


def start_dcmstream(tmp: Path, archive: Path) -> Server:
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "dcmstream", "serve", str(archive), "--host", "127.0.0.1", "--port", str(port)]
    proc = _spawn(cmd, tmp / "dcmstream.log", REPO, env)
    server = Server("dcmstream", proc, f"http://127.0.0.1:{port}{OURS_ROOT}", tmp / "dcmstream.log",
                    {"http": f"http://127.0.0.1:{port}", "command": " ".join(cmd[1:])})
    _wait_ready(server, f"http://127.0.0.1:{port}/healthz")
    return server


def install_orthanc() -> str:
    proc = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{INSTALL_SCRIPT.name} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return proc.stderr.strip()


def orthanc_versions(server: Server | None) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        first = subprocess.run([orthanc_binary(), "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
        out["orthanc --version"] = first.splitlines()[0].strip() if first else "?"
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        out["orthanc --version"] = f"? ({exc})"
    for pkg in ("orthanc", "orthanc-dicomweb"):
        try:
            out[f"deb {pkg}"] = subprocess.run(
                ["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True, timeout=30, check=False
            ).stdout.strip() or "-"
        except (OSError, subprocess.SubprocessError):
            out[f"deb {pkg}"] = "-"
    if server is not None:
        import httpx

        try:
            with httpx.Client(timeout=10, trust_env=False) as client:
                out["DICOMweb plugin"] = client.get(server.info["http"] + "/plugins/dicom-web").json().get("Version", "?")
        except (httpx.HTTPError, ValueError):
            pass
    return out


# ==============================================================================================
# Requests
# ==============================================================================================


@dataclass(frozen=True)
class Target:
    """One file as both servers see it."""

    key: str
    title: str
    path: Path
    study: str
    series: str
    sop: str
    frames: int
    frame_bytes: int  # decoded, Explicit VR LE
    dtype: str
    transfer_syntax: str
    size_mb: float

    def frames_url(self, base: str, numbers: list[int]) -> str:
        return f"{base}/studies/{self.study}/series/{self.series}/instances/{self.sop}/frames/{','.join(map(str, numbers))}"

    def metadata_url(self, base: str) -> str:
        return f"{base}/studies/{self.study}/series/{self.series}/metadata"


def _target(key: str, title: str, path: Path) -> Target:
    import dcmstream

    with dcmstream.open(path, cache=False) as inst:
        spec = inst.pixel_spec
        ds = inst.dataset
        return Target(
            key=key, title=title, path=path, study=str(ds.StudyInstanceUID), series=str(ds.SeriesInstanceUID),
            sop=str(ds.SOPInstanceUID), frames=len(inst), frame_bytes=int(np.prod(spec.shape)) * spec.dtype.itemsize,
            dtype=str(np.dtype(spec.dtype).newbyteorder("<")), transfer_syntax=str(inst.transfer_syntax),
            size_mb=path.stat().st_size / MiB,
        )


def make_client(timeout: float = 300.0) -> Any:
    import httpx

    # identity: Orthanc gzips answers when allowed, which is not what is compared here.
    return httpx.Client(timeout=httpx.Timeout(timeout, connect=10.0), trust_env=False,
                        headers={"Accept-Encoding": "identity"})


_BOUNDARY = re.compile(r'boundary="?([^";,\s]+)"?', re.IGNORECASE)


def parse_multipart(content_type: str, body: bytes) -> list[tuple[dict[str, str], bytes]]:
    """Parts (lower-cased headers, body) of a multipart/related answer; ValueError if malformed.

    Independent of dcmstream's own parser on purpose: this checks both servers.
    """
    m = _BOUNDARY.search(content_type or "")
    if not content_type.lower().startswith("multipart/") or not m:
        raise ValueError(f"not multipart: {content_type[:120]!r}")
    delim = b"--" + m.group(1).encode("latin-1")
    pos = body.find(delim)
    if pos < 0:
        raise ValueError("no opening boundary")
    pos += len(delim)
    parts = []
    while True:
        if body[pos : pos + 2] == b"--":
            return parts
        if body[pos : pos + 2] != b"\r\n":
            raise ValueError("malformed boundary line")
        head_end = body.find(b"\r\n\r\n", pos)
        if head_end < 0:
            raise ValueError("truncated part headers")
        headers = {}
        for line in body[pos + 2 : head_end].split(b"\r\n"):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        start = head_end + 4
        end = body.find(b"\r\n" + delim, start)
        if end < 0:
            raise ValueError("truncated part (no closing boundary)")
        parts.append((headers, body[start:end]))
        pos = end + 2 + len(delim)


@dataclass
class FrameAnswer:
    seconds: float
    status: int
    content_type: str
    wire_bytes: int
    parts: list[tuple[dict[str, str], bytes]]
    error: str | None = None


def get_frames(client: Any, server: Server, target: Target, numbers: list[int], mode: str) -> FrameAnswer:
    """GET the frames, time until the whole body is in, then parse and check it."""
    url = target.frames_url(server.base, numbers)
    t0 = time.perf_counter()
    try:
        r = client.get(url, headers={"Accept": MODES[mode]})
        body = r.content
    except Exception as exc:  # noqa: BLE001 - counted as an error, with its type
        return FrameAnswer(time.perf_counter() - t0, 0, "", 0, [], f"{type(exc).__name__}: {exc}"[:200])
    seconds = time.perf_counter() - t0
    ct = r.headers.get("content-type", "")
    ans = FrameAnswer(seconds, r.status_code, ct, len(body), [])
    if r.status_code != 200:
        ans.error = f"HTTP {r.status_code}: {body[:160]!r}"
        return ans
    try:
        ans.parts = parse_multipart(ct, body)
    except ValueError as exc:
        ans.error = f"bad multipart: {exc}"
        return ans
    if len(ans.parts) != len(numbers):
        ans.error = f"{len(ans.parts)} parts for {len(numbers)} frames"
    elif mode == "default" and any(len(p) != target.frame_bytes for _, p in ans.parts):
        sizes = sorted({len(p) for _, p in ans.parts})
        ans.error = f"decoded part sizes {sizes[:3]} != {target.frame_bytes}"
    elif any(len(p) == 0 for _, p in ans.parts):
        ans.error = "empty part"
    return ans


# ==============================================================================================
# Measurements
# ==============================================================================================


def measure_latency(server: Server, target: Target, mode: str, seq: list[int], cap_s: float, min_n: int) -> dict[str, Any]:
    """One frame per request, sequentially, over ``seq`` (stopped after ``cap_s`` once ``min_n`` are done)."""
    times, errors = [], []
    t_start = time.perf_counter()
    with make_client() as client:
        for n in seq:
            ans = get_frames(client, server, target, [n], mode)
            if ans.error:
                errors.append(f"frame {n}: {ans.error}")
            else:
                times.append(ans.seconds)
            done = len(times) + len(errors)
            elapsed = time.perf_counter() - t_start
            # Stop when the next request would likely end past the cap (Orthanc: seconds each).
            if done >= min_n and elapsed + elapsed / done > cap_s:
                break
    out = summarize(times)
    out.update(errors=len(errors), error_samples=errors[:3], planned=len(seq), elapsed_s=time.perf_counter() - t_start)
    return out


def measure_list(server: Server, target: Target, mode: str, count: int) -> dict[str, Any]:
    numbers = list(range(1, min(count, target.frames) + 1))
    with make_client(timeout=600.0) as client:
        ans = get_frames(client, server, target, numbers, mode)
    return {"frames": len(numbers), "seconds": ans.seconds, "bytes": ans.wire_bytes, "status": ans.status,
            "content_type": ans.content_type, "error": ans.error}


def measure_metadata(server: Server, target: Target, repeats: int, cap_s: float) -> dict[str, Any]:
    """Series metadata (DICOM JSON), gzip allowed as a browser would; first request, then repeats."""
    url = target.metadata_url(server.base)
    headers = {"Accept": "application/dicom+json", "Accept-Encoding": "gzip"}
    times: list[float] = []
    first: dict[str, Any] = {}
    t_start = time.perf_counter()
    with make_client() as client:
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            try:
                r = client.get(url, headers=headers)
                body = r.content
            except Exception as exc:  # noqa: BLE001 - reported in the table
                return {"error": f"{type(exc).__name__}: {exc}"[:200]}
            dt = time.perf_counter() - t0
            if r.status_code != 200:
                return {"error": f"HTTP {r.status_code}: {body[:160]!r}"}
            if i == 0:
                try:
                    items = json.loads(body)
                    n_items = len(items)
                except ValueError:
                    n_items = None
                first = {"first_ms": dt * 1e3, "json_bytes": len(body), "wire_bytes": r.num_bytes_downloaded,
                         "content_encoding": r.headers.get("content-encoding", "identity"), "instances": n_items}
            else:
                times.append(dt)
            if time.perf_counter() - t_start >= cap_s and i >= 1:
                break
    rep = summarize(times)
    return {**first, "repeat": rep}


def measure_load(server: Server | Sequence[Server], target: Target, mode: str, clients: int, duration: float,
                 n_frames: int) -> dict[str, Any]:
    """``clients`` threads, each with its own connection, fetching random frames for ``duration`` s.

    Every client has its own seeded generator, so both servers get the same frames.
    Requests in flight at the deadline are allowed to finish (counted, bounded by the
    request timeout). Given several servers (one archive behind several ports), client
    ``k`` talks to server ``k % len(servers)``: the load is split evenly.
    """
    servers = [server] if isinstance(server, Server) else list(server)
    lock = threading.Lock()
    times: list[float] = []
    ends: list[float] = []
    errors: list[str] = []
    nbytes = [0]
    t_start = time.perf_counter()
    deadline = t_start + duration

    def client_loop(k: int) -> None:
        rng = np.random.default_rng(SEED + 1000 + k)
        with make_client(timeout=180.0) as client:
            while time.perf_counter() < deadline:
                n = int(rng.integers(1, n_frames + 1))
                ans = get_frames(client, servers[k % len(servers)], target, [n], mode)
                with lock:
                    if ans.error:
                        errors.append(f"frame {n}: {ans.error}")
                    else:
                        times.append(ans.seconds)
                        ends.append(time.perf_counter())
                        nbytes[0] += ans.wire_bytes

    threads = [threading.Thread(target=client_loop, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.perf_counter()) + 200.0)
    hung = sum(t.is_alive() for t in threads)
    elapsed = max(ends + [deadline]) - t_start if ends else time.perf_counter() - t_start
    ok = len(times)
    lat = summarize(times)
    if times:
        lat["p99"] = float(np.percentile(np.asarray(times) * 1e3, 99))
    return {
        "clients": clients, "duration_s": duration, "elapsed_s": elapsed, "requests": ok, "errors": len(errors) + hung,
        "error_samples": errors[:5] + ([f"{hung} client(s) still waiting at the end"] if hung else []),
        "throughput_rps": ok / elapsed if elapsed > 0 else 0.0, "mb_per_s": nbytes[0] / MiB / elapsed if elapsed > 0 else 0.0,
        "latency": lat,
    }


def _part_type(parts: list[tuple[dict[str, str], bytes]]) -> str:
    return parts[0][0].get("content-type", "?") if parts else "?"


def compare_pixels(target: Target, mode: str, a: FrameAnswer, b: FrameAnswer) -> dict[str, Any]:
    """Byte comparison of two servers' answers to the same frame list."""
    out: dict[str, Any] = {"identical": False}
    if a.error or b.error:
        out["note"] = f"cannot compare: {a.error or ''} {b.error or ''}".strip()
        return out
    if len(a.parts) != len(b.parts):
        out["note"] = f"different frame counts ({len(a.parts)} vs {len(b.parts)})"
        return out
    same = [pa == pb for (_, pa), (_, pb) in zip(a.parts, b.parts, strict=True)]
    out["identical_frames"] = f"{sum(same)}/{len(same)}"
    out["identical"] = all(same)
    out["sizes"] = {"orthanc": [len(p) for _, p in a.parts], "dcmstream": [len(p) for _, p in b.parts]}
    if out["identical"]:
        return out
    notes = []
    for (_, pa), (_, pb) in zip(a.parts, b.parts, strict=True):
        if pa == pb:
            continue
        if mode == "default" and len(pa) == len(pb) == target.frame_bytes:
            xa = np.frombuffer(pa, dtype=target.dtype).astype(np.int64)
            xb = np.frombuffer(pb, dtype=target.dtype).astype(np.int64)
            d = np.abs(xa - xb)
            notes.append(f"max |diff| {int(d.max())}, {100.0 * np.count_nonzero(d) / d.size:.1f}% of samples differ, "
                         f"mean |diff| {d.mean():.3f}")
        else:
            shorter, longer = sorted((pa, pb), key=len)
            if longer.startswith(shorter) and not longer[len(shorter):].strip(b"\0"):
                notes.append(f"same bytes, {len(longer) - len(shorter)} trailing NUL padding byte(s) differ")
            else:
                notes.append(f"different bytes ({len(pa)} vs {len(pb)})")
    out["note"] = "; ".join(sorted(set(notes)))
    return out


# ==============================================================================================
# Driver
# ==============================================================================================


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench_orthanc", description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=1000, help="frames per file (default 1000)")
    p.add_argument("--quick", action="store_true", help="smoke run: 50-frame files, few requests, 5 s of load")
    p.add_argument("--files", default="", help=f"comma-separated subset of {list(FILE_KEYS)}")
    p.add_argument("--requests", type=int, default=200, help="one-frame requests to dcmstream per file and Accept")
    p.add_argument("--orthanc-requests", type=int, default=30, help="... to Orthanc (it reads the whole file per request)")
    p.add_argument("--orthanc-cap", type=float, default=45.0, help="seconds per file and Accept for Orthanc's one-frame sample")
    p.add_argument("--clients", type=int, default=4, help="concurrent clients of the load test")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of load per scenario and server")
    p.add_argument("--load", default=LOAD_SCENARIOS, help="load scenarios FILE:MODE,... (MODE default or stored)")
    p.add_argument("--list-frames", type=int, default=100, help="frames in the list request")
    p.add_argument("--data-dir", type=Path, default=DATA_DIR)
    p.add_argument("--results-dir", type=Path, default=None)
    p.add_argument("--keep", action="store_true", help="keep the temporary archive and Orthanc storage")
    args, _unknown = p.parse_known_args(argv)  # the driver passes every benchmark the same options
    if args.quick:
        args.frames = min(args.frames, 50)
        args.requests = min(args.requests, 40)
        args.orthanc_requests = min(args.orthanc_requests, 8)
        args.orthanc_cap = min(args.orthanc_cap, 15.0)
        args.duration = min(args.duration, 5.0)
    return args


def _upload(server: Server, path: Path) -> dict[str, Any]:
    import httpx

    size = path.stat().st_size

    def chunks() -> Iterator[bytes]:
        with open(path, "rb") as fh:
            while chunk := fh.read(4 * MiB):
                yield chunk

    t0 = time.perf_counter()
    with httpx.Client(timeout=600, trust_env=False) as client:
        r = client.post(server.info["http"] + "/instances", content=chunks(),
                        headers={"Content-Type": "application/dicom", "Content-Length": str(size)})
    dt = time.perf_counter() - t0
    if r.status_code != 200:
        raise RuntimeError(f"Orthanc refused {path.name}: HTTP {r.status_code} {r.text[:300]}")
    return {"seconds": dt, "status": r.json().get("Status"), "mb_per_s": size / MiB / dt}


def _import(archive: Path, paths: list[Path], tmp: Path, sampler: RssSampler) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "dcmstream", "import", *map(str, paths), "--archive", str(archive), "--quiet"]
    t0 = time.perf_counter()
    proc = _spawn(cmd, tmp / "import.log", REPO)
    sampler.watch("dcmstream import", proc.pid)
    try:
        code = proc.wait(timeout=900)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise RuntimeError("dcmstream import did not finish in 900 s") from None
    finally:
        sampler.unwatch("dcmstream import")
    if code != 0:
        raise RuntimeError(f"dcmstream import failed ({code}): {(tmp / 'import.log').read_text()[-500:]}")
    return {"seconds": time.perf_counter() - t0, "peak_rss_mb": sampler.peak.get("dcmstream import", 0) / MiB}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse(argv)
    started = time.perf_counter()
    machine = machine_info()
    n = args.frames
    keys = [k for k in FILE_KEYS if not args.files or k in args.files.split(",")]
    specs = {f.key: f for f in FRAME_FILES}
    seq = [int(i) + 1 for i in np.random.default_rng(SEED).permutation(n)[: args.requests]]
    seq_orthanc = seq[: args.orthanc_requests]
    data: dict[str, Any] = {
        "benchmark": NAME, "machine": machine, "argv": argv, "frames": n,
        "settings": {k: v for k, v in vars(args).items() if k not in ("data_dir", "results_dir")},
        "random_sequence": {"seed": SEED, "dcmstream": len(seq), "orthanc": len(seq_orthanc)},
    }

    # -- dependencies and data --------------------------------------------------------------
    try:
        _log("checking Orthanc (scripts/install-orthanc.sh) ...")
        data["install"] = install_orthanc() or "already installed"
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return _fail(data, f"Orthanc is not available: {exc}", args, started)

    from dcmstream.samples import ensure_sample

    targets: dict[str, Target] = {}
    for key in keys:
        f = specs[key]
        path = args.data_dir / f"{key}-{n}.dcm"
        if not path.exists():
            _log(f"generating {path} ...")
        targets[key] = _target(key, f.title, ensure_sample(path, frames=n, **f.sample))
    data["files"] = {k: {**{kk: str(vv) if isinstance(vv, Path) else vv for kk, vv in vars(t).items()}} for k, t in targets.items()}

    args.data_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="orthanc-run-", dir=args.data_dir))  # on disk, not tmpfs
    sampler = RssSampler()
    servers: dict[str, Server] = {}
    results: dict[str, Any] = {}
    data["results"] = results
    # A SIGTERM (timeout, CI cancel) must still reach the finally below that stops the servers.
    previous = signal.signal(signal.SIGTERM, _raise_exit) if threading.current_thread() is threading.main_thread() else None
    try:
        # -- both servers, same files --------------------------------------------------------
        _log("importing into a dcmstream archive ...")
        results["import"] = _import(tmp / "archive", [t.path for t in targets.values()], tmp, sampler)
        _log(f"  {results['import']['seconds']:.1f} s")
        servers["orthanc"] = start_orthanc(tmp)
        sampler.watch("orthanc", servers["orthanc"].proc.pid)
        servers["dcmstream"] = start_dcmstream(tmp, tmp / "archive")
        sampler.watch("dcmstream", servers["dcmstream"].proc.pid)
        time.sleep(0.5)
        results["idle_rss_mb"] = {s: sampler.last.get(s, 0) / MiB for s in SERVERS}
        sampler.phase("upload")
        uploads = {}
        for key, t in targets.items():
            _log(f"uploading {t.path.name} ({t.size_mb:.0f} MB) to Orthanc ...")
            uploads[key] = _upload(servers["orthanc"], t.path)
        results["orthanc_upload"] = uploads
        data["versions"] = {**versions(VERSIONED), **orthanc_versions(servers["orthanc"])}

        # -- what comes back, and is it the same? ----------------------------------------------
        sampler.phase("serve")
        verify: dict[str, Any] = {}
        frames_v = sorted({1, max(1, n // 2), n})[:VERIFY_FRAMES]
        for key, t in targets.items():
            for mode in MODES:
                answers = {}
                for s in SERVERS:
                    with make_client(timeout=600.0) as client:
                        answers[s] = get_frames(client, servers[s], t, frames_v, mode)
                cmp = compare_pixels(t, mode, answers["orthanc"], answers["dcmstream"])
                verify[f"{key}/{mode}"] = {
                    "frames": frames_v,
                    **{s: {"ms": a.seconds * 1e3, "content_type": a.content_type, "part_type": _part_type(a.parts),
                           "part_bytes": len(a.parts[0][1]) if a.parts else None, "error": a.error}
                       for s, a in answers.items()},
                    **cmp,
                }
                _log(f"verify {key}/{mode}: {'identical' if cmp['identical'] else cmp.get('note')}")
        results["verify"] = verify

        # -- one frame -------------------------------------------------------------------------
        latency: dict[str, Any] = {}
        for key, t in targets.items():
            for mode in MODES:
                if mode == "stored" and key == "ct-native":
                    continue  # stored as Explicit VR LE: the same answer as the default (checked above)
                row = {}
                for s in SERVERS:
                    if s == "orthanc":
                        row[s] = measure_latency(servers[s], t, mode, seq_orthanc, args.orthanc_cap, min_n=3)
                    else:
                        row[s] = measure_latency(servers[s], t, mode, seq, cap_s=60.0, min_n=10)
                med_o, med_d = row["orthanc"].get("median"), row["dcmstream"].get("median")
                row["speedup"] = med_o / med_d if med_o and med_d else None
                latency[f"{key}/{mode}"] = row
                _log(f"one frame {key}/{mode}: orthanc {_fmt(med_o)} ms (n={row['orthanc']['n']}), "
                     f"dcmstream {_fmt(med_d)} ms (n={row['dcmstream']['n']}), x{_fmt(row['speedup'])}")
        results["latency"] = latency

        # -- 100 frames in one request -------------------------------------------------------------
        lists: dict[str, Any] = {}
        for key, t in targets.items():
            for mode in MODES:
                if mode == "stored" and key == "ct-native":
                    continue
                row = {s: measure_list(servers[s], t, mode, args.list_frames) for s in SERVERS}
                so, sd = row["orthanc"]["seconds"], row["dcmstream"]["seconds"]
                row["speedup"] = so / sd if so and sd and not (row["orthanc"]["error"] or row["dcmstream"]["error"]) else None
                lists[f"{key}/{mode}"] = row
                _log(f"{row['dcmstream']['frames']} frames {key}/{mode}: orthanc {so:.2f} s, dcmstream {sd:.2f} s")
        results["list"] = lists

        # -- series metadata ---------------------------------------------------------------------
        meta: dict[str, Any] = {}
        for key, t in targets.items():
            meta[key] = {
                "orthanc": measure_metadata(servers["orthanc"], t, repeats=2, cap_s=20.0),
                "dcmstream": measure_metadata(servers["dcmstream"], t, repeats=5, cap_s=20.0),
            }
            _log(f"metadata {key}: orthanc {_fmt(meta[key]['orthanc'].get('first_ms'))} ms, "
                 f"dcmstream {_fmt(meta[key]['dcmstream'].get('first_ms'))} ms (first)")
        results["metadata"] = meta

        # -- concurrent clients ------------------------------------------------------------------
        load: dict[str, Any] = {}
        for scenario in filter(None, (s.strip() for s in args.load.split(","))):
            key, _, mode = scenario.partition(":")
            mode = mode or "default"
            if key not in targets or mode not in MODES:
                continue
            row = {}
            for s in SERVERS:
                sampler.phase(f"load {key}/{mode}")
                row[s] = measure_load(servers[s], targets[key], mode, args.clients, args.duration, n)
                _log(f"load {key}/{mode} {s}: {row[s]['throughput_rps']:.1f} req/s, p99 "
                     f"{_fmt(row[s]['latency'].get('p99'))} ms, {row[s]['errors']} errors")
            load[f"{key}/{mode}"] = row
            sampler.phase("serve")
        results["load"] = load
    except Exception as exc:  # noqa: BLE001 - reported in the results; the servers are still stopped
        import traceback

        traceback.print_exc()
        data["error"] = f"{type(exc).__name__}: {exc}"
        for s, server in servers.items():
            data.setdefault("server_logs", {})[s] = server.log_tail(30)
    finally:
        for s, server in servers.items():
            alive = server.alive()
            server.stop()
            results.setdefault("exit", {})[s] = "stopped by us" if alive else f"had exited with {server.proc.returncode}"
        sampler.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            _log(f"kept {tmp}")

    results["rss"] = {
        s: {"peak_mb": sampler.peak.get(s, 0) / MiB,
            "by_phase_mb": {ph: v / MiB for ph, v in sampler.by_phase.get(s, {}).items()},
            "series_mb": sampler.series.get(s, [])}
        for s in SERVERS
    }
    results["rss_samples"] = sampler.samples
    data.setdefault("versions", {**versions(VERSIONED), **orthanc_versions(None)})
    runtime = time.perf_counter() - started
    data["runtime_s"] = runtime
    machine["loadavg_end"] = machine_info()["loadavg"]
    data["targets"] = _targets(data)
    md = _markdown(data)
    name = NAME if not args.files else NAME + "-partial"
    name += "-quick" if args.quick else ""
    out_md, out_js = write_results(name, md, data, args.results_dir)
    print(md)
    print(f"\nwritten: {out_md} and {out_js}  (runtime {runtime:.0f} s)")
    if "error" in data:
        return 1
    return 0 if all(t["pass"] for t in data["targets"] if t["pass"] is not None) else 1


def _raise_exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _fail(data: dict[str, Any], why: str, args: argparse.Namespace, started: float) -> int:
    _log(why)
    data["error"] = why
    data["runtime_s"] = time.perf_counter() - started
    write_results(NAME + ("-quick" if args.quick else ""), f"# DICOMweb: dcmstream against Orthanc\n\nNot run: {why}\n", data,
                  args.results_dir)
    return 1


# ==============================================================================================
# Targets and report
# ==============================================================================================


def _targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    res = data.get("results", {})
    out: list[dict[str, Any]] = []

    def add(name: str, measured: float | None, limit: float, ok: bool | None, how: str) -> None:
        out.append({"target": name, "measured": measured, "limit": limit, "pass": ok, "how": how})

    latency = res.get("latency", {})
    for key, limit in SPEEDUP_MIN.items():
        rows = {k: v for k, v in latency.items() if k.startswith(key + "/")}
        if not rows:
            continue
        speedups = {k.split("/")[1]: v.get("speedup") for k, v in rows.items()}
        valid = [x for x in speedups.values() if x is not None]
        worst = min(valid) if len(valid) == len(speedups) else None
        how = "median Orthanc / median dcmstream, one random frame; worst of " + ", ".join(
            f"{m} x{_fmt(x)}" for m, x in speedups.items())
        if data["frames"] < FULL_FRAMES:
            # Orthanc's cost grows with the file (it reads all of it); ours does not.
            how += f" (informative: the target is for {FULL_FRAMES}-frame files)"
        add(f"one frame >= {limit:g}x faster than Orthanc ({key})", worst, limit,
            None if worst is None or data["frames"] < FULL_FRAMES else worst >= limit, how)
    rss = res.get("rss", {}).get("dcmstream", {}).get("peak_mb")
    if rss:
        add("dcmstream serve peak RSS <= 250 MB throughout", rss, RSS_MAX_MB, rss <= RSS_MAX_MB,
            f"psutil every {SAMPLE_INTERVAL_S * 1000:g} ms, process + children, server start to stop (MB)")
    load = res.get("load", {})
    if load:
        errs = sum(v["dcmstream"]["errors"] for v in load.values())
        add("zero errors under load (dcmstream)", errs, 0, errs == 0,
            f"{len(load)} scenario(s) x {data['settings']['clients']} clients x {data['settings']['duration']:g} s")
    return out


def _fmt(x: Any, unit: str = "") -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "n/a"
    if isinstance(x, str):
        return x
    if isinstance(x, int):
        return str(x)
    a = abs(x)
    s = f"{x:.3f}" if a < 1 else f"{x:.2f}" if a < 10 else f"{x:.1f}" if a < 100 else f"{x:.0f}"
    return s + unit


def _short_type(ct: str) -> str:
    """A content type without its boundary (long and random)."""
    return re.sub(r";\s*boundary=[^;]*", "", ct or "").strip() or "?"


def _markdown(data: dict[str, Any]) -> str:
    m, v, res, st = data["machine"], data.get("versions", {}), data.get("results", {}), data["settings"]
    lines = [
        "# DICOMweb: dcmstream against Orthanc",
        "",
        f"- command: `{' '.join(['python bench/run.py --only orthanc', *data['argv']])}`",
        f"- date: {m['date']}; runtime {data['runtime_s']:.0f} s",
        f"- machine: {m['cpu_count']} CPUs ({m['cpu_model']}), RAM {m['ram_gib']} GiB, {m['os']}, Python {m['python']}",
        (f"- load average at start {m['loadavg']}, at end {m.get('loadavg_end')}"
        " (a load above 0.5 per CPU means other work competed: timings are noisy)"),
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        ("- servers on loopback, measured one at a time by this process (httpx, one connection per client, keep-alive): "
        "Orthanc with a temporary configuration (DICOM server off, storage in a temporary folder, only the DICOMweb "
        "plugin, otherwise defaults: MaximumStorageCacheSize 128 MB, SeriesMetadata Full), files uploaded by "
        "`POST /instances`; `dcmstream serve` (defaults: 64 MB frame cache) on an archive filled by `dcmstream import`"),
        (f"- one-frame requests: the same random frame sequence (seed {SEED}, no repeats), {data['random_sequence']['dcmstream']} "
        f"requests to dcmstream, the first {data['random_sequence']['orthanc']} to Orthanc (stopped after "
        f"about {st['orthanc_cap']:g} s once 3 are done; n column); time until the whole body is in; frames with "
        "`Accept-Encoding: identity`"),
        ("- Accept: **default** = `multipart/related; type=\"application/octet-stream\"` (Explicit VR LE pixels, decoded "
        "when stored compressed); **stored** = the same plus `transfer-syntax=*` (as stored). The native file is stored "
        "as Explicit VR LE, so both give the same answer there: only the default is timed."),
        "",
    ]
    if "error" in data:
        lines += [f"**Run failed:** {data['error']}", ""]
    if data.get("files"):
        lines += ["## Files", ""]
        rows = [[k, f["title"], f["transfer_syntax"], f["frames"], _fmt(f["size_mb"]), _fmt(f["frame_bytes"] / 1024)]
                for k, f in data["files"].items()]
        lines += [markdown_table(["file", "content", "transfer syntax", "frames", "size MB", "decoded frame KB"], rows,
                                 "lllrrr"), ""]
        imp, up = res.get("import"), res.get("orthanc_upload")
        if imp and up:
            lines += [f"Ingest: `dcmstream import` {imp['seconds']:.1f} s for all files (peak RSS {imp['peak_rss_mb']:.0f} MB); "
                      "Orthanc `POST /instances` " + ", ".join(f"{k} {u['seconds']:.1f} s" for k, u in up.items()) + ".", ""]

    if res.get("verify"):
        lines += ["## What each server returned, and are the pixels the same?", "",
                  "One request per server for frames " + ",".join(map(str, next(iter(res["verify"].values()))["frames"]))
                  + " (the first request to each file: cold).", ""]
        rows = []
        for k, r in res["verify"].items():
            key, mode = k.split("/")
            same = "yes" if r.get("identical") else "no"
            note = r.get("note", "")
            for s in SERVERS:
                a = r[s]
                rows.append([key, mode, s, f"`{_short_type(a['content_type'])}`", f"`{a['part_type']}`",
                             a["part_bytes"] if a["part_bytes"] is not None else a["error"], _fmt(a["ms"]),
                             same if s == "orthanc" else "", note if s == "orthanc" else ""])
        lines += [markdown_table(["file", "Accept", "server", "response Content-Type", "part Content-Type", "part bytes",
                                  "ms (3 frames, cold)", "identical", "difference"], rows, "llllllrll"), ""]

    if res.get("latency"):
        lines += ["## One frame", ""]
        rows = []
        for k, r in res["latency"].items():
            key, mode = k.split("/")
            o, d = r["orthanc"], r["dcmstream"]
            rows.append([key, mode, _fmt(o.get("median")), _fmt(o.get("p95")), f"{o['n']}" + (f" ({o['errors']} err)" if o["errors"] else ""),
                         _fmt(d.get("median")), _fmt(d.get("p95")), f"{d['n']}" + (f" ({d['errors']} err)" if d["errors"] else ""),
                         "x" + _fmt(r.get("speedup"))])
        lines += [markdown_table(["file", "Accept", "Orthanc median ms", "Orthanc p95 ms", "n", "dcmstream median ms",
                                  "dcmstream p95 ms", "n", "speedup (medians)"], rows, "llrrrrrrr"), ""]

    if res.get("list"):
        lines += [f"## {st['list_frames']} frames in one request (`frames/1,2,...`)", ""]
        rows = []
        for k, r in res["list"].items():
            key, mode = k.split("/")
            o, d = r["orthanc"], r["dcmstream"]
            rows.append([key, mode, o["frames"], _fmt(o["seconds"]) if not o["error"] else "ERROR " + o["error"],
                         _fmt(d["seconds"]) if not d["error"] else "ERROR " + d["error"],
                         _fmt(o["bytes"] / MiB), _fmt(d["bytes"] / MiB), "x" + _fmt(r.get("speedup"))])
        lines += [markdown_table(["file", "Accept", "frames", "Orthanc s", "dcmstream s", "Orthanc MB", "dcmstream MB", "speedup"],
                                 rows, "llrrrrrr"), ""]

    if res.get("metadata"):
        lines += ["## Series metadata (`.../series/{uid}/metadata`, `Accept-Encoding: gzip`)", ""]
        rows = []
        for key, r in res["metadata"].items():
            for s in SERVERS:
                x = r[s]
                if "error" in x:
                    rows.append([key, s, "ERROR " + x["error"], "", "", "", ""])
                    continue
                rows.append([key, s, _fmt(x["first_ms"]), _fmt(x["repeat"].get("median")), x["repeat"].get("n", 0),
                             _fmt(x["json_bytes"] / 1024), f"{_fmt(x['wire_bytes'] / 1024)} ({x['content_encoding']})"])
        lines += [markdown_table(["file", "server", "first ms", "repeat median ms", "repeats", "JSON KB", "on the wire KB"],
                                 rows, "llrrrrr"), ""]

    if res.get("load"):
        lines += [f"## {st['clients']} concurrent clients, random frames, {st['duration']:g} s per server", "",
                  "Requests in flight at the deadline finish and count (elapsed = until the last one).", ""]
        rows = []
        for k, r in res["load"].items():
            key, mode = k.split("/")
            for s in SERVERS:
                x = r[s]
                lat = x["latency"]
                rows.append([key, mode, s, x["requests"], _fmt(x["elapsed_s"]), _fmt(x["throughput_rps"]), _fmt(x["mb_per_s"]),
                             _fmt(lat.get("median")), _fmt(lat.get("p99")), x["errors"],
                             "; ".join(x["error_samples"][:2])])
        lines += [markdown_table(["file", "Accept", "server", "requests", "elapsed s", "req/s", "MB/s", "median ms", "p99 ms",
                                  "errors", "error samples"], rows, "lllrrrrrrrl"), ""]

    if res.get("rss"):
        lines += ["## Server memory (RSS, process + children, sampled every 50 ms)", ""]
        rows = []
        idle = res.get("idle_rss_mb", {})
        for s in SERVERS:
            r = res["rss"][s]
            ph = r["by_phase_mb"]
            loads = [vv for kk, vv in ph.items() if kk.startswith("load")]
            rows.append([s, _fmt(idle.get(s)), _fmt(ph.get("upload")), _fmt(max([ph.get("serve", 0), *loads]) or None),
                         _fmt(max(loads) if loads else None), _fmt(r["peak_mb"])])
        lines += [markdown_table(["server", "idle after start MB", "peak during Orthanc upload MB", "peak while serving MB",
                                  "peak under load MB", "peak overall MB"], rows, "lrrrrr"), ""]
        if res.get("import"):
            lines += [(f"`dcmstream import` (a separate process, before the server starts) peaked at "
                      f"{res['import']['peak_rss_mb']:.0f} MB."), ""]

    lines += ["## Targets", ""]
    busy = max(m["loadavg"][0], (m.get("loadavg_end") or [0])[0]) / max(1, m["cpu_count"] or 1)
    if busy > 0.5:
        lines += [f"Note: the machine was busy (load average up to {busy:.1f} per CPU): latencies are noisy.", ""]
    rows = [[t["target"], _fmt(t["measured"]), _fmt(t["limit"]), "n/a" if t["pass"] is None else "PASS" if t["pass"] else "FAIL",
             t["how"]] for t in data.get("targets", [])]
    lines += [markdown_table(["target", "measured", "limit", "result", "how"], rows, "lrrll"), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
