"""MemoryGovernor: caches give memory back before the machine runs out.

The governor samples the machine (``psutil.virtual_memory().percent``) and the
process (resident set size) every ``interval`` seconds. Under pressure (system
use at or above ``system_threshold``, or RSS at or above ``process_limit_bytes``)
it lowers the budget of each registered cache (``max_bytes``, both tiers together;
the tiers keep their shares) by ``shrink_fraction`` — which evicts at once — and
keeps lowering it at every check while the pressure lasts, down to
``min_fraction`` of the original budget. Lowering the *budget*
rather than only evicting matters: a cache that merely evicted would refill on
the next request, so nothing else could grow into the memory it gave back.
When the pressure has been gone for ``recover_checks`` checks in a row (with a
margin of ``hysteresis``), budgets double back towards their original values.

After evicting, glibc's ``malloc_trim(0)`` is called (Linux) so freed frame
buffers are returned to the system and the RSS actually falls.

Tests inject ``probe``: a function returning a :class:`MemorySample`, so
pressure is simulated, never produced.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, Self

from ..errors import InvalidArgumentError
from ..libc import libc
from ..memory import process_rss, system_memory_fraction

_log = logging.getLogger(__name__)

__all__ = ["GovernorStats", "MemoryGovernor", "MemorySample", "psutil_probe", "tune_malloc"]


@dataclass(frozen=True)
class MemorySample:
    """System memory in use (fraction 0..1) and this process's resident bytes."""

    system_fraction: float
    rss: int


def psutil_probe() -> MemorySample:
    """The real probe: machine-wide use and this process's RSS (:mod:`dcmstream.memory`)."""
    return MemorySample(system_memory_fraction(), process_rss())


class GovernedCache(Protocol):
    """What the governor needs of a cache (FrameCache has it): one budget for all it holds."""

    @property
    def max_bytes(self) -> int: ...
    @property
    def bytes(self) -> int: ...
    def resize(self, max_bytes: int | None = None) -> None: ...


@dataclass(frozen=True)
class GovernorStats:
    checks: int
    pressured: int  # checks that found pressure
    shrinks: int  # times budgets were lowered (once per pressured check)
    recoveries: int  # times budgets were raised again
    bytes_freed: int
    level: float  # current budget as a fraction of the original (1.0 = untouched)
    last_system_fraction: float
    last_rss: int

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def _malloc_trim() -> Callable[[], None]:
    try:
        trim = libc().malloc_trim  # type: ignore[union-attr]
    except AttributeError:  # not Linux/glibc
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def release() -> None:
        trim(0)

    return release


# glibc's mallopt parameter numbers (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

def tune_malloc(mmap_threshold: int = 64 * 1024, *, trim_threshold: int | None = None,
                arenas: int | None = 2) -> bool:
    """Make glibc give freed frame-sized buffers back to the system at once; returns whether
    it applied (Linux with glibc).

    Why: with glibc's default *dynamic* threshold, frame-sized blocks (encoded frames of
    ~100 KiB, decoded frames of 512 KiB once the threshold has drifted up) are carved from
    per-thread heaps; when a cache evicts them the holes stay resident, so RSS runs 12-20 %
    above the cache budget (``bench/results/cache.md``). With a fixed 64 KiB threshold
    (which also turns the dynamic raise off) and two arenas, an evicted frame goes back to
    the system at once and RSS tracks the budget within a few percent, for ~30 extra page
    faults per frame. ``dcmstream serve`` calls it; ``trim_threshold`` (bytes of free heap
    kept) and ``arenas`` (None: leave as is) are glibc's knobs of the same name.

    Frames decoded through :meth:`FrameCache.decode_pooled` (recycled buffers) already stay
    within ~10 % of the budget without it (``bench/results/cache-rss.md``); it still helps
    everything else that allocates frame-sized blocks (encoded frames, responses).

    It changes the whole process's allocator, so it is opt-in: call it once at start (the
    environment variables ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` and
    ``MALLOC_ARENA_MAX`` do the same). Returns False where glibc's ``mallopt`` is
    unavailable (other platforms, musl).
    """
    try:
        mallopt = libc().mallopt  # type: ignore[union-attr]
    except AttributeError:  # not Linux/glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)))
    for param, value in ((_M_TRIM_THRESHOLD, trim_threshold), (_M_ARENA_MAX, arenas)):
        if value is not None:
            ok = bool(mallopt(param, int(value))) and ok
    return ok


