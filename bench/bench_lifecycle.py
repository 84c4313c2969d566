"""Lifecycle move throughput (MB/s) between storage tiers, with verification, against plain copies.

Workloads (generated once into bench/data/ by :mod:`dcmstream.samples`):

* ``ct-jpegls``: the 1,000-frame 512x512 JPEG-LS enhanced CT (one big instance);
* ``series-200``: a CT series of 200 single-frame 512x512 native slices (many small ones).

Each is archived in a folder archive (tier ``hot``) and moved by
:func:`dcmstream.archive.lifecycle.run_lifecycle` to tier ``cold`` and back, repeatedly:
every move is journal row + streamed copy with SHA-256 + exclusive put (fsync on folders) +
read-back of the whole copy with SHA-256 + compare-and-swap catalog switch + delete of the
old copy. Targets:

* ``folder -> folder`` (same disk), anchors ``shutil.copyfile`` of the same blob files, and
  ``copyfile + fsync`` (what a durable copy costs, without the verification read);
* ``folder -> S3`` (moto's server in its own process on loopback), anchor boto3's
  ``upload_file`` of the same files (no read-back), and ``S3 -> folder`` back.

MB/s is bytes of the blobs moved / wall time of the run (10^6 bytes). Medians of
``--repeat`` runs (default 3), alternating direction; the anchors run in the same process
right after, on the same files, page cache warm for both.

    python bench/run.py --only lifecycle [--quick] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import DATA_DIR, MotoProcess, machine_info, markdown_table, versions, write_results
from dcmstream.archive import Archive, FilesystemBlobStore, S3BlobStore
from dcmstream.archive.lifecycle import LifecycleRule, run_lifecycle
from dcmstream.samples import ensure_sample, write_series

TO_COLD = [LifecycleRule("hot", "cold", after_days_since_ingest=0)]
TO_HOT = [LifecycleRule("cold", "hot", after_days_since_ingest=0)]


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def workloads(data_dir: Path, quick: bool) -> dict[str, list[Path]]:
    frames, slices = (100, 40) if quick else (1000, 200)
    big = ensure_sample(data_dir / f"ct-jpegls-bot-{frames}.dcm", frames=frames, syntax="jpeg-ls", kind="ct", offset_table="bot")
    series_dir = data_dir / f"series-explicit-{slices}"
    if not series_dir.exists():
        _log(f"generating {series_dir} ...")
        write_series(series_dir, files=slices, syntax="explicit", seed=7)
    return {"ct-jpegls": [big], f"series-{slices}": sorted(series_dir.iterdir())}


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 1) if values else float("nan")


def measure_moves(root: Path, files: list[Path], cold: Any, repeat: int) -> dict[str, Any]:
    """Ingest ``files`` into a fresh archive at ``root`` and move them hot->cold->hot ``repeat`` times."""
    tiers = {"hot": FilesystemBlobStore(root), "cold": cold}
    with Archive(root, tiers=tiers, cache=False, track_access=False) as arc:
        for path in files:
            result = arc.ingest_file(path)
            assert result.status == "stored", result
        total = sum(p.stat().st_size for p in files)
        out: dict[str, list[float]] = {"to_cold": [], "to_hot": []}
        for _ in range(repeat):
            for name, rules in (("to_cold", TO_COLD), ("to_hot", TO_HOT)):
                report = run_lifecycle(arc, rules)
                assert report.moved == len(files) and not report.failures, report.failures[:3]
                assert report.bytes == total
                out[name].append(report.mb_per_s)
        return {"instances": len(files), "bytes": total, "mb_per_s": {k: _median(v) for k, v in out.items()},
                "runs": out}


def anchor_copy(files: list[Path], dest: Path, repeat: int, fsync: bool) -> float:
    rates = []
    total = sum(p.stat().st_size for p in files)
    for _ in range(repeat):
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        t = time.perf_counter()
        for i, path in enumerate(files):
            target = dest / f"{i}.dcm"
            shutil.copyfile(path, target)
            if fsync:
                fd = os.open(target, os.O_RDONLY)
                os.fsync(fd)
                os.close(fd)
        rates.append(total / 1e6 / (time.perf_counter() - t))
    shutil.rmtree(dest, ignore_errors=True)
    return _median(rates)


def anchor_upload(moto: MotoProcess, files: list[Path], repeat: int) -> float:
    client = moto.client()
    bucket = moto.bucket()
    total = sum(p.stat().st_size for p in files)
    rates = []
    for r in range(repeat):
        t = time.perf_counter()
        for i, path in enumerate(files):
            client.upload_file(str(path), bucket, f"r{r}/{i}.dcm")
        rates.append(total / 1e6 / (time.perf_counter() - t))
    return _median(rates)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 100 frames, 40 slices, 1 repeat")
    parser.add_argument("--repeat", type=int, default=3, help="runs per direction (medians reported)")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--no-s3", action="store_true", help="skip the moto S3 target")
    args, _unknown = parser.parse_known_args(argv)
    repeat = 1 if args.quick else max(args.repeat, 1)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    sets = workloads(args.data_dir, args.quick)
    results: dict[str, Any] = {"machine": machine_info(), "versions": versions(["dcmstream", "boto3", "moto"]), "repeat": repeat,
                               "workloads": {}}
    moto = None if args.no_s3 else MotoProcess()
    try:
        with tempfile.TemporaryDirectory(dir=args.data_dir, prefix="lifecycle-") as tmp:
            work = Path(tmp)
            for name, files in sets.items():
                _log(f"{name}: {len(files)} files, {sum(p.stat().st_size for p in files) / 1e6:.0f} MB")
                entry: dict[str, Any] = {}
                entry["folder"] = measure_moves(work / f"{name}-a", files, FilesystemBlobStore(work / f"{name}-cold"), repeat)
                entry["anchor_copyfile"] = anchor_copy(files, work / "cp", repeat, fsync=False)
                entry["anchor_copyfile_fsync"] = anchor_copy(files, work / "cp", repeat, fsync=True)
                if moto is not None:
                    cold = S3BlobStore(moto.bucket(), "cold", endpoint_url=moto.url, staging_dir=work / f"{name}-s3staging")
                    entry["s3"] = measure_moves(work / f"{name}-b", files, cold, repeat)
                    entry["anchor_upload_file"] = anchor_upload(moto, files, repeat)
                results["workloads"][name] = entry
                _log(f"{name}: {entry}")
    finally:
        if moto is not None:
            moto.close()

    rows = []
    for name, entry in results["workloads"].items():
        folder = entry["folder"]
        rows.append([name, "folder -> folder", folder["instances"], f"{folder['bytes'] / 1e6:.0f}",
                     folder["mb_per_s"]["to_cold"], folder["mb_per_s"]["to_hot"],
                     f"copyfile {entry['anchor_copyfile']}, copyfile+fsync {entry['anchor_copyfile_fsync']}"])
        if "s3" in entry:
            s3 = entry["s3"]
            rows.append([name, "folder -> S3 (moto)", s3["instances"], f"{s3['bytes'] / 1e6:.0f}",
                         s3["mb_per_s"]["to_cold"], s3["mb_per_s"]["to_hot"], f"boto3 upload_file {entry['anchor_upload_file']}"])
    m = results["machine"]
    lines = [
        "# Lifecycle: tier move throughput with verification",
        "",
        f"{m['date']}, {m['cpu_count']} CPUs ({m['cpu_model']}), load average {m['loadavg']}, Python {m['python']}; "
        f"medians of {repeat} run(s) per direction. A move = journal row, streamed copy with SHA-256, exclusive put "
        "(fsync on folders), read-back of the whole copy with SHA-256, compare-and-swap catalog switch (SQLite), "
        "delete of the old copy. S3 is moto's server in a separate process on loopback.",
        "",
        markdown_table(["workload", "tiers", "instances", "MB", "MB/s to cold", "MB/s back to hot", "anchor MB/s (same bytes)"],
                       rows, "llrrrrl"),
    ]
    markdown = "\n".join(lines)
    print(markdown)
    if not args.quick:
        write_results("lifecycle", markdown, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
