"""FrameCache: one byte budget for the encoded and decoded frames instances share.

Keys are per frame: ``(instance_key, frame_number, representation)`` where the
representation names what is stored ("encoded", "full", "level1", "thumb128" ...).
A frame that several threads ask for at once is loaded once: the first caller
loads, the others wait on its future (in-flight de-duplication).

``max_bytes`` is the whole cache: the encoded tier gets ``encoded_share`` of it, the
decoded tier the rest, so the two together never hold more than ``max_bytes``. Frames
are decoded into buffers of the cache's :class:`BufferPool` (:meth:`FrameCache.decode_pooled`),
which come back to the pool when the cache has evicted the frame and no caller holds it;
the pool keeps at most ``max_bytes / 16`` of idle buffers besides (reported in the stats;
in steady use it holds about one buffer per decoding thread).
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

from ..errors import InvalidArgumentError
from .buffers import BufferPool
from .stats import CacheStats, DecodeTimer
from .tier import ByteBudgetLRU, CacheBudgetError

__all__ = ["FrameCache", "default_cache", "set_default_cache", "nbytes_of", "split_budget", "DEFAULT_ENCODED_SHARE"]

T = TypeVar("T")
MiB = 1 << 20
#: Share of ``max_bytes`` the encoded tier gets unless told otherwise.
DEFAULT_ENCODED_SHARE = 0.25
#: Idle decode buffers the pool may keep, as a fraction of ``max_bytes`` (outside the tiers).
POOL_SHARE = 1 / 16


def split_budget(max_bytes: int, encoded_share: float) -> tuple[int, int]:
    """(decoded, encoded) tier budgets: the encoded tier ``encoded_share`` of ``max_bytes``,
    the decoded tier the rest, so they add up to ``max_bytes`` exactly."""
    if max_bytes < 0:
        raise InvalidArgumentError("max_bytes must be >= 0")
    if not 0.0 <= encoded_share <= 1.0:
        raise InvalidArgumentError(f"encoded_share must be within 0..1, got {encoded_share}")
    encoded = int(max_bytes * encoded_share)
    return int(max_bytes) - encoded, encoded


def nbytes_of(value: Any) -> int:
    """Bytes a cached value costs (arrays: their buffer; bytes: their length)."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes) + 112  # + the ndarray object itself
    if isinstance(value, (bytes, bytearray, memoryview)):
        return len(value) + 33
    return int(getattr(value, "nbytes", 64))


