"""Small thread-safe LRUs by count: memoised values, and open objects closed on eviction.

* :class:`LRU` - at most ``max_items`` values (records, renderers, display parameters),
  least recently used dropped first.
* :class:`OpenLRU` - at most ``max_open`` open objects (instances holding a file
  descriptor): the least recently used one is **closed** when it leaves, except while a
  user holds it (:meth:`OpenLRU.use`, :meth:`OpenLRU.pin`) or it is one the owner keeps
  (``keep``). Opening happens outside the lock; when two threads open the same key at
  once, the first registered object is everyone's and the other is closed, so nobody's
  object is closed under them.

Sizes in bytes are :class:`~dcmstream.cache.tier.ByteBudgetLRU`'s job; these count items.
Closing happens outside the lock (closing a file can block).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, Protocol, TypeVar

from ..errors import InvalidArgumentError

__all__ = ["LRU", "OpenLRU", "Closeable"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Closeable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=Closeable)


class LRU(Generic[K, V]):
    """A mapping of at most ``max_items`` entries; ``get`` and ``put`` make an entry the most
    recently used, the least recently used one leaves first (passed to ``on_evict``)."""

    def __init__(self, max_items: int, *, on_evict: Callable[[K, V], None] | None = None) -> None:
        if max_items < 1:
            raise InvalidArgumentError("max_items must be >= 1")
        self.max_items = int(max_items)
        self.on_evict = on_evict
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def get(self, key: K, default: V | None = None) -> V | None:
        """The value for ``key`` (now the most recently used), or ``default``."""
        with self._lock:
            try:
                self._items.move_to_end(key)
            except KeyError:
                return default
            return self._items[key]

    def peek(self, key: K, default: V | None = None) -> V | None:
        """The value for ``key`` without changing the order."""
        with self._lock:
            return self._items.get(key, default)

    def put(self, key: K, value: V) -> None:
        """Insert or replace ``key``; evicts the least recently used entries beyond the bound."""
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            evicted = []
            while len(self._items) > self.max_items:
                evicted.append(self._items.popitem(last=False))
        if self.on_evict is not None:
            for k, v in evicted:
                self.on_evict(k, v)

    def pop(self, key: K, default: V | None = None) -> V | None:
        """Remove ``key`` (no ``on_evict``); its value or ``default``."""
        with self._lock:
            return self._items.pop(key, default)

    def clear(self) -> list[V]:
        """Remove everything (no ``on_evict``); returns the values."""
        with self._lock:
            values = list(self._items.values())
            self._items.clear()
        return values


class OpenLRU(Generic[K, C]):
    """At most ``max_open`` open objects by key; the least recently used unpinned one is
    closed when the bound is passed.

    ``keep(obj)`` true: never evicted (a series keeps its first member). ``alive(obj)``
    false: the entry is stale (closed by someone else) and is reopened on the next use.
    """

    def __init__(self, max_open: int, *, keep: Callable[[C], bool] | None = None,
                 alive: Callable[[C], bool] | None = None) -> None:
        if max_open < 1:
            raise InvalidArgumentError("max_open must be >= 1")
        self.max_open = int(max_open)
        self._keep = keep
        self._alive = alive
        self._open: OrderedDict[K, C] = OrderedDict()
        self._pins: dict[K, int] = {}
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return len(self._open)

    def __contains__(self, key: object) -> bool:
        return key in self._open

    def _live(self, key: K) -> C | None:
        # Caller holds the lock.
        obj = self._open.get(key)
        if obj is not None and self._alive is not None and not self._alive(obj):
            del self._open[key]
            return None
        if obj is not None:
            self._open.move_to_end(key)
        return obj

    def get(self, key: K) -> C | None:
        """The open object of ``key`` (now the most recently used), or None."""
        with self._lock:
            return self._live(key)

    def open(self, key: K, opener: Callable[[], C]) -> C:
        """The open object of ``key``, opened with ``opener()`` if needed (outside the lock).

        Not pinned: it may be closed by a later eviction (callers reading through it for a
        while use :meth:`use`)."""
        with self._lock:
            obj = self._live(key)
        if obj is not None:
            return obj
        return self._register(key, opener())

    def _register(self, key: K, fresh: C) -> C:
        with self._lock:
            obj = self._live(key)
            if obj is None:
                self._open[key] = obj = fresh
                fresh = None  # type: ignore[assignment]
            doomed = self._evict(spare=key)
        if fresh is not None:  # another thread opened it meanwhile: keep one
            fresh.close()
        self._close(doomed)
        return obj

    @contextmanager
    def use(self, key: K, opener: Callable[[], C]) -> Iterator[C]:
        """The open object of ``key``, pinned (never closed by eviction) inside the block."""
        self.pin(key)
        try:
            yield self.open(key, opener)
        finally:
            self.unpin(key)

    def put(self, key: K, obj: C) -> None:
        """Register an object opened elsewhere; a different one under ``key`` is closed
        unless in use."""
        with self._lock:
            old = self._open.pop(key, None)
            self._open[key] = obj
            doomed = self._evict(spare=key)
            if old is not None and old is not obj and not self._pins.get(key):
                doomed.append(old)
        self._close(doomed)

    def pin(self, key: K) -> None:
        """Keep ``key`` open (not evicted) until the matching :meth:`unpin`."""
        with self._lock:
            self._pins[key] = self._pins.get(key, 0) + 1

    def unpin(self, key: K) -> None:
        with self._lock:
            n = self._pins.get(key, 0) - 1
            if n > 0:
                self._pins[key] = n
            else:
                self._pins.pop(key, None)
            doomed = self._evict()
        self._close(doomed)

    def pop(self, key: K) -> C | None:
        """Remove ``key`` without closing it; the object or None."""
        with self._lock:
            return self._open.pop(key, None)

    def close_all(self) -> None:
        """Close every object (pinned ones too: the owner is shutting down)."""
        with self._lock:
            opened = list(self._open.values())
            self._open.clear()
        self._close(opened)

    def _evict(self, spare: K | None = None) -> list[C]:
        # Caller holds the lock: least recently used first, skipping pinned and kept ones,
        # and ``spare``, the object being handed out right now (never returned closed).
        doomed: list[C] = []
        if len(self._open) <= self.max_open:
            return doomed
        for key in list(self._open):
            if len(self._open) <= self.max_open:
                break
            obj = self._open[key]
            if key == spare or self._pins.get(key) or (self._keep is not None and self._keep(obj)):
                continue
            doomed.append(self._open.pop(key))
        return doomed

    @staticmethod
    def _close(objects: list[Any]) -> None:
        for obj in objects:
            obj.close()
