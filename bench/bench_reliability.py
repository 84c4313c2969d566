"""Reliability figures (issue 14): the crash, load and HTTP fuzz tests of tests/reliability,
run through pytest, with the figures they record collected into one table.

The tests are the measurement: each writes its figures (acknowledged, lost, requests,
errors, peak RSS, fuzz cases) into the JSON file named by ``DCMSTREAM_RELIABILITY_REPORT``.
Durations come from the tests' environment variables; ``--quick`` shortens them.

    python bench/run.py --only reliability [--quick] [--load-seconds 60] [--fuzz-seconds 30] [--kills 10]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, machine_info, markdown_table, versions, write_results


def run_suite(load_seconds: float, fuzz_seconds: float, kills: int) -> tuple[int, dict[str, Any], float]:
    """(pytest exit status, the recorded figures, seconds) of one run of tests/reliability."""
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        report = Path(tmp) / "figures.json"
        env = dict(os.environ, DCMSTREAM_RELIABILITY_REPORT=str(report), DCMSTREAM_LOAD_SECONDS=str(load_seconds),
                   DCMSTREAM_FUZZ_SECONDS=str(fuzz_seconds), DCMSTREAM_CRASH_KILLS=str(kills))
        src = str(REPO / "src")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
        started = time.perf_counter()
        code = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/reliability"],
                               cwd=REPO, env=env)
        elapsed = time.perf_counter() - started
        figures = json.loads(report.read_text()) if report.exists() else {}
    return code, figures, elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 10 s load, 10 s fuzz, 3 kills (no results file)")
    parser.add_argument("--load-seconds", type=float, default=60.0)
    parser.add_argument("--fuzz-seconds", type=float, default=30.0)
    parser.add_argument("--kills", type=int, default=10)
    args, _unknown = parser.parse_known_args(argv)
    if args.quick:
        args.load_seconds, args.fuzz_seconds, args.kills = 10.0, 10.0, 3
    code, figures, elapsed = run_suite(args.load_seconds, args.fuzz_seconds, args.kills)

    rows = []
    for kind in ("crash-folder", "crash-config-sqlite"):
        c = figures.get(kind)
        if c:
            rows.append([kind, f"{c['kills']} kills, {c['clients']} clients, {c['stow_requests']} STOW answers",
                         f"acknowledged {c['acknowledged']} ({c['multiframe_acknowledged']} multiframe), lost {c['lost']}, "
                         f"cut {c['unacknowledged']} (stored whole {c['unacknowledged_stored']}); the last restart's own "
                         f"sweep removed {c['last_start_sweep_orphan_blobs']} orphan blobs and "
                         f"{c['last_start_sweep_staging_files']} staging files; then rows == blobs, staging empty"])
    load = figures.get("load")
    if load:
        rows.append(["load", f"{load['clients']} clients, {load['seconds']} s, --cache-mb {load['cache_mb']}",
                     f"requests {load['requests']} ({load['requests_per_s']}/s; {load['by_op']}), errors {load['errors']}, "
                     f"peak RSS {load['peak_rss_mb']} MB (idle {load['idle_rss_mb']}, per quarter of the run {load.get('peak_rss_mb_by_quarter')}, bound {load['rss_bound_mb']})"])
    fuzz = figures.get("fuzz")
    if fuzz:
        rows.append(["HTTP fuzz", f"schemathesis from /openapi.json, {fuzz['seconds']} s",
                     f"cases {fuzz['cases']}, failures {fuzz['failures']}, statuses {fuzz['statuses']}"])
    m = machine_info()
    results = {"machine": m, "versions": versions(["dcmstream", "schemathesis", "hypothesis"]), "pytest_exit": code,
               "seconds": round(elapsed, 1), "figures": figures}
    lines = [
        "# Reliability: kill -9 during STOW, mixed load, HTTP API fuzz",
        "",
        f"{m['date']}, {m['cpu_count']} CPUs ({m['cpu_model']}), load average {m['loadavg']}, Python {m['python']}; "
        f"`pytest tests/reliability` (exit {code}) in {elapsed:.0f} s. Real `dcmstream serve` processes on loopback "
        "(the fuzz run: uvicorn in the test process).",
        "",
        markdown_table(["test", "setup", "figures"], rows, "lll"),
    ]
    markdown = "\n".join(lines)
    print(markdown)
    if not args.quick:
        write_results("reliability", markdown, results)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
