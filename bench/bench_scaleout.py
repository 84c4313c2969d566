"""Scale-out archive benchmark (issue 13): storage tiers, bytes per frame, workers, Orthanc + PostgreSQL.

Everything runs on loopback and is started and stopped by this benchmark (also on
failure or SIGTERM): a throwaway PostgreSQL server (``tests/postgres_util.py``: Debian's
binaries, a temporary data directory), moto's S3 server in a child process, OpenStack
Swift with s3api (``tests/s3_util.py``) when its packages are installed, ``dcmstream serve
--config`` processes (``tests/server_util.py``) and Orthanc. Inputs are the 1,000-frame
512x512 CT files of bench_frames (JPEG-LS with BOT, 124 MB, and native Explicit VR LE,
500 MB), written once into bench/data/ by :func:`dcmstream.samples.ensure_sample`; each
storage gets its own catalog database on the PostgreSQL server, filled by ``dcmstream
import --config``.

1. **Tiers**: one ``dcmstream serve --config`` (1 worker) per storage (folder, S3 on moto,
   S3 on Swift): one-frame latency over a random frame sequence without repeats (median,
   p95), then ``--clients`` threads fetching random frames for ``--duration`` s, for
   ``transfer-syntax=*`` (as stored) and decoded octet-stream. Anchors in the same run:
   the folder tier, and a whole-object GET of the same S3 object (what each frame costs a
   system without ranged reads).
2. **Bytes fetched from S3 per frame request**: the same configuration opened in this
   process (:func:`dcmstream.config.open_archive`, frame cache off) behind the real ASGI
   app on a loopback uvicorn, so the S3 store's fetch counters are readable: requests one
   at a time, fetched bytes per request minus the frame's stored bytes. Target: at most
   64 KiB (the ranged source's read-ahead) beyond the frame.
3. **Workers**: ``[server] workers`` = 1, 2, 4 (PostgreSQL + folder and PostgreSQL + S3 on
   Swift, or on moto without Swift), and two separate ``serve`` processes on two ports sharing catalog and storage
   with the clients split between them; 8 client threads, random frames of the JPEG-LS
   file, as stored and decoded, ``--workers-duration`` s each; req/s and speed-up vs 1.
4. **Orthanc with its PostgreSQL plugins** (Debian ``orthanc-postgresql``: index and
   storage in PostgreSQL, a database on the same throwaway server), the same files
   uploaded, the same one-frame requests and load.

    python bench/run.py --only scaleout [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_frames import FILES as FRAME_FILES
from bench.bench_orthanc import (
    ORTHANC_PLUGINS_DIR,
    Server,
    Target,
    _target,
    _upload,
    get_frames,
    install_orthanc,
    make_client,
    measure_latency,
    measure_load,
    orthanc_versions,
    start_orthanc,
)
from bench.common import DATA_DIR, REPO, MiB, MotoProcess, machine_info, markdown_table, versions, write_results

NAME = "scaleout"
SEED = 20240115  # bench_frames' and bench_orthanc's random frame sequence
FILE_KEYS = ("ct-jpegls-bot", "ct-native")
READAHEAD_LIMIT = 64 * 1024  # issue 13: a frame request fetches <= frame + 64 KiB
WORKER_COUNTS = (1, 2, 4)
VERSIONED = ["dcmstream", "boto3", "moto", "psycopg", "sqlalchemy", "uvicorn", "httpx", "starlette"]
AWS_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
# Swift's tempauth user; moto accepts any credentials, so one set serves both.
S3_ENV = {"AWS_ACCESS_KEY_ID": "test:tester", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
TIER_TITLES = {"folder": "folder (file://)", "moto": "S3, moto server", "swift": "S3, Swift s3api"}


def _log(msg: str) -> None:
    print(f"[scaleout] {msg}", file=sys.stderr, flush=True)


def _modes(key: str) -> list[str]:
    """The native file is stored as Explicit VR LE: as stored and decoded are the same answer."""
    return ["default"] if key == "ct-native" else ["stored", "default"]


# ==============================================================================================
# Archives: one configuration (catalog database + one storage) per tier
# ==============================================================================================


def write_config(path: Path, catalog_url: str, storage: dict[str, str], root: Path, cache_mb: int, workers: int = 1) -> Path:
    lines = [f'[archive]\nroot = "{root}"', f'[catalog]\nurl = "{catalog_url}"', "[storage.hot]"]
    lines += [f'{k} = "{v}"' for k, v in storage.items()]
    lines += [f"[server]\ncache_mb = {cache_mb}\nworkers = {workers}\n"]
    path.write_text("\n".join(lines))
    return path


def import_files(config: Path, paths: list[Path], log: Path) -> float:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])))
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.run([sys.executable, "-m", "dcmstream", "import", "--config", str(config), "--quiet", *map(str, paths)],
                              stdout=out, stderr=subprocess.STDOUT, env=env, timeout=1800, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"dcmstream import --config {config.name} failed ({proc.returncode}): {log.read_text()[-800:]}")
    return time.perf_counter() - t0


class DcmstreamServers:
    """``dcmstream serve --config`` processes started by this run; all stopped by :meth:`stop_all`."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.running: list[Server] = []
        self._n = 0

    def start(self, config: Path, workers: int = 1) -> Server:
        from tests.server_util import start_config_server

        self._n += 1
        log = self.tmp / f"serve-{self._n}-{config.stem}-w{workers}.log"
        sp = start_config_server(config, log=log, args=("--workers", str(workers)), timeout=120.0)
        server = Server("dcmstream", sp.process, sp.url + "/dicomweb", log, {"http": sp.url, "workers": workers})
        self.running.append(server)
        return server

    def stop(self, server: Server) -> None:
        server.stop(grace=20.0)
        if server in self.running:
            self.running.remove(server)

    def stop_all(self) -> None:
        for server in list(self.running):
            self.stop(server)