class MemoryGovernor:
    """Shrinks registered caches when the machine or the process is short of memory."""

    def __init__(
        self,
        caches: Iterable[GovernedCache] = (),
        *,
        system_threshold: float = 0.8,
        process_limit_bytes: int | None = None,
        interval: float = 0.5,
        shrink_fraction: float = 0.5,
        min_fraction: float = 1 / 64,
        recover_checks: int = 4,
        hysteresis: float = 0.05,
        probe: Callable[[], MemorySample] | None = None,
        trim: bool = True,
    ) -> None:
        if system_threshold > 1.0:
            system_threshold /= 100.0  # accept 80 as well as 0.8
        if not 0.0 < system_threshold <= 1.0:
            raise InvalidArgumentError("system_threshold must be a fraction in (0, 1]")
        if not 0.0 < shrink_fraction < 1.0:
            raise InvalidArgumentError("shrink_fraction must be in (0, 1)")
        self.system_threshold = float(system_threshold)
        self.process_limit_bytes = process_limit_bytes
        self.interval = float(interval)
        self.shrink_fraction = float(shrink_fraction)
        self.min_fraction = float(min_fraction)
        self.recover_checks = int(recover_checks)
        self.hysteresis = float(hysteresis)
        self.probe = probe or psutil_probe
        self._trim = _malloc_trim() if trim else (lambda: None)
        self._lock = threading.RLock()
        self._caches: list[GovernedCache] = []
        self._original: dict[int, int] = {}
        self.level = 1.0
        self._calm = 0
        self._checks = self._pressured = self._shrinks = self._recoveries = 0
        self._freed = 0
        self._last = MemorySample(0.0, 0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        for cache in caches:
            self.register(cache)

    # -- caches ------------------------------------------------------------------
    def register(self, cache: GovernedCache) -> None:
        """Govern ``cache`` from now on (its current budget counts as its original one)."""
        with self._lock:
            if any(c is cache for c in self._caches):
                return
            self._caches.append(cache)
            self._original[id(cache)] = int(cache.max_bytes)
            if self.level < 1.0:
                self._apply(cache)

    def unregister(self, cache: GovernedCache) -> None:
        """Stop governing ``cache`` and give it back its original budget."""
        with self._lock:
            for k, c in enumerate(self._caches):
                if c is cache:
                    del self._caches[k]
                    cache.resize(self._original.pop(id(cache)))
                    return

    def _apply(self, cache: GovernedCache) -> int:
        before = cache.bytes
        cache.resize(max(0, int(self._original[id(cache)] * self.level)))
        return max(0, before - cache.bytes)

    # -- checking ----------------------------------------------------------------
    def under_pressure(self, sample: MemorySample, margin: float = 0.0) -> bool:
        """Whether ``sample`` is over a limit (``margin`` lowers the limits, for hysteresis)."""
        if sample.system_fraction >= self.system_threshold - margin:
            return True
        limit = self.process_limit_bytes
        return limit is not None and sample.rss >= limit * (1.0 - margin)

    def check(self) -> bool:
        """Sample memory once and act; returns True if the caches were shrunk."""
        sample = self.probe()
        with self._lock:
            self._checks += 1
            self._last = sample
            if self.under_pressure(sample):
                self._pressured += 1
                self._calm = 0
                if self.level <= self.min_fraction:
                    # Already at the floor: evict what is left of the floor budget too.
                    freed = sum(self._evict_all(cache) for cache in self._caches)
                else:
                    self.level = max(self.min_fraction, self.level * self.shrink_fraction)
                    freed = sum(self._apply(cache) for cache in self._caches)
                self._shrinks += 1
                self._freed += freed
                acted = True
            else:
                acted = False
                if self.level < 1.0 and not self.under_pressure(sample, self.hysteresis):
                    self._calm += 1
                    if self._calm >= self.recover_checks:
                        self._calm = 0
                        self.level = min(1.0, self.level * 2)
                        self._recoveries += 1
                        for cache in self._caches:
                            self._apply(cache)
                else:
                    self._calm = 0
        if acted:
            self._trim()
        return acted

    @staticmethod
    def _evict_all(cache: GovernedCache) -> int:
        before = cache.bytes
        clear = getattr(cache, "clear", None)
        if clear is not None:
            clear()
        return max(0, before - cache.bytes)

    # -- thread ------------------------------------------------------------------
    def start(self) -> Self:
        """Check every ``interval`` seconds in a daemon thread."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return self
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="dcmstream-memory-governor", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
            except Exception:  # noqa: BLE001 - a failing probe must not end the watch
                _log.warning("memory governor check failed", exc_info=True)
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> GovernorStats:
        with self._lock:
            return GovernorStats(
                checks=self._checks,
                pressured=self._pressured,
                shrinks=self._shrinks,
                recoveries=self._recoveries,
                bytes_freed=self._freed,
                level=self.level,
                last_system_fraction=self._last.system_fraction,
                last_rss=self._last.rss,
            )

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
