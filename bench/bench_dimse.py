"""DIMSE benchmark (issue 15): C-STORE and C-MOVE throughput, dcmstream against Orthanc.

The same client for both servers: DCMTK's ``storescu`` sends (one association per run) and
``movescu`` asks each server to send to a DCMTK ``storescp`` started by the benchmark.
Inputs (generated once into bench/data/ by :mod:`dcmstream.samples`):

* 1,000 CT slices, 512x512, explicit VR little endian (``write_series``; ~525 MB);
* the 1,000-frame JPEG-LS CT multiframe (``ensure_sample``, the frame benchmarks' file).

Servers: ``dcmstream serve ARCHIVE --dimse-port`` (a folder archive, a fresh one) and
Debian's ``orthanc`` (scripts/install-orthanc.sh) with its DICOM server on, in the same run.
Reported per server and workload: seconds, instances/s and MB/s of the C-STORE, the same
for a study-level C-MOVE of what was stored, and the server's peak RSS (process tree).

    python bench/run.py --only dimse [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pydicom

from bench.bench_orthanc import (
    RssSampler,
    Server,
    _spawn,
    _wait_ready,
    install_orthanc,
    orthanc_versions,
    start_orthanc,
)
from bench.common import DATA_DIR, REPO, free_port, machine_info, markdown_table, versions, write_results

DCMTK = Path("/usr/bin")  # pynetdicom puts its own "storescu" etc. on the PATH


def _log(msg: str) -> None:
    print(f"[dimse] {msg}", file=sys.stderr, flush=True)


def workloads(quick: bool) -> dict[str, list[Path]]:
    from dcmstream.samples import ensure_sample, write_series

    slices, frames = (100, 100) if quick else (1000, 1000)
    series = DATA_DIR / f"series-explicit-{slices}"
    if not series.exists():
        _log(f"generating {series} ...")
        write_series(series, files=slices, syntax="explicit", seed=7)
    big = ensure_sample(DATA_DIR / f"ct-jpegls-bot-{frames}.dcm", frames=frames, syntax="jpeg-ls", kind="ct",
                        offset_table="bot")
    return {f"{slices} CT slices": sorted(series.iterdir()), f"{frames}-frame JPEG-LS CT": [big]}


def start_dcmstream(tmp: Path, peer: str) -> tuple[Server, int]:
    port, dimse = free_port(), free_port()
    cmd = [sys.executable, "-m", "dcmstream", "serve", str(tmp / "archive"), "--host", "127.0.0.1", "--port", str(port),
           "--dimse-port", str(dimse), "--ae-title", "DCMSTREAM", "--dimse-peer", peer]
    proc = _spawn(cmd, tmp / "dcmstream.log", REPO, dict(os.environ, PYTHONUNBUFFERED="1"))
    server = Server("dcmstream", proc, f"http://127.0.0.1:{port}/dicomweb", tmp / "dcmstream.log",
                    {"http": f"http://127.0.0.1:{port}", "command": " ".join(cmd[1:])})
    _wait_ready(server, f"http://127.0.0.1:{port}/healthz")
    return server, dimse


def start_orthanc_dimse(tmp: Path, storescp_port: int) -> tuple[Server, int]:
    dimse = free_port()
    server = start_orthanc(tmp, {
        "DicomServerEnabled": True, "DicomAet": "ORTHANC", "DicomPort": dimse, "DicomCheckCalledAet": False,
        "DicomModalities": {"storescp": ["STORESCP", "127.0.0.1", storescp_port]},
        "DicomAlwaysAllowStore": True, "DicomAlwaysAllowMove": True,
    })
    return server, dimse


def _storescu_flags(path: Path) -> list[str]:
    syntax = str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    return {"1.2.840.10008.1.2.4.80": ["-xt"], "1.2.840.10008.1.2.4.81": ["-xu"], "1.2.840.10008.1.2.4.90": ["-xv"],
            "1.2.840.10008.1.2.4.70": ["-xs"], "1.2.840.10008.1.2.5": ["-xr"]}.get(syntax, [])


def _rate(seconds: float, files: list[Path]) -> dict[str, Any]:
    size = sum(p.stat().st_size for p in files)
    return {"seconds": round(seconds, 2), "instances": len(files), "mb": round(size / 1e6, 1),
            "instances_per_s": round(len(files) / seconds, 1), "mb_per_s": round(size / 1e6 / seconds, 1)}


def c_store(ae: str, port: int, files: list[Path]) -> dict[str, Any]:
    cmd = [str(DCMTK / "storescu"), "-aec", ae, "-pdu", "131072", *_storescu_flags(files[0]), "127.0.0.1", str(port),
           *map(str, files)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"storescu to {ae} failed ({proc.returncode}): {proc.stderr[-500:]}")
    return _rate(seconds, files)


def c_move(ae: str, port: int, study: str, received: Path, files: list[Path]) -> dict[str, Any]:
    for old in received.iterdir():
        old.unlink()
    cmd = [str(DCMTK / "movescu"), "-S", "-aec", ae, "-aem", "STORESCP", "-k", "QueryRetrieveLevel=STUDY",
           "-k", f"StudyInstanceUID={study}", "127.0.0.1", str(port)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - t0
    got = len(list(received.iterdir()))
    if proc.returncode != 0 or got != len(files):
        raise RuntimeError(f"movescu via {ae}: exit {proc.returncode}, {got}/{len(files)} received: {proc.stderr[-500:]}")
    return _rate(seconds, files)


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="100 slices and a 100-frame file")
    p.add_argument("--no-orthanc", action="store_true", help="dcmstream only")
    args, _ = p.parse_known_args(argv)
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(list(argv or []))
    started = time.perf_counter()
    inputs = workloads(args.quick)
    results: dict[str, Any] = {"machine": machine_info(), "versions": versions(["pynetdicom", "pydicom"]),
                               "quick": args.quick, "servers": {}}
    tmp = Path(tempfile.mkdtemp(prefix="bench-dimse-"))
    sampler = RssSampler()
    received = tmp / "received"
    received.mkdir()
    scp_port = free_port()
    storescp = subprocess.Popen([str(DCMTK / "storescp"), "-aet", "STORESCP", "+xa", "-pdu", "131072", "-od",
                                 str(received), str(scp_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        servers: list[tuple[str, Any]] = [("dcmstream", lambda d: start_dcmstream(d, f"STORESCP@127.0.0.1:{scp_port}"))]
        if not args.no_orthanc:
            _log("checking Orthanc (scripts/install-orthanc.sh) ...")
            results["orthanc_install"] = install_orthanc() or "already installed"
            servers.append(("orthanc", lambda d: start_orthanc_dimse(d, scp_port)))
        for name, start in servers:
            folder = tmp / name
            folder.mkdir()
            server, port = start(folder)
            ae = "DCMSTREAM" if name == "dcmstream" else "ORTHANC"
            out: dict[str, Any] = {}
            results["servers"][name] = out
            if name == "orthanc":
                results["orthanc_versions"] = orthanc_versions(server)
            sampler.watch(name, server.proc.pid)
            try:
                for key, files in inputs.items():
                    study = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
                    sampler.phase(f"{name} store {key}")
                    _log(f"{name}: C-STORE {key} ...")
                    store = c_store(ae, port, files)
                    _log(f"  {store['instances_per_s']} instances/s, {store['mb_per_s']} MB/s")
                    sampler.phase(f"{name} move {key}")
                    _log(f"{name}: C-MOVE {key} ...")
                    move = c_move(ae, port, study, received, files)
                    _log(f"  {move['instances_per_s']} instances/s, {move['mb_per_s']} MB/s")
                    out[key] = {"store": store, "move": move}
                out["peak_rss_mb"] = round(sampler.peak.get(name, 0) / 1e6)
            finally:
                sampler.unwatch(name)
                server.stop()
    finally:
        sampler.stop()
        storescp.kill()
        storescp.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    results["seconds"] = round(time.perf_counter() - started)
    md, js = write_results("dimse", _markdown(results), results)
    _log(f"wrote {md} and {js}")
    return 0


def _markdown(data: dict[str, Any]) -> str:
    rows = []
    for name, out in data["servers"].items():
        for key, r in out.items():
            if not isinstance(r, dict):
                continue
            for op in ("store", "move"):
                m = r[op]
                rows.append([name, key, f"C-{op.upper()}", m["instances"], m["mb"], m["seconds"], m["instances_per_s"],
                             m["mb_per_s"], out.get("peak_rss_mb", "")])
    m = data["machine"]
    lines = [
        "# DIMSE: C-STORE and C-MOVE throughput, dcmstream vs Orthanc",
        "",
        "Client: DCMTK `storescu` (one association per workload, max PDU 128 KiB) for C-STORE; `movescu` "
        "(study level) to a DCMTK `storescp` for C-MOVE. Both servers on this machine, one after the other, "
        "fresh storage. dcmstream: `dcmstream serve ARCHIVE --dimse-port` (a folder archive); Orthanc: Debian "
        "package, default settings, DICOM server on. Peak RSS: the server's process tree over the whole run.",
        "",
        markdown_table(["server", "workload", "operation", "instances", "MB", "s", "instances/s", "MB/s", "peak RSS MB"],
                       rows),
        "",
        f"Machine: {m.get('cpu_model', '?')}, {m.get('cpu_count', '?')} CPUs, load {m.get('loadavg')}. Versions: {data.get('versions')}, "
        f"Orthanc: {data.get('orthanc_versions', {}).get('orthanc --version', '-')}. Total {data['seconds']} s"
        + (" (quick)." if data.get("quick") else "."),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