def warm_up(servers: list[Server], target: Target, seconds: float) -> None:
    """Open connections and the instance on every server (and worker) before timing."""
    for server in servers:
        with make_client() as client:
            get_frames(client, server, target, [1], "stored")
    if seconds > 0:
        measure_load(servers, target, "stored", 8, seconds, target.frames)


# ==============================================================================================
# Measurements
# ==============================================================================================


def whole_object_gets(s3_client: Any, bucket: str, key: str, count: int, cap_s: float) -> dict[str, Any]:
    """GET the whole object ``count`` times (stopped after ``cap_s`` once 2 are done), streamed and discarded."""
    times: list[float] = []
    size = 0
    t_start = time.perf_counter()
    for _ in range(count):
        t0 = time.perf_counter()
        body = s3_client.get_object(Bucket=bucket, Key=key)["Body"]
        size = 0
        for chunk in body.iter_chunks(4 * MiB):
            size += len(chunk)
        times.append(time.perf_counter() - t0)
        if len(times) >= 2 and time.perf_counter() - t_start > cap_s:
            break
    ms = np.asarray(times) * 1e3
    return {"n": len(times), "median": float(np.median(ms)), "p95": float(np.percentile(ms, 95)), "bytes": size,
            "mb_per_s": size / MiB / (float(np.median(ms)) / 1e3)}


def object_key_of(s3_client: Any, bucket: str, size: int) -> str:
    """The key of the object of ``size`` bytes (an archived instance is stored byte for byte)."""
    sizes: dict[int, str] = {}
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", ()):
            sizes[int(item["Size"])] = str(item["Key"])
    if size in sizes:
        return sizes[size]
    return sizes[min(sizes, key=lambda s: abs(s - size))]


def fetched_per_frame(config_path: Path, targets: dict[str, Target], seq: list[int]) -> dict[str, Any]:
    """Bytes fetched from S3 per frame request, through the DICOMweb app served in this process."""
    import dcmstream
    from dcmstream.config import load_config, open_archive
    from dcmstream.web.app import create_app
    from tests.server_util import running_server

    out: dict[str, Any] = {}
    archive = open_archive(load_config(config_path), cache=False)
    try:
        store = archive.tiers["hot"]
        stats = store.fetch_stats  # type: ignore[attr-defined]  # an S3BlobStore
        with running_server(create_app(archive)) as url, make_client() as client:
            server = Server("dcmstream-in-process", None, url + "/dicomweb", Path(os.devnull))  # type: ignore[arg-type]
            for key, t in targets.items():
                with dcmstream.open(t.path, cache=False) as inst:
                    stored_len = {n: len(inst.encoded_frame(n - 1)) for n in seq}
                for mode in _modes(key):
                    first: dict[str, int] | None = None
                    extra: list[int] = []
                    gets: list[int] = []
                    errors = 0
                    for i, n in enumerate(seq):
                        r0, b0 = stats.requests, stats.bytes
                        ans = get_frames(client, server, t, [n], mode)
                        dr, db = stats.requests - r0, stats.bytes - b0
                        if ans.error:
                            errors += 1
                            continue
                        if i == 0:  # the instance's first request (record, HEAD): kept apart
                            first = {"frame": n, "frame_bytes": stored_len[n], "fetched": db, "gets": dr}
                            continue
                        extra.append(db - stored_len[n])
                        gets.append(dr)
                    e = np.asarray(extra or [0])
                    out[f"{key}/{mode}"] = {
                        "n": len(extra), "errors": errors, "first": first,
                        "frame_bytes_median": int(np.median([stored_len[n] for n in seq])),
                        "extra_min": int(e.min()), "extra_median": float(np.median(e)), "extra_max": int(e.max()),
                        "gets_per_request": float(np.mean(gets)) if gets else None,
                    }
                    _log(f"  fetched {key}/{mode}: extra min/median/max {out[f'{key}/{mode}']['extra_min']}/"
                         f"{out[f'{key}/{mode}']['extra_median']:.0f}/{out[f'{key}/{mode}']['extra_max']} B, "
                         f"{out[f'{key}/{mode}']['gets_per_request']} GET/request")
    finally:
        archive.close()
    return out


