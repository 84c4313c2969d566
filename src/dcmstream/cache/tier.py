"""A byte-budgeted LRU tier: the unit FrameCache is made of.

The budget is bytes, not items: a 512x512x16-bit frame costs 512 KiB, a
thumbnail 16 KiB, and both share one limit. Entries inserted by prefetch are
flagged so the cache can report prefetches that were used versus evicted unseen.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from ..errors import DcmstreamError, InvalidArgumentError
from .stats import TierStats

__all__ = ["ByteBudgetLRU", "CacheBudgetError"]


class CacheBudgetError(DcmstreamError, ValueError):
    """An object is larger than the whole budget of the tier it was offered to."""


class ByteBudgetLRU:
    """Least-recently-used mapping whose total ``nbytes`` stays within ``max_bytes``."""

    def __init__(self, name: str, max_bytes: int) -> None:
        if max_bytes < 0:
            raise InvalidArgumentError("max_bytes must be >= 0")
        self.name = name
        self._max = int(max_bytes)
        self._items: OrderedDict[Hashable, tuple[Any, int, bool]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = self.evictions = self.refused = 0
        self.prefetch_used = self.prefetch_wasted = 0
        #: called with (key, value) after an entry leaves (eviction, purge, clear)
        self.on_evict: Callable[[Hashable, Any], None] | None = None

    @property
    def max_bytes(self) -> int:
        return self._max

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def get(self, key: Hashable, count: bool = True) -> Any | None:
        """The value for ``key`` (now most recently used), or None."""
        with self._lock:
            entry = self._items.get(key)
            if entry is None:
                if count:
                    self.misses += 1
                return None
            self._items.move_to_end(key)
            value, nbytes, prefetched = entry
            if count:
                self.hits += 1
                if prefetched:
                    self.prefetch_used += 1
                    self._items[key] = (value, nbytes, False)
            return value

    def put(self, key: Hashable, value: Any, nbytes: int, *, prefetched: bool = False) -> None:
        """Insert ``value`` costing ``nbytes``; evicts least recently used entries to fit.

        Raises :class:`CacheBudgetError` if ``nbytes`` exceeds the whole budget.
        """
        if nbytes > self._max:
            with self._lock:
                self.refused += 1
            raise CacheBudgetError(
                f"{self.name} cache: an entry of {nbytes} bytes exceeds the whole budget of {self._max} bytes"
            )
        evicted: list[tuple[Hashable, Any]] = []
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._items[key] = (value, nbytes, prefetched)
            self._bytes += nbytes
            evicted = self._evict_to(self._max)
        self._notify(evicted)

    def _evict_to(self, limit: int) -> list[tuple[Hashable, Any]]:
        evicted = []
        while self._bytes > limit and self._items:
            key, (value, nbytes, prefetched) = self._items.popitem(last=False)
            self._bytes -= nbytes
            self.evictions += 1
            if prefetched:
                self.prefetch_wasted += 1
            evicted.append((key, value))
        return evicted

    def _notify(self, evicted: list[tuple[Hashable, Any]]) -> None:
        if self.on_evict is not None:
            for key, value in evicted:
                self.on_evict(key, value)

    def resize(self, max_bytes: int) -> None:
        """Change the budget; shrinking evicts at once."""
        with self._lock:
            self._max = int(max_bytes)
            evicted = self._evict_to(self._max)
        self._notify(evicted)

    def shrink_to(self, target_bytes: int) -> int:
        """Evict down to ``target_bytes`` without changing the budget; returns bytes freed."""
        with self._lock:
            before = self._bytes
            evicted = self._evict_to(max(0, target_bytes))
            freed = before - self._bytes
        self._notify(evicted)
        return freed

    def remove_where(self, predicate: Callable[[Hashable], bool]) -> int:
        """Drop every entry whose key matches; returns how many."""
        with self._lock:
            doomed = [k for k in self._items if predicate(k)]
            removed = []
            for key in doomed:
                value, nbytes, _ = self._items.pop(key)
                self._bytes -= nbytes
                removed.append((key, value))
        self._notify(removed)
        return len(doomed)

    def clear(self) -> None:
        self.remove_where(lambda _k: True)

    def stats(self) -> TierStats:
        with self._lock:
            return TierStats(
                name=self.name,
                hits=self.hits,
                misses=self.misses,
                bytes=self._bytes,
                items=len(self._items),
                max_bytes=self._max,
                evictions=self.evictions,
                refused=self.refused,
            )

    def reset_counters(self) -> None:
        with self._lock:
            self.hits = self.misses = self.evictions = self.refused = 0
            self.prefetch_used = self.prefetch_wasted = 0
