"""Back-pressure: a thread that watches memory and pauses the producers.

Every ``interval`` seconds the monitor asks a :class:`~dcmstream.cache.MemoryGovernor`
to check memory (the governor shrinks registered caches first, which is what the
design asks for: caches give memory back before work stops). The governor's sample
then decides the pipeline's state:

* *pressure* when the machine is at or above ``threshold`` (default 80 %) of its memory,
  or the process is at or above ``threshold`` of its budget above the baseline the run
  started from. Producers stop admitting items; items in flight finish and free memory.
* *calm* again when both are below the threshold minus ``hysteresis``: producers resume.

A pause that cannot end by itself (nothing of ours in flight and the machine still
full, e.g. another program holds the memory) is not a hang: after ``stall_timeout``
seconds without anything in flight, items are admitted one at a time (the least memory
the run can use) until the pressure ends, and counted as ``forced``.

The probe is injectable (``probe=``), so tests simulate pressure instead of producing it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from ..cache import MemoryGovernor, MemorySample, default_cache
from ..errors import InvalidArgumentError
from ..memory import process_rss, system_memory_fraction

__all__ = ["MemoryMonitor", "PauseStats", "process_rss"]


@dataclass(frozen=True)
class PauseStats:
    """How often and how long the producers waited for memory."""

    pauses: int
    paused_seconds: float
    forced: int  # items admitted during a pause that could not end by itself
    checks: int
    cache_shrinks: int


class MemoryMonitor:
    """Samples memory, keeps the peak, and gates the producers (see the module docstring)."""

    def __init__(
        self,
        budget: int,
        *,
        threshold: float = 0.8,
        interval: float = 0.05,
        hysteresis: float = 0.05,
        stall_timeout: float = 5.0,
        probe: Callable[[], MemorySample] | None = None,
        include_children: bool = False,
        govern_default_cache: bool = True,
        on_sample: Callable[[int], None] | None = None,
    ) -> None:
        if threshold > 1.0:
            threshold /= 100.0
        if not 0.0 < threshold <= 1.0:
            raise InvalidArgumentError("threshold must be a fraction in (0, 1] (or a percentage)")
        self.budget = int(budget)
        self.threshold = float(threshold)
        self.interval = float(interval)
        self.hysteresis = float(hysteresis)
        self.stall_timeout = float(stall_timeout)
        self.include_children = include_children
        self.on_sample = on_sample
        self._custom_probe = probe is not None
        base_probe = probe or (lambda: MemorySample(system_memory_fraction(), process_rss(include_children)))
        self.baseline = base_probe().rss
        self.real_baseline = process_rss(include_children)
        self.governor = MemoryGovernor(
            system_threshold=self.threshold,
            process_limit_bytes=self.baseline + int(self.threshold * self.budget),
            interval=self.interval,
            hysteresis=self.hysteresis,
            probe=base_probe,
        )
        self._cache = default_cache() if govern_default_cache else None
        if self._cache is not None:
            self.governor.register(self._cache)
        self.peak_rss = self.real_baseline
        self.last = MemorySample(0.0, self.baseline)
        self._calm = threading.Event()
        self._calm.set()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pauses = 0
        self._paused = 0.0
        self._pause_started: float | None = None
        self._forced = 0
        self._stalled = False
        self._checks = 0
        self._shrinks = 0

    # -- sampling ------------------------------------------------------------------------
    def sample(self) -> MemorySample:
        """Check once: shrink caches if needed, update the peak and the pressure state."""
        if self.governor.check():
            self._shrinks += 1
        stats = self.governor.stats()
        sample = MemorySample(stats.last_system_fraction, stats.last_rss)
        real = sample.rss if not self._custom_probe else process_rss(self.include_children)
        with self._cond:
            self._checks += 1
            self.last = sample
            self.peak_rss = max(self.peak_rss, real)
            if self.governor.under_pressure(sample):
                if self._calm.is_set():
                    self._calm.clear()
                    self._pauses += 1
                    self._pause_started = time.monotonic()
            elif not self._calm.is_set() and not self.governor.under_pressure(sample, self.hysteresis):
                self._end_pause()
        if self.on_sample is not None:
            self.on_sample(real - self.real_baseline)
        return sample

    def _end_pause(self) -> None:
        self._stalled = False
        if self._pause_started is not None:
            self._paused += time.monotonic() - self._pause_started
            self._pause_started = None
        self._calm.set()
        self._cond.notify_all()

    @property
    def under_pressure(self) -> bool:
        return not self._calm.is_set()

    @property
    def above_baseline(self) -> int:
        """The last sample's resident bytes above the run's baseline."""
        return max(0, self.last.rss - self.baseline)

    # -- gating --------------------------------------------------------------------------
    def wait_calm(self, in_flight: Callable[[], int], stop: threading.Event | None = None) -> bool:
        """Block while under pressure; True if the wait ended by force (nothing in flight)."""
        if self._calm.is_set():
            return False
        if self._stalled and in_flight() == 0:
            with self._cond:
                self._forced += 1
            return True
        idle_since: float | None = None
        while not self._calm.wait(min(self.interval, 0.01) if self._stalled else self.interval):
            if stop is not None and stop.is_set():
                return False
            if in_flight() == 0:
                if self._stalled:
                    with self._cond:
                        self._forced += 1
                    return True
                now = time.monotonic()
                idle_since = idle_since or now
                if now - idle_since >= self.stall_timeout:
                    with self._cond:
                        self._forced += 1
                        self._stalled = not self._calm.is_set()
                    return True
            else:
                idle_since = None
        return False

    # -- thread --------------------------------------------------------------------------
    def start(self) -> MemoryMonitor:
        self.sample()
        self._thread = threading.Thread(target=self._run, name="dcmstream-pipeline-monitor", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - a failing probe must not end the run
                pass

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self.peak_rss = max(self.peak_rss, process_rss(self.include_children))
        except psutil.Error:
            pass
        with self._cond:
            if not self._calm.is_set():
                self._end_pause()
        if self._cache is not None:
            self.governor.unregister(self._cache)

    def stats(self) -> PauseStats:
        with self._cond:
            paused = self._paused
            if self._pause_started is not None:
                paused += time.monotonic() - self._pause_started
            return PauseStats(self._pauses, paused, self._forced, self._checks, self._shrinks)