class CpuMeter:
    """CPU used while a load runs, in cores (CPU seconds per wall second): the servers'
    process trees, this process (the client), the S3 server's processes (moto, Swift:
    children of this process) and the whole machine (every process, the other users of a
    shared machine included). Shows which side was saturated."""

    def __init__(self, servers: list[Server]) -> None:
        self.server_pids = [s.proc.pid for s in servers]
        me = psutil.Process()
        self.storage_pids = []
        for child in me.children(recursive=True):
            try:
                cmd = " ".join(child.cmdline())
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if "moto.server" in cmd or "swift-" in cmd:
                self.storage_pids.append(child.pid)
        self.result: dict[str, float] = {}

    @staticmethod
    def _trees(pids: list[int]) -> float:
        total = 0.0
        for pid in pids:
            try:
                root = psutil.Process(pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for proc in procs:
                try:
                    t = proc.cpu_times()
                    total += t.user + t.system
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
        return total

    def _sample(self) -> tuple[float, ...]:
        own = psutil.Process().cpu_times()
        machine = psutil.cpu_times()
        busy = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
        return (time.perf_counter(), self._trees(self.server_pids), own.user + own.system, self._trees(self.storage_pids), busy)

    def __enter__(self) -> CpuMeter:
        self._start = self._sample()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._sample()
        wall = max(end[0] - self._start[0], 1e-9)
        names = ("servers", "client", "s3", "machine")
        self.result = {name: (end[i + 1] - self._start[i + 1]) / wall for i, name in enumerate(names)}


def run_load(servers: list[Server], target: Target, mode: str, clients: int, duration: float) -> dict[str, Any]:
    """:func:`bench_orthanc.measure_load` (random frames, ``clients`` threads split over the
    servers) with the CPU each side used."""
    with CpuMeter(servers) as cpu:
        res = measure_load(servers, target, mode, clients, duration, target.frames)
    lat = res["latency"]
    return {"requests": res["requests"], "rps": res["throughput_rps"], "mb_per_s": res["mb_per_s"],
            "median": lat.get("median"), "p99": lat.get("p99"), "errors": res["errors"], "error_samples": res["error_samples"],
            "cpu_cores": cpu.result}


def _cpu_cell(row: dict[str, Any], s3: bool) -> str:
    c = row.get("cpu_cores")
    if not c:
        return ""
    parts = [f"{c['servers']:.2f}", f"{c['client']:.2f}"] + ([f"{c['s3']:.2f}"] if s3 else ["-"]) + [f"{c['machine']:.2f}"]
    return " / ".join(parts)


def _lat_row(res: dict[str, Any]) -> dict[str, Any]:
    return {k: res.get(k) for k in ("n", "median", "p95", "errors", "error_samples")}


# ==============================================================================================
# Orthanc with the PostgreSQL index and storage plugins
# ==============================================================================================


def orthanc_pg_overrides(host: str, port: int, database: str, user: str) -> dict[str, Any]:
    plugins = [ORTHANC_PLUGINS_DIR / name for name in
               ("libOrthancDicomWeb.so", "libOrthancPostgreSQLIndex.so", "libOrthancPostgreSQLStorage.so")]
    missing = [str(p) for p in plugins if not p.exists()]
    if missing:
        raise RuntimeError(f"Orthanc plugin(s) missing after scripts/install-orthanc.sh: {', '.join(missing)}")
    return {
        "Plugins": [str(p) for p in plugins],
        "PostgreSQL": {
            "EnableIndex": True, "EnableStorage": True, "Host": host, "Port": port, "Database": database,
            "Username": user, "Password": "", "Lock": False,
        },
    }


def run_orthanc(tmp: Path, pg: Any, targets: dict[str, Target], seq: list[int], args: argparse.Namespace) -> dict[str, Any]:
    from tests.postgres_util import SUPERUSER

    out: dict[str, Any] = {}
    _log("checking Orthanc (scripts/install-orthanc.sh) ...")
    out["install"] = install_orthanc() or "already installed"
    url = pg.create_database("orthanc")
    overrides = orthanc_pg_overrides("127.0.0.1", pg.port, url.rsplit("/", 1)[1], SUPERUSER)
    (tmp / "orthanc").mkdir()
    server = start_orthanc(tmp / "orthanc", overrides)
    try:
        vers = orthanc_versions(server)
        vers["deb orthanc-postgresql"] = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "orthanc-postgresql"], capture_output=True, text=True, timeout=30,
            check=False).stdout.strip() or "-"
        import httpx

        with httpx.Client(timeout=30, trust_env=False) as client:
            plugins = client.get(server.info["http"] + "/plugins").json()
            system = client.get(server.info["http"] + "/system").json()
        out["versions"] = vers
        out["plugins"] = plugins
        out["database"] = {k: system.get(k) for k in ("DatabaseBackendPlugin", "StorageAreaPlugin", "DatabaseVersion")}
        if "postgresql-index" not in plugins or "postgresql-storage" not in plugins:
            raise RuntimeError(f"Orthanc started without the PostgreSQL plugins (loaded: {plugins})")
        out["upload"] = {}
        for key, t in targets.items():
            _log(f"uploading {t.path.name} ({t.size_mb:.0f} MB) to Orthanc (PostgreSQL storage) ...")
            out["upload"][key] = _upload(server, t.path)
        out["latency"], out["load"] = {}, {}
        for key, t in targets.items():
            for mode in _modes(key):
                lat = measure_latency(server, t, mode, seq[: args.orthanc_requests], args.orthanc_cap, min_n=3)
                out["latency"][f"{key}/{mode}"] = _lat_row(lat)
                _log(f"  orthanc {key}/{mode}: median {lat.get('median', float('nan')):.1f} ms (n={lat['n']})")
                load = run_load([server], t, mode, args.clients, args.duration)
                out["load"][f"{key}/{mode}"] = load
                _log(f"  orthanc load {key}/{mode}: {load['rps']:.2f} req/s, {load['errors']} errors")
    except Exception:
        out["log_tail"] = server.log_tail(30)
        raise
    finally:
        server.stop()
    return out


