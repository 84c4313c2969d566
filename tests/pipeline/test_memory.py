"""Memory: batch sizing from the budget, back-pressure under simulated pressure, and the
budget held with inputs far larger than it (measured in a fresh interpreter)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from dcmstream import pipeline
from dcmstream.cache import MemorySample
from dcmstream.pipeline import BudgetOptions, RunOptions
from dcmstream.pipeline.budget import BatchSizer, initial_batch
from dcmstream.samples import write_multiframe

MiB = 1 << 20


def test_initial_batch_is_the_seed_rule() -> None:
    # budget x 0.7 / (item size x 3)
    assert initial_batch(64 * MiB, 512 * 1024) == int(64 * MiB * 0.7 // (512 * 1024 * 3)) == 29
    assert initial_batch(10 * MiB, 100 * MiB) == 1  # never below one item
    assert initial_batch(1 << 40, 1, max_batch=50) == 50


def test_batch_follows_the_measured_item_size() -> None:
    sizer = BatchSizer(64 * MiB, 512 * 1024)
    assert sizer.batch == 29 and sizer.window == 87
    assert sizer.admissible(0, 2) == 4  # slow start: measure the first items first
    sizer.observe_item(4 * MiB)  # items turn out 8x larger (fn returned big arrays)
    sizer.observe_rss(0, 0, steady=False)
    assert sizer.batch == int(64 * MiB * 0.7 // (4 * MiB * 1.5 * 3)) == 2
    for _ in range(40):  # then small again: the batch grows back, slowly
        sizer.observe_item(256 * 1024)
        sizer.observe_rss(0, 0, steady=False)
    assert sizer.batch > 20 and sizer.smallest == 2
    # RSS per live item counts, capped at 4x what the arrays show
    sizer.observe_item(256 * 1024)
    sizer.observe_rss(200 * MiB, 10)
    assert sizer.estimate == pytest.approx(4 * 256 * 1024 * 1.5)


class FakeProbe:
    """System memory at 95 % from arm() until ``seconds`` later, then 20 %."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.until = 0.0
        self.calls = 0

    def arm(self) -> None:
        self.until = time.monotonic() + self.seconds

    def __call__(self) -> MemorySample:
        self.calls += 1
        pressure = time.monotonic() < self.until
        return MemorySample(0.95 if pressure else 0.2, 100 * MiB)


def test_back_pressure_pauses_producers_and_resumes(tmp_path: Path) -> None:
    path = write_multiframe(tmp_path / "ct.dcm", frames=60, syntax="explicit", kind="ct", rows=32, columns=32)
    probe = FakeProbe(0.6)
    started: list[float] = []
    state = {"armed": False}

    def fn(item):
        started.append(time.monotonic())
        if item.frame == 4 and not state["armed"]:
            state["armed"] = True
            probe.arm()  # pressure appears in the middle of the run
        time.sleep(0.01)  # 60 items take 0.3 s: most are still to come when the pressure starts
        return item.frame

    sink = pipeline.ListSink()
    report = pipeline.run(path, fn, workers=2, sink=sink, memory_budget="64MB", options=RunOptions(budget=BudgetOptions(memory_probe=probe, monitor_interval=0.02)))
    assert report.items == 60 and report.failed == 0
    assert sink.results == list(range(60))  # nothing lost, in order
    assert report.pauses >= 1 and 0.4 < report.paused_seconds < 3.0
    assert report.forced == 0
    # while paused, only items admitted before the pause ran: a gap of about the pause
    gaps = np.diff(sorted(started))
    assert gaps.max() > 0.4


def test_process_memory_over_the_budget_pauses_too(tmp_path: Path) -> None:
    path = write_multiframe(tmp_path / "ct.dcm", frames=10, syntax="explicit", kind="ct", rows=16, columns=16)
    budget = 64 * MiB
    t0 = time.monotonic()

    def probe() -> MemorySample:  # RSS 90 % of the budget above where it started, for 0.3 s
        over = time.monotonic() - t0 < 0.3
        return MemorySample(0.1, 500 * MiB + (int(0.9 * budget) if over else 0))

    report = pipeline.run(path, lambda f: f.frame, memory_budget=budget, options=RunOptions(budget=BudgetOptions(memory_probe=probe, monitor_interval=0.02)))
    # the baseline was taken under "pressure"; growth is relative to it, so no pause:
    assert report.items == 10

    calls = {"n": 0}

    def probe2() -> MemorySample:
        calls["n"] += 1
        grown = 3 <= calls["n"] < 12
        return MemorySample(0.1, 500 * MiB + (int(0.9 * budget) if grown else 0))

    report = pipeline.run(path, lambda f: time.sleep(0.01) or f.frame, memory_budget=budget, options=RunOptions(budget=BudgetOptions(memory_probe=probe2, monitor_interval=0.02)))
    assert report.items == 10 and report.pauses >= 1


def test_a_pause_that_cannot_end_degrades_to_one_item_at_a_time(tmp_path: Path) -> None:
    path = write_multiframe(tmp_path / "ct.dcm", frames=8, syntax="explicit", kind="ct", rows=16, columns=16)
    in_flight = []
    lock = threading.Lock()
    live = {"n": 0}

    def fn(item):
        with lock:
            live["n"] += 1
            in_flight.append(live["n"])
        time.sleep(0.005)
        with lock:
            live["n"] -= 1
        return item.frame

    def always() -> MemorySample:
        return MemorySample(0.99, 1)

    report = pipeline.run(path, fn, workers=2, options=RunOptions(
        budget=BudgetOptions(memory_probe=always, monitor_interval=0.01, stall_timeout=0.2)))
    assert report.items == 8 and report.forced == 8
    assert max(in_flight) == 1
    assert report.paused_seconds >= 0.2


_BUDGET_SCRIPT = r"""
import gc, json, sys, time
import numpy as np
from dcmstream import pipeline
from dcmstream.memory import peak_rss, process_rss, reset_peak_rss

def fn(item):
    a = item.array
    time.sleep(0.002)  # slower than reading: without the window, items would pile up
    return {"max": int(a.max()), "std": float(a.std())}

gc.collect()
base = process_rss()
assert reset_peak_rss()  # the kernel's peak-RSS counter starts from now
r = pipeline.run(sys.argv[1], fn, memory_budget=sys.argv[2], workers=2, sink=sys.argv[3])
print(json.dumps({"above": peak_rss() - base, "items": r.items, "failed": r.failed, "batch": r.batch_initial,
                  "window_peak": r.batch_max * 3, "reported": r.peak_rss_above_baseline}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's VmHWM reset")
def test_budget_is_respected_with_inputs_far_larger_than_it(tmp_path: Path) -> None:
    # 300 MiB of frames (600 x 512 x 512 x 16 bit, stored uncompressed so reading is
    # fast and items would pile up) through a 64 MiB budget.
    frames = 600
    write_multiframe(tmp_path / "big.dcm", frames=frames, syntax="explicit", kind="ct")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(pipeline.__file__).parents[2]), env.get("PYTHONPATH", "")])
    budget = 64 * MiB
    proc = subprocess.run([sys.executable, "-c", _BUDGET_SCRIPT, str(tmp_path / "big.dcm"), str(budget),
                           str(tmp_path / "stats.csv")], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["items"] == frames and out["failed"] == 0
    assert out["batch"] == 29
    assert out["above"] <= budget, f"peak {out['above'] / MiB:.1f} MiB above the baseline, budget 64 MiB"
    assert len((tmp_path / "stats.csv").read_text().splitlines()) == frames + 1
    print(out)
