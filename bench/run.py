"""Run the benchmarks: every ``bench/bench_*.py`` module's ``main(argv)``, or the ``--only`` ones.

    python bench/run.py                      # all benchmarks
    python bench/run.py --only frames        # bench/bench_frames.py only (NAME or bench_NAME)
    python bench/run.py --only frames --quick
    python bench/run.py --list

Options the driver does not know are passed to every benchmark's ``main(argv)``; each
benchmark parses them with ``parse_known_args`` and ignores the ones it does not use.
The exit status is non-zero when a benchmark failed or reported a missed target.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(BENCH_DIR.parent))


def discover() -> list[str]:
    """Names (without the ``bench_`` prefix) of the benchmark modules, sorted."""
    return sorted(p.stem[len("bench_") :] for p in BENCH_DIR.glob("bench_*.py"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only this benchmark (repeatable, or comma-separated)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args, rest = parser.parse_known_args(argv)
    names = discover()
    if args.list:
        print("\n".join(names))
        return 0
    wanted = [n.strip().removeprefix("bench_").removesuffix(".py") for o in args.only for n in o.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in names]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; available: {names}")
    status = 0
    for name in wanted or names:
        print(f"== bench_{name} ==", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            module = importlib.import_module(f"bench.bench_{name}")
            code = module.main(list(rest))
        except SystemExit as exc:  # argparse errors and explicit exits
            code = exc.code if isinstance(exc.code, int) else 1
        except Exception:  # noqa: BLE001 - one broken benchmark must not stop the others
            traceback.print_exc()
            code = 1
        print(f"== bench_{name}: exit {code or 0}, {time.perf_counter() - t0:.0f} s ==", file=sys.stderr, flush=True)
        status = status or (code or 0)
    return status


if __name__ == "__main__":
    sys.exit(main())