# ==============================================================================================
# Driver
# ==============================================================================================


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench_scaleout", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 50-frame files, short loads, no Swift, workers 1 and 2")
    p.add_argument("--frames", type=int, default=1000, help="frames per file (default 1000)")
    p.add_argument("--requests", type=int, default=200, help="one-frame latency requests per tier, file and Accept")
    p.add_argument("--clients", type=int, default=4, help="client threads of the per-tier load")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of per-tier load")
    p.add_argument("--workers-clients", type=int, default=8, help="client threads of the workers comparison")
    p.add_argument("--workers-duration", type=float, default=12.0, help="seconds per workers setting and Accept")
    p.add_argument("--warm-up", type=float, default=2.0, help="seconds of unmeasured load after each workers start")
    p.add_argument("--fetch-requests", type=int, default=100, help="frame requests counted for bytes fetched")
    p.add_argument("--whole-gets", type=int, default=5, help="whole-object GETs of the anchor (time-capped)")
    p.add_argument("--orthanc-requests", type=int, default=30, help="one-frame requests to Orthanc (time-capped)")
    p.add_argument("--orthanc-cap", type=float, default=45.0, help="seconds per file and Accept for Orthanc's one-frame sample")
    p.add_argument("--cache-mb", type=int, default=1, help="dcmstream serve frame cache per process (1: every request reads the tier)")
    p.add_argument("--no-swift", action="store_true", help="skip the Swift s3api tier")
    p.add_argument("--no-orthanc", action="store_true", help="skip Orthanc")
    p.add_argument("--data-dir", type=Path, default=DATA_DIR)
    p.add_argument("--results-dir", type=Path, default=None)
    args, _unknown = p.parse_known_args(argv)
    if args.quick:
        args.frames = min(args.frames, 50)
        args.requests = min(args.requests, 12)
        args.duration = min(args.duration, 1.0)
        args.workers_duration = min(args.workers_duration, 1.0)
        args.warm_up = min(args.warm_up, 0.3)
        args.fetch_requests = min(args.fetch_requests, 8)
        args.whole_gets = min(args.whole_gets, 2)
        args.orthanc_requests = min(args.orthanc_requests, 3)
        args.orthanc_cap = min(args.orthanc_cap, 2.0)
        args.no_swift = True
    return args


