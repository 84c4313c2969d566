"""FrameCache: byte-budgeted caches of encoded and decoded frames, shared by instances.

Keys are per frame: ``(instance_key, frame_number, representation)`` where the
representation names what is stored ("encoded", "full", "level1", "thumb128" ...).
A frame that several threads ask for at once is loaded once: the first caller
loads, the others wait on its future (in-flight de-duplication).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any, TypeVar

import numpy as np
import psutil

from .stats import CacheStats, DecodeTimer
from .tier import ByteBudgetLRU, CacheBudgetError

__all__ = ["FrameCache", "default_cache", "set_default_cache", "nbytes_of"]

T = TypeVar("T")
MiB = 1 << 20


def nbytes_of(value: Any) -> int:
    """Bytes a cached value costs (arrays: their buffer; bytes: their length)."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes) + 112  # + the ndarray object itself
    if isinstance(value, (bytes, bytearray, memoryview)):
        return len(value) + 33
    return int(getattr(value, "nbytes", 64))


class FrameCache:
    """Two byte-budgeted LRU tiers: decoded arrays and encoded frame bytes.

    ``max_bytes`` bounds the decoded tier, ``encoded_max_bytes`` the encoded tier.
    Values are shared between callers, so cached arrays are made read-only.
    """

    def __init__(self, max_bytes: int = 256 * MiB, encoded_max_bytes: int = 64 * MiB) -> None:
        self.decoded = ByteBudgetLRU("decoded", max_bytes)
        self.encoded = ByteBudgetLRU("encoded", encoded_max_bytes)
        self._lock = threading.Lock()
        self._inflight: dict[Hashable, Future[Any]] = {}
        self.deduplicated = 0
        self.prefetch_issued = 0
        self.timer = DecodeTimer()

    # -- budget ------------------------------------------------------------------
    @property
    def max_bytes(self) -> int:
        """Budget of both tiers together."""
        return self.decoded.max_bytes + self.encoded.max_bytes

    @property
    def bytes(self) -> int:
        """Bytes held by both tiers now."""
        return self.decoded.bytes + self.encoded.bytes

    def resize(self, max_bytes: int | None = None, encoded_max_bytes: int | None = None) -> None:
        """Change the budgets; shrinking evicts at once."""
        if max_bytes is not None:
            self.decoded.resize(max_bytes)
        if encoded_max_bytes is not None:
            self.encoded.resize(encoded_max_bytes)

    def shrink(self, fraction: float) -> int:
        """Evict until each tier holds at most ``fraction`` of its budget; returns bytes freed."""
        fraction = min(max(fraction, 0.0), 1.0)
        freed = self.encoded.shrink_to(int(self.encoded.max_bytes * fraction))
        freed += self.decoded.shrink_to(int(self.decoded.max_bytes * fraction))
        return freed

    # -- access ------------------------------------------------------------------
    def _tier(self, tier: str) -> ByteBudgetLRU:
        if tier == "decoded":
            return self.decoded
        if tier == "encoded":
            return self.encoded
        raise ValueError(f"unknown tier {tier!r}")

    def get(self, key: Hashable, tier: str = "decoded") -> Any | None:
        """The cached value or None (counts a hit or a miss)."""
        return self._tier(tier).get(key)

    def peek(self, key: Hashable, tier: str = "decoded") -> bool:
        """Whether ``key`` is cached, without touching recency or counters."""
        return key in self._tier(tier)

    def put(self, key: Hashable, value: Any, tier: str = "decoded", *, prefetched: bool = False) -> None:
        """Insert a value; raises CacheBudgetError if it exceeds the tier's budget."""
        if isinstance(value, np.ndarray) and value.flags.writeable:
            value.setflags(write=False)
        self._tier(tier).put(key, value, nbytes_of(value), prefetched=prefetched)

    def get_or_load(
        self,
        key: Hashable,
        loader: Callable[[], T],
        tier: str = "decoded",
        *,
        prefetch: bool = False,
        timed: bool | None = None,
    ) -> T:
        """Return the cached value for ``key``, loading it once if absent.

        Concurrent callers for the same key share one load. A value too large
        for the tier is returned uncached (and counted as refused).
        ``prefetch=True`` marks the entry so unused prefetches can be counted.
        """
        store = self._tier(tier)
        value = store.get(key, count=not prefetch)
        if value is not None:
            return value
        with self._lock:
            future = self._inflight.get(key)
            owner = future is None
            if owner:
                future = Future()
                self._inflight[key] = future
                if prefetch:
                    self.prefetch_issued += 1
            else:
                self.deduplicated += 1
        assert future is not None
        if not owner:
            return future.result()
        try:
            # Someone may have finished the same load between our miss and our lock.
            value = store.get(key, count=False)
            if value is None:
                started = time.perf_counter()
                value = loader()
                if timed if timed is not None else tier == "decoded":
                    self.timer.record(time.perf_counter() - started)
                try:
                    self.put(key, value, tier, prefetched=prefetch)
                except CacheBudgetError:
                    pass  # counted as refused; the caller still gets its frame
            future.set_result(value)
            return value
        except BaseException as exc:
            future.set_exception(exc)
            # Nobody else may be waiting; retrieve so the exception is not logged.
            future.exception()
            raise
        finally:
            with self._lock:
                self._inflight.pop(key, None)

    # -- housekeeping ------------------------------------------------------------
    def purge(self, instance_key: Hashable) -> int:
        """Drop every entry of one instance (e.g. when a study is closed)."""

        def match(key: Hashable) -> bool:
            return isinstance(key, tuple) and len(key) > 0 and key[0] == instance_key

        return self.decoded.remove_where(match) + self.encoded.remove_where(match)

    def clear(self) -> None:
        """Drop everything (counters are kept; see reset_stats)."""
        self.decoded.clear()
        self.encoded.clear()

    def reset_stats(self) -> None:
        self.decoded.reset_counters()
        self.encoded.reset_counters()
        self.deduplicated = 0
        self.prefetch_issued = 0
        self.timer.reset()

    def stats(self) -> CacheStats:
        """A snapshot of hits, misses, bytes, evictions, decode times and prefetch use."""
        d, e = self.decoded.stats(), self.encoded.stats()
        hits, misses = d.hits + e.hits, d.misses + e.misses
        return CacheStats(
            hits=hits,
            misses=misses,
            hit_rate=hits / (hits + misses) if hits + misses else 0.0,
            bytes=d.bytes + e.bytes,
            evictions=d.evictions + e.evictions,
            decoded=d,
            encoded=e,
            deduplicated=self.deduplicated,
            decodes=self.timer.count,
            decode_seconds=self.timer.seconds,
            decode_histogram_ms=self.timer.histogram(),
            prefetch_issued=self.prefetch_issued,
            prefetch_used=self.decoded.prefetch_used + self.encoded.prefetch_used,
            prefetch_wasted=self.decoded.prefetch_wasted + self.encoded.prefetch_wasted,
        )

    def __repr__(self) -> str:
        return f"FrameCache(decoded={self.decoded.bytes}/{self.decoded.max_bytes}, encoded={self.encoded.bytes}/{self.encoded.max_bytes})"


_default: FrameCache | None = None
_default_lock = threading.Lock()


def _default_budget() -> tuple[int, int]:
    """Decoded/encoded budgets of the process-wide cache.

    ``DCMSTREAM_CACHE_MB`` sets the decoded budget (encoded gets a quarter);
    otherwise 256 MiB decoded, capped at 5 % of physical memory.
    """
    env = os.environ.get("DCMSTREAM_CACHE_MB")
    if env:
        decoded = int(float(env) * MiB)
    else:
        decoded = min(256 * MiB, int(psutil.virtual_memory().total * 0.05))
    return decoded, max(decoded // 4, 1 * MiB)


def default_cache() -> FrameCache:
    """The process-wide cache used by ``dcmstream.open`` when no ``cache=`` is given."""
    global _default
    with _default_lock:
        if _default is None:
            decoded, encoded = _default_budget()
            _default = FrameCache(decoded, encoded)
        return _default


def set_default_cache(cache: FrameCache) -> None:
    """Replace the process-wide cache (instances opened later use it)."""
    global _default
    with _default_lock:
        _default = cache
