"""MemoryGovernor: shrinks on simulated pressure, never without it, recovers, runs in a thread."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

from dcmstream.cache import FrameCache, MemoryGovernor, MemorySample

KiB = 1024
CALM = MemorySample(system_fraction=0.30, rss=100 << 20)
PRESSURE = MemorySample(system_fraction=0.92, rss=100 << 20)


class Probe:
    """Returns the sample the test sets; counts calls."""

    def __init__(self, sample: MemorySample = CALM) -> None:
        self.sample = sample
        self.calls = 0
        self.called = threading.Event()

    def __call__(self) -> MemorySample:
        self.calls += 1
        self.called.set()
        return self.sample


def filled_cache(frames: int = 64) -> FrameCache:
    cache = FrameCache(max_bytes=64 * 17 * KiB)  # 48 decoded entries, 16 encoded
    for k in range(frames):
        cache.put(("i", k, "full"), np.zeros(16 * KiB, np.uint8))
        if k < 16:
            cache.put(("i", k, "encoded"), b"x" * (16 * KiB), tier="encoded")
    return cache


def test_no_pressure_no_action() -> None:
    cache, probe = filled_cache(), Probe(CALM)
    gov = MemoryGovernor([cache], probe=probe)
    before = (cache.bytes, cache.max_bytes, cache.decoded.max_bytes, cache.encoded.max_bytes)
    for _ in range(10):
        assert gov.check() is False
    assert (cache.bytes, cache.max_bytes, cache.decoded.max_bytes, cache.encoded.max_bytes) == before
    stats = gov.stats()
    assert stats.checks == 10 and stats.shrinks == 0 and stats.level == 1.0


def test_system_pressure_halves_the_total_budget_at_every_check() -> None:
    cache, probe = filled_cache(), Probe(PRESSURE)
    assert cache.bytes > 0.9 * cache.max_bytes
    total, original = cache.max_bytes, (cache.decoded.max_bytes, cache.encoded.max_bytes)
    gov = MemoryGovernor([cache], probe=probe)
    assert gov.check() is True
    assert cache.max_bytes == total // 2 == cache.decoded.max_bytes + cache.encoded.max_bytes
    assert cache.decoded.max_bytes == original[0] // 2 and cache.encoded.max_bytes == original[1] // 2
    assert cache.bytes <= total // 2
    assert gov.check() is True
    assert cache.max_bytes == total // 4 and cache.decoded.max_bytes == original[0] // 4
    assert cache.bytes <= total // 4
    assert cache.stats().buffers.max_bytes <= total // 4  # idle decode buffers shrink too
    stats = gov.stats()
    assert stats.shrinks == 2 and stats.pressured == 2 and stats.bytes_freed > 0 and stats.level == 0.25


def test_shrunk_cache_does_not_refill_past_the_lowered_budget() -> None:
    cache, probe = filled_cache(), Probe(PRESSURE)
    gov = MemoryGovernor([cache], probe=probe)
    gov.check()
    for k in range(100, 200):
        cache.put(("i", k, "full"), np.zeros(16 * KiB, np.uint8))
    assert cache.bytes <= cache.max_bytes == 64 * 17 * KiB // 2


def test_process_limit_triggers_without_system_pressure() -> None:
    cache = filled_cache()
    probe = Probe(MemorySample(system_fraction=0.10, rss=900 << 20))
    gov = MemoryGovernor([cache], probe=probe, process_limit_bytes=800 << 20)
    assert gov.check() is True
    probe.sample = MemorySample(system_fraction=0.10, rss=500 << 20)
    assert gov.check() is False


def test_budgets_recover_after_calm_checks_with_hysteresis() -> None:
    cache, probe = filled_cache(), Probe(PRESSURE)
    original = cache.decoded.max_bytes
    gov = MemoryGovernor([cache], probe=probe, recover_checks=2, hysteresis=0.05)
    gov.check()
    gov.check()
    assert cache.decoded.max_bytes == original // 4
    probe.sample = MemorySample(0.78, 0)  # below 0.80 but inside the hysteresis band: no recovery
    for _ in range(5):
        gov.check()
    assert cache.decoded.max_bytes == original // 4
    probe.sample = CALM
    gov.check()
    assert cache.decoded.max_bytes == original // 4
    gov.check()
    assert cache.decoded.max_bytes == original // 2
    gov.check()
    gov.check()
    assert cache.decoded.max_bytes == original and gov.level == 1.0
    assert gov.stats().recoveries == 2


def test_at_the_floor_persistent_pressure_empties_the_cache() -> None:
    cache, probe = filled_cache(), Probe(PRESSURE)
    gov = MemoryGovernor([cache], probe=probe, min_fraction=0.25)
    gov.check()
    gov.check()
    assert gov.level == 0.25 and cache.bytes > 0
    gov.check()
    assert cache.bytes == 0


def test_several_caches_and_unregister_restores_budgets() -> None:
    a, b = filled_cache(), filled_cache()
    original = a.decoded.max_bytes
    gov = MemoryGovernor([a], probe=Probe(PRESSURE), system_threshold=80)  # percent accepted too
    gov.register(b)
    gov.check()
    assert a.decoded.max_bytes == b.decoded.max_bytes == original // 2
    gov.unregister(b)
    assert b.decoded.max_bytes == original
    late = filled_cache()
    gov.register(late)  # registered while shrunk: gets the current level at once
    assert late.decoded.max_bytes == original // 2


def test_thread_checks_until_stopped() -> None:
    cache, probe = filled_cache(), Probe(PRESSURE)
    with MemoryGovernor([cache], probe=probe, interval=0.01) as gov:
        assert probe.called.wait(10)
        assert gov.running
    assert not gov.running
    calls = probe.calls
    assert calls >= 1 and gov.stats().shrinks >= 1
    assert probe.calls == calls  # stopped means stopped


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        MemoryGovernor(system_threshold=0)
    with pytest.raises(ValueError):
        MemoryGovernor(shrink_fraction=1.0)


def test_default_probe_reads_real_memory() -> None:
    sample = MemoryGovernor().probe()
    assert 0.0 < sample.system_fraction <= 1.0 and sample.rss > 0


_KEPT = """
import sys
import numpy as np
from dcmstream.cache import tune_malloc
from dcmstream.memory import process_rss
ok = tune_malloc() if sys.argv[1] == "default" else tune_malloc(64 << 20, trim_threshold=64 << 20)
held = [np.ones(1 << 19, np.uint8) for _ in range(40)]  # 20 MiB of frame-sized buffers
before = process_rss()
del held
print(ok, (before - process_rss()) >> 20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_tune_malloc_returns_freed_frame_buffers_and_its_knobs_apply() -> None:
    # The default gives freed frame buffers back to the system at once (RSS follows the
    # caches); high mmap and trim thresholds keep them for the next frames instead.
    import subprocess

    released = {}
    for profile in ("default", "keep"):
        out = subprocess.run([sys.executable, "-c", _KEPT, profile], capture_output=True, text=True,
                             timeout=60, check=True)
        ok, mib = out.stdout.split()
        assert ok == "True"
        released[profile] = int(mib)
    assert released["default"] >= 18
    assert released["keep"] <= 2


def test_prefetch_window_follows_the_governed_budget() -> None:
    from dcmstream.cache import DecodePool, StackPrefetcher
    from dcmstream.cache.frame_cache import nbytes_of

    tile = np.zeros((8, 8), np.uint16)

    class Stack:
        cache = FrameCache(max_bytes=40 * nbytes_of(tile), encoded_share=0.0)

        def __len__(self) -> int:
            return 1000

        def frame(self, i: int) -> np.ndarray:
            return tile

        def prefetch(self, i: int) -> None:
            pass

        def is_cached(self, i: int) -> bool:
            return True  # nothing is submitted: only the planned window matters here

    clock = iter(k / 200 for k in range(10_000))
    target = Stack()
    with DecodePool(1) as pool:
        pf = StackPrefetcher(target, pool, budget_share=0.5, clock=lambda: next(clock))
        for i in range(40):
            pf.request(i)
        assert len(pf.window) == 20  # half of a 40-frame budget
        MemoryGovernor([target.cache], probe=Probe(PRESSURE)).check()
        pf.request(40)
        assert len(pf.window) == 10  # the budget halved, so did the window