def _raise_exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _s3_environment() -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in AWS_KEYS}
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse(argv)
    started = time.perf_counter()
    n = args.frames
    data: dict[str, Any] = {"benchmark": NAME, "machine": machine_info(), "argv": argv, "frames": n,
                            "settings": {k: v for k, v in vars(args).items() if k not in ("data_dir", "results_dir")},
                            "versions": versions(VERSIONED)}
    results: dict[str, Any] = {}
    data["results"] = results

    from dcmstream.samples import ensure_sample
    from tests.postgres_util import postgres_server, unavailable_reason
    from tests.s3_util import swift_available, swift_server

    reason = unavailable_reason()
    if reason:
        return _finish(data, args, started, f"PostgreSQL is not available: {reason}")
    specs = {f.key: f for f in FRAME_FILES}
    args.data_dir.mkdir(parents=True, exist_ok=True)
    targets = {key: _target(key, specs[key].title, ensure_sample(args.data_dir / f"{key}-{n}.dcm", frames=n, **specs[key].sample))
               for key in FILE_KEYS}
    data["files"] = {k: {"title": t.title, "transfer_syntax": t.transfer_syntax, "frames": t.frames, "size_mb": t.size_mb,
                         "decoded_frame_bytes": t.frame_bytes} for k, t in targets.items()}
    seq = [int(i) + 1 for i in np.random.default_rng(SEED).permutation(n)[: args.requests]]
    fetch_seq = [int(i) + 1 for i in np.random.default_rng(SEED + 7).permutation(n)[: args.fetch_requests + 1]]
    use_swift = not args.no_swift and swift_available()
    data["swift"] = "used" if use_swift else ("skipped (--no-swift or --quick)" if args.no_swift else
                                              "skipped: swift-proxy/account/container/object not installed")

    tmp = Path(tempfile.mkdtemp(prefix="scaleout-", dir=args.data_dir))  # on disk, not tmpfs
    previous = signal.signal(signal.SIGTERM, _raise_exit) if threading.current_thread() is threading.main_thread() else None
    servers = DcmstreamServers(tmp)
    error: str | None = None
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(_s3_environment())
            _log("starting PostgreSQL ...")
            pg = stack.enter_context(postgres_server())
            data["postgresql"] = {"start_s": pg.start_seconds}
            _log("starting moto ...")
            moto = MotoProcess()
            stack.callback(moto.close)
            os.environ.update(S3_ENV)
            s3_endpoints: dict[str, Any] = {"moto": moto}
            if use_swift:
                _log("starting Swift (s3api) ...")
                (tmp / "swift").mkdir()
                s3_endpoints["swift"] = stack.enter_context(swift_server(tmp / "swift"))
            stack.callback(servers.stop_all)

            # -- one archive per tier, filled by dcmstream import --config --------------------------
            configs: dict[str, Path] = {}
            buckets: dict[str, str] = {}
            results["import_s"] = {}
            for tier in ["folder", *s3_endpoints]:
                if tier == "folder":
                    storage = {"url": f"file://{tmp / 'folder-objects'}"}
                else:
                    ep = s3_endpoints[tier]
                    buckets[tier] = ep.bucket() if tier == "moto" else ep.make_bucket()
                    storage = {"url": f"s3://{buckets[tier]}/dicom", "endpoint_url": ep.url if tier == "moto" else ep.endpoint_url,
                               "staging_dir": str(tmp / f"{tier}-staging")}
                configs[tier] = write_config(tmp / f"{tier}.toml", pg.create_database(f"dcm_{tier}"), storage,
                                             tmp / f"{tier}-local", args.cache_mb)
                _log(f"importing into PostgreSQL + {tier} ...")
                results["import_s"][tier] = import_files(configs[tier], [t.path for t in targets.values()],
                                                         tmp / f"import-{tier}.log")

            # -- 1. latency and throughput per tier; anchor: whole-object GET -----------------------
            tiers: dict[str, Any] = {}
            for tier, config in configs.items():
                server = servers.start(config)
                for key, t in targets.items():
                    warm_up([server], t, 0)
                    for mode in _modes(key):
                        lat = measure_latency(server, t, mode, seq, cap_s=90.0, min_n=min(10, len(seq)))
                        load = run_load([server], t, mode, args.clients, args.duration)
                        tiers[f"{tier}/{key}/{mode}"] = {"latency": _lat_row(lat), "load": load}
                        _log(f"{tier} {key}/{mode}: median {lat.get('median', float('nan')):.2f} ms, p95 "
                             f"{lat.get('p95', float('nan')):.2f} ms; {load['rps']:.1f} req/s "
                             f"({args.clients} clients), {load['errors']} errors")
                servers.stop(server)
            results["tiers"] = tiers
            anchors: dict[str, Any] = {}
            for tier, ep in s3_endpoints.items():
                client = ep.client()
                for key, t in targets.items():
                    obj = object_key_of(client, buckets[tier], t.path.stat().st_size)
                    anchors[f"{tier}/{key}"] = whole_object_gets(client, buckets[tier], obj, args.whole_gets, cap_s=30.0)
                    _log(f"whole-object GET {tier}/{key}: median {anchors[f'{tier}/{key}']['median']:.0f} ms")
            results["whole_object_get"] = anchors

            # -- 2. bytes fetched from S3 per frame request ----------------------------------------
            fetched: dict[str, Any] = {}
            for tier in s3_endpoints:
                _log(f"bytes fetched per frame request, {tier} ...")
                fetched[tier] = fetched_per_frame(configs[tier], targets, fetch_seq)
            results["fetched"] = fetched

            # -- 3. workers 1/2/4 and two servers, 8 clients ---------------------------------------
            t = targets["ct-jpegls-bot"]
            counts = WORKER_COUNTS[:2] if args.quick else WORKER_COUNTS
            scaling: dict[str, Any] = {}
            # Swift when it runs: moto answers a ranged GET by reading the whole object.
            s3_tier = "swift" if "swift" in s3_endpoints else "moto"
            for tier in ("folder", s3_tier):
                for setting in [*(f"workers={w}" for w in counts), "2 servers"]:
                    started_here: list[Server] = []
                    if setting == "2 servers":
                        started_here = [servers.start(configs[tier], 1), servers.start(configs[tier], 1)]
                    else:
                        started_here = [servers.start(configs[tier], int(setting.split("=")[1]))]
                    warm_up(started_here, t, args.warm_up)
                    for mode in ("stored", "default"):
                        load = run_load(started_here, t, mode, args.workers_clients, args.workers_duration)
                        scaling[f"{tier}/{mode}/{setting}"] = load
                        _log(f"{tier} {mode} {setting}: {load['rps']:.1f} req/s, {load['errors']} errors, "
                             f"CPU {_cpu_cell(load, True)}")
                    for server in started_here:
                        servers.stop(server)
            results["workers"] = scaling

            # -- 4. Orthanc + PostgreSQL plugins -----------------------------------------------------
            if not args.no_orthanc:
                try:
                    results["orthanc"] = run_orthanc(tmp, pg, targets, seq, args)
                except Exception as exc:  # noqa: BLE001 - reported in the results file: why the peer is missing
                    import traceback

                    traceback.print_exc()
                    results.setdefault("orthanc", {})["error"] = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # noqa: BLE001 - reported; everything was stopped by the ExitStack
        import traceback

        traceback.print_exc()
        error = f"{type(exc).__name__}: {exc}"
        data["server_logs"] = {p.name: p.read_text(errors="replace")[-1500:] for p in sorted(tmp.glob("*.log"))}
    finally:
        servers.stop_all()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(tmp, ignore_errors=True)
    return _finish(data, args, started, error)