class FrameCache:
    """Two byte-budgeted LRU tiers, decoded arrays and encoded frame bytes, under one budget.

    ``max_bytes`` bounds both tiers together: the encoded tier gets ``encoded_share``
    of it (0.25: a 64 MiB cache keeps up to 16 MiB of codestreams and 48 MiB of
    decoded frames). ``buffers``: the pool frames are decoded into (True: a new one
    keeping at most ``max_bytes / 16`` of idle buffers; False: none, decoders allocate;
    or a :class:`BufferPool`, whose bound then scales with :meth:`resize`).
    Values are shared between callers, so cached arrays are made read-only.
    """

    def __init__(
        self,
        max_bytes: int = 256 * MiB,
        encoded_share: float = DEFAULT_ENCODED_SHARE,
        *,
        buffers: BufferPool | bool = True,
    ) -> None:
        decoded, encoded = split_budget(max_bytes, encoded_share)
        self._max_bytes = int(max_bytes)
        self._encoded_share = float(encoded_share)
        self.decoded = ByteBudgetLRU("decoded", decoded)
        self.encoded = ByteBudgetLRU("encoded", encoded)
        if buffers is True:
            buffers = BufferPool(max_bytes=int(max_bytes * POOL_SHARE))
        #: where decode_pooled() takes frame buffers from (None: decoders allocate)
        self.buffers: BufferPool | None = buffers or None
        self._pool_share = self.buffers.max_bytes / max_bytes if self.buffers is not None and max_bytes else POOL_SHARE
        self._lock = threading.Lock()
        self._inflight: dict[Hashable, Future[Any]] = {}
        self.deduplicated = 0
        self.prefetch_issued = 0
        self.timer = DecodeTimer()

    # -- budget ------------------------------------------------------------------
    @property
    def max_bytes(self) -> int:
        """Budget of both tiers together."""
        return self._max_bytes

    @property
    def encoded_share(self) -> float:
        """Fraction of :attr:`max_bytes` the encoded tier gets."""
        return self._encoded_share

    @property
    def bytes(self) -> int:
        """Bytes held by both tiers now."""
        return self.decoded.bytes + self.encoded.bytes

    def resize(self, max_bytes: int | None = None, encoded_share: float | None = None) -> None:
        """Change the budget (and the encoded tier's share); shrinking evicts at once.

        The memory governor calls this with a lower ``max_bytes`` under pressure: both
        tiers and the idle buffers of the pool shrink in proportion.
        """
        total = self._max_bytes if max_bytes is None else int(max_bytes)
        share = self._encoded_share if encoded_share is None else float(encoded_share)
        decoded, encoded = split_budget(total, share)
        self._max_bytes, self._encoded_share = total, share
        # Shrink first, grow second: the two together never exceed either budget.
        for tier, budget in sorted(((self.decoded, decoded), (self.encoded, encoded)), key=lambda tb: tb[1] - tb[0].max_bytes):
            tier.resize(budget)
        if self.buffers is not None:
            self.buffers.resize(int(total * self._pool_share))

    def shrink(self, fraction: float) -> int:
        """Evict until each tier holds at most ``fraction`` of its budget (so the cache at most
        ``fraction`` of :attr:`max_bytes`), keeping the budget; returns bytes freed."""
        fraction = min(max(fraction, 0.0), 1.0)
        freed = self.encoded.shrink_to(int(self.encoded.max_bytes * fraction))
        freed += self.decoded.shrink_to(int(self.decoded.max_bytes * fraction))
        if self.buffers is not None:
            self.buffers.clear()
        return freed

    # -- frame buffers -------------------------------------------------------------
    def decode_pooled(
        self, shape: tuple[int, ...], dtype: Any, produce: Callable[[np.ndarray | None], np.ndarray]
    ) -> np.ndarray:
        """``produce(out)`` with ``out`` a recycled frame buffer of ``shape``/``dtype`` (or None
        when this cache has no pool); returns what ``produce`` returns.

        The frame readers' one call: ``produce`` decodes into ``out`` (the codecs'
        ``out=``), finishes the frame in place and returns it. A frame that lives in the
        buffer gives the buffer back to the pool once the cache has evicted it and no
        caller references it (:meth:`BufferPool.fill`), so the next decode of that shape
        reuses the memory instead of asking the allocator.
        """
        if self.buffers is None:
            return produce(None)
        return self.buffers.fill(shape, dtype, produce)

    # -- access ------------------------------------------------------------------
    def _tier(self, tier: str) -> ByteBudgetLRU:
        if tier == "decoded":
            return self.decoded
        if tier == "encoded":
            return self.encoded
        raise InvalidArgumentError(f"unknown tier {tier!r}")

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
        """Drop everything, idle frame buffers included (counters are kept; see reset_stats)."""
        self.decoded.clear()
        self.encoded.clear()
        if self.buffers is not None:
            self.buffers.clear()

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
            max_bytes=self._max_bytes,
            encoded_share=self._encoded_share,
            buffers=None if self.buffers is None else self.buffers.stats(),
        )

    def __repr__(self) -> str:
        return (
            f"FrameCache({self.bytes}/{self._max_bytes} bytes: decoded={self.decoded.bytes}/{self.decoded.max_bytes}, "
            f"encoded={self.encoded.bytes}/{self.encoded.max_bytes})"
        )


_default: FrameCache | None = None
_default_lock = threading.Lock()


def _default_budget() -> int:
    """Budget of the process-wide cache, both tiers together.

    ``DCMSTREAM_CACHE_MB`` sets it (MiB; the encoded tier gets a quarter of it, the
    decoded tier the rest); otherwise 256 MiB, capped at 5 % of physical memory.
    """
    env = os.environ.get("DCMSTREAM_CACHE_MB")
    if env:
        return max(int(float(env) * MiB), 0)
    return min(256 * MiB, int(psutil.virtual_memory().total * 0.05))


def default_cache() -> FrameCache:
    """The process-wide cache used by ``dcmstream.open`` when no ``cache=`` is given:
    ``DCMSTREAM_CACHE_MB`` (default 256) MiB for encoded and decoded frames together."""
    global _default
    with _default_lock:
        if _default is None:
            _default = FrameCache(_default_budget())
        return _default


def set_default_cache(cache: FrameCache) -> None:
    """Replace the process-wide cache (instances opened later use it)."""
    global _default
    with _default_lock:
        _default = cache
