"""dcmstream.memory: the one memory probe (RSS, machine use, kernel peak)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from dcmstream import memory


def test_rss_grows_with_touched_memory() -> None:
    before = memory.process_rss()
    block = np.ones(64 << 20, np.uint8)  # touched: resident
    after = memory.process_rss()
    assert after - before >= 48 << 20
    del block
    assert memory.process_rss(include_children=True) >= memory.process_rss() - (8 << 20)


def test_machine_figures() -> None:
    assert 0.0 < memory.system_memory_fraction() <= 1.0
    assert memory.total_memory() > memory.process_rss() > 0


def test_children_count_with_include_children() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys, numpy; a = numpy.ones(40 << 20, 'u1'); sys.stdin.read()"],
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        import time

        import psutil

        proc = psutil.Process(child.pid)
        for _ in range(500):  # until the child holds its block (bounded, not a timing test)
            if proc.memory_info().rss > 40 << 20:
                break
            time.sleep(0.01)
        assert memory.process_rss(include_children=True) - memory.process_rss() >= 40 << 20
    finally:
        child.communicate(b"")


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's VmHWM reset")
def test_peak_is_reset_and_sees_a_freed_spike() -> None:
    assert memory.reset_peak_rss()
    base = memory.peak_rss()
    spike = np.ones(64 << 20, np.uint8)
    del spike
    peak = memory.peak_rss()
    assert base is not None and peak is not None and peak - base >= 48 << 20