# ==============================================================================================
# Targets and report
# ==============================================================================================


def _targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    res = data["results"]
    out: list[dict[str, Any]] = []
    for tier, rows in res.get("fetched", {}).items():
        worst = max((r["extra_max"] for r in rows.values()), default=None)
        out.append({"target": f"bytes fetched per frame request <= frame + 64 KiB ({TIER_TITLES[tier]})", "measured": worst,
                    "limit": READAHEAD_LIMIT, "pass": None if worst is None else worst <= READAHEAD_LIMIT,
                    "how": "max over requests and Accept headers of fetched - stored frame bytes (B)"})
    errors = sum(r["load"]["errors"] for r in res.get("tiers", {}).values())
    errors += sum(r["errors"] for r in res.get("workers", {}).values())
    if res.get("tiers") or res.get("workers"):
        out.append({"target": "zero errors under load (dcmstream)", "measured": errors, "limit": 0, "pass": errors == 0,
                    "how": "every load run of sections 1 and 3"})
    best = _best_speedup(res.get("workers", {}))
    if best is not None:
        cpus = data["machine"]["cpu_count"]
        out.append({"target": f"workers speed-up (informative; <= {cpus}x expected on {cpus} CPUs)", "measured": best,
                    "limit": None, "pass": None, "how": "best req/s of 2/4 workers or 2 servers / 1 worker, same storage and Accept"})
    return out


def _best_speedup(rows: dict[str, Any]) -> float | None:
    best = None
    for k, r in rows.items():
        tier, mode, setting = k.split("/")
        base = rows.get(f"{tier}/{mode}/workers=1")
        if setting != "workers=1" and base and base["rps"]:
            s = r["rps"] / base["rps"]
            best = s if best is None else max(best, s)
    return best


def _fmt(x: Any) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "n/a"
    if isinstance(x, str):
        return x
    if isinstance(x, int):
        return str(x)
    a = abs(x)
    return f"{x:.3f}" if a < 1 else f"{x:.2f}" if a < 10 else f"{x:.1f}" if a < 100 else f"{x:.0f}"


def _finish(data: dict[str, Any], args: argparse.Namespace, started: float, error: str | None) -> int:
    if error:
        data["error"] = error
        _log(error)
    data["runtime_s"] = time.perf_counter() - started
    data["machine"]["loadavg_end"] = machine_info()["loadavg"]
    data["targets"] = _targets(data)
    md = _markdown(data)
    name = NAME + ("-quick" if args.quick else "")
    out_md, out_js = write_results(name, md, data, args.results_dir)
    print(md)
    print(f"\nwritten: {out_md} and {out_js}  (runtime {data['runtime_s']:.0f} s)")
    if error:
        return 1
    return 0 if all(t["pass"] for t in data["targets"] if t["pass"] is not None) else 1


def _markdown(data: dict[str, Any]) -> str:
    m, res, st = data["machine"], data["results"], data["settings"]
    v = data.get("versions", {})
    lines = [
        "# Scale-out archive: storage tiers, bytes per frame, workers, Orthanc + PostgreSQL",
        "",
        f"- command: `{' '.join(['python bench/run.py --only scaleout', *data['argv']])}`",
        f"- date: {m['date']}; runtime {data['runtime_s']:.0f} s",
        f"- machine: {m['cpu_count']} CPUs ({m['cpu_model']}), RAM {m['ram_gib']} GiB, {m['os']}, Python {m['python']}",
        (f"- load average at start {m['loadavg']}, at end {m.get('loadavg_end')} (the machine is shared: above 0.5 per CPU "
         "other work competed and timings are noisy)"),
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        ("- everything on loopback, started by the benchmark: PostgreSQL 15 (Debian binaries, temporary data directory, "
         "fsync off), one catalog database per storage; moto's S3 server in a child process; OpenStack Swift 2.30 with "
         f"s3api: {data.get('swift', 'n/a')}. Each storage was filled by `dcmstream import --config`."),
        ("- moto answers a ranged GET by loading the whole object and slicing it (moto 5's `_handle_range_header` "
         "gets the object's whole value), so on moto a frame costs about as much as the whole object, growing with "
         "the file; Swift reads only the range, like Amazon S3. Swift's numbers are the realistic S3 ones, and the "
         "workers comparison (section 3) uses Swift when it runs."),
        (f"- `dcmstream serve --config` with `[server] cache_mb = {st['cache_mb']}` (the frame cache effectively off, so "
         "every request reads its tier) and the S3 store's defaults (ranged GETs, 64 KiB read-ahead for small reads)."),
        ("- Accept: **stored** = `multipart/related; type=\"application/octet-stream\"; transfer-syntax=*` (as stored); "
         "**decoded** = the same without transfer-syntax (Explicit VR LE pixels, decoded from JPEG-LS). The native file "
         "is stored as Explicit VR LE, so only the decoded form is timed for it. The client is httpx in this process "
         "(threads, one keep-alive connection each) on the same 2 CPUs as the servers."),
        "",
    ]
    if "error" in data:
        lines += [f"**Run failed:** {data['error']}", ""]
    if data.get("files"):
        rows = [[k, f["title"], f["transfer_syntax"], f["frames"], _fmt(f["size_mb"]), _fmt(f["decoded_frame_bytes"] / 1024)]
                for k, f in data["files"].items()]
        lines += ["## Files", "", markdown_table(["file", "content", "transfer syntax", "frames", "MB", "decoded frame KB"], rows,
                                                 "lllrrr"), ""]
        if res.get("import_s"):
            lines += ["`dcmstream import --config` of both files: " + ", ".join(
                f"{TIER_TITLES[t]} {s:.1f} s" for t, s in res["import_s"].items()) + ".", ""]

    mode_title = {"stored": "stored", "default": "decoded"}
    if res.get("tiers"):
        lines += ["## 1. One frame per request, per storage tier (1 server process, 1 worker, PostgreSQL catalog)", "",
                  (f"Latency: {st['requests']} sequential requests, a random frame sequence without repeats (seed {SEED}). "
                   f"Throughput: {st['clients']} client threads, random frames, {st['duration']:g} s. Anchor: a GET of the "
                   "whole S3 object, streamed and discarded (what one frame costs without ranged reads; "
                   f"up to {st['whole_gets']} GETs, 30 s cap)."), ""]
        rows = []
        for k, r in res["tiers"].items():
            tier, key, mode = k.split("/")
            lat, load = r["latency"], r["load"]
            rows.append([key, mode_title[mode], TIER_TITLES[tier], _fmt(lat.get("median")), _fmt(lat.get("p95")), lat.get("n"),
                         _fmt(load["rps"]), _fmt(load["mb_per_s"]), _fmt(load["p99"]), load["errors"],
                         _cpu_cell(load, tier != "folder")])
        for k, r in res.get("whole_object_get", {}).items():
            tier, key = k.split("/")
            rows.append([key, "whole object", f"anchor: {TIER_TITLES[tier]} GET of the whole object", _fmt(r["median"]),
                         _fmt(r["p95"]), r["n"], _fmt(1e3 / r["median"]) + " (1 client)", _fmt(r["mb_per_s"]), "", "", ""])
        rows.sort(key=lambda row: (row[0], row[1] == "whole object", row[1]))
        lines += [markdown_table(["file", "Accept", "storage", "median ms", "p95 ms", "n", "req/s", "MB/s", "p99 ms under load",
                                  "errors", "CPU cores under load: server / client / S3 / machine"], rows, "lllrrrrrrrr"), ""]

    if res.get("fetched"):
        lines += ["## 2. Bytes fetched from S3 per frame request", "",
                  (f"{st['fetch_requests']} requests one at a time through the DICOMweb app in this process (the same "
                   "configuration, frame cache off), counted by the S3 store's fetch statistics; extra = fetched bytes "
                   "minus the frame's stored bytes. The instance's first request is shown apart (it also looks the record "
                   f"up and HEADs the object). Target: extra <= {READAHEAD_LIMIT} B (64 KiB). Two GETs per request "
                   "for an encapsulated frame: the frame reader reads the fragment's 8-byte item header first (a small "
                   "read: one 64 KiB read-ahead block from the header on), then the rest of the frame after that block; "
                   "the 8 extra bytes are the item header. A native frame is one exact GET."), ""]
        rows = []
        for tier, per in res["fetched"].items():
            for k, r in per.items():
                key, mode = k.split("/")
                first = r.get("first") or {}
                rows.append([TIER_TITLES[tier], key, mode_title[mode], r["n"], r["frame_bytes_median"], r["extra_min"],
                             _fmt(r["extra_median"]), r["extra_max"], _fmt(r["gets_per_request"]),
                             f"{first.get('fetched', 'n/a')} B in {first.get('gets', 'n/a')} GET(s)",
                             "PASS" if r["extra_max"] <= READAHEAD_LIMIT else "FAIL"])
        lines += [markdown_table(["storage", "file", "Accept", "requests", "frame bytes (median)", "extra min", "extra median",
                                  "extra max", "GETs/request", "first request", "<= 64 KiB"], rows, "lllrrrrrrll"), ""]

    if res.get("workers"):
        lines += [f"## 3. Workers: throughput under {st['workers_clients']} concurrent clients (JPEG-LS file)", "",
                  (f"Random frames, {st['workers_duration']:g} s per setting and Accept, after {st['warm_up']:g} s of "
                   "unmeasured load (connections to every worker process). "
                   "`workers=N` is one `dcmstream serve --config` with `[server] workers = N` (uvicorn processes on one "
                   "port); **2 servers** are two `serve` processes (1 worker each) on two ports sharing the catalog and "
                   "storage, the clients split evenly. "
                   f"This machine has {m['cpu_count']} CPUs shared by the servers, the {st['workers_clients']} client "
                   "threads and the S3 server: expect at most "
                   f"{m['cpu_count']}x, and less, since the client needs CPU too. The CPU column (cores used during "
                   "the run: the serve process trees, this client process, the S3 server's processes, the whole "
                   "machine including other users) shows which side ran out: a machine total near "
                   f"{m['cpu_count']} means the CPUs were the limit, not the number of workers. The S3 server (Swift's "
                   "proxy and object server, or moto) runs on the same CPUs, one process each."), ""]
        rows = []
        for k, r in res["workers"].items():
            tier, mode, setting = k.split("/")
            base = res["workers"].get(f"{tier}/{mode}/workers=1")
            speed = r["rps"] / base["rps"] if base and base["rps"] else None
            rows.append([f"PostgreSQL + {TIER_TITLES[tier]}", mode_title[mode], setting, r["requests"], _fmt(r["rps"]),
                         "x" + _fmt(speed), _fmt(r["median"]), _fmt(r["p99"]), r["errors"], _cpu_cell(r, tier != "folder")])
        lines += [markdown_table(["archive", "Accept", "setting", "requests", "req/s", "speed-up vs 1 worker", "median ms",
                                  "p99 ms", "errors", "CPU cores: servers / client / S3 / machine"], rows, "lllrrrrrrr"), ""]

    orth = res.get("orthanc")
    if orth is not None or not st.get("no_orthanc"):
        lines += ["## 4. Orthanc with its PostgreSQL plugins (index and storage in PostgreSQL)", ""]
        if orth is None:
            lines += ["Not run (an earlier failure).", ""]
        elif "error" in orth:
            lines += [f"**Orthanc + PostgreSQL could not be measured here:** {orth['error']}", ""]
            if orth.get("log_tail"):
                lines += ["```", orth["log_tail"], "```", ""]
        if orth and orth.get("latency"):
            ver = orth.get("versions", {})
            lines += [("Orthanc " + ", ".join(f"{k} {val}" for k, val in ver.items()) + "; a temporary configuration "
                       "(loopback HTTP, DICOM server off) loading only the DICOMweb and PostgreSQL index + storage plugins, "
                       "on a database of the same PostgreSQL server; files uploaded with `POST /instances` ("
                       + ", ".join(f"{k} {u['seconds']:.1f} s" for k, u in orth.get("upload", {}).items()) + "). Same "
                       f"frame sequence (first {st['orthanc_requests']} requests, about {st['orthanc_cap']:g} s cap), same "
                       f"{st['clients']}-client load for {st['duration']:g} s. dcmstream column: PostgreSQL + folder "
                       "(section 1)."), ""]
            rows = []
            for k, r in orth["latency"].items():
                key, mode = k.split("/")
                ours = res.get("tiers", {}).get(f"folder/{k}", {})
                ol, od = r, ours.get("latency", {})
                load_o, load_d = orth["load"].get(k, {}), ours.get("load", {})
                speed = ol.get("median") / od["median"] if ol.get("median") and od.get("median") else None
                rows.append([key, mode_title[mode], _fmt(ol.get("median")), _fmt(ol.get("p95")), ol.get("n"),
                             _fmt(od.get("median")), "x" + _fmt(speed), _fmt(load_o.get("rps")), _fmt(load_d.get("rps")),
                             load_o.get("errors")])
            lines += [markdown_table(["file", "Accept", "Orthanc median ms", "Orthanc p95 ms", "n", "dcmstream median ms",
                                      "speed-up", "Orthanc req/s", "dcmstream req/s", "Orthanc errors"], rows,
                                     "llrrrrrrrr"), ""]

    lines += ["## Targets", ""]
    rows = [[t["target"], _fmt(t["measured"]), _fmt(t["limit"]), "n/a" if t["pass"] is None else "PASS" if t["pass"] else "FAIL",
             t["how"]] for t in data.get("targets", [])]
    lines += [markdown_table(["target", "measured", "limit", "result", "how"], rows, "lrrll"), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
