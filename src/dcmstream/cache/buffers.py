"""BufferPool: frame-sized output arrays that decoders write into (``out=``) and get back.

Why: decoded frames are long-lived (a cache holds them) and frame-sized (512 KiB for a
512x512 16-bit CT frame). With glibc's default allocator, once one such block has been
freed the mmap threshold rises above it, so later frames are carved from the per-thread
heaps; evicting them in LRU order while codecs allocate and free their temporaries in
between leaves holes that stay resident - with 4 reading threads RSS ran 25 % above what
the cache held (``bench/results/cache.md``). Decoding every frame into a buffer taken
from this pool, and giving the buffer back when the cache has dropped the frame and no
caller holds it any more, keeps the set of frame blocks fixed: RSS follows the cache
without ``tune_malloc()``.

Two ways to use it:

* :meth:`BufferPool.fill` (what :meth:`FrameCache.decode_pooled` calls): ``fill(buffer)``
  writes a frame into a pooled buffer and returns it (or a view of it). The buffer comes
  back to the pool **by itself**, when the returned array has been garbage collected and
  nothing else references the buffer (see "Recycling rule").
* :meth:`acquire` / :meth:`release` / :meth:`lease` / :meth:`decode_into`: explicit
  ownership for loops that decode, use and drop. After :meth:`release` the caller must
  not keep the array or any view of it: the next :meth:`acquire` overwrites it.

Recycling rule (``fill``): the frame handed out is a view whose ``base`` is the pooled
buffer, and a ``weakref.finalize`` on that view fires when the view dies (the cache
evicted it and every caller dropped it). Every other array that can see the memory - a
caller's slice, ``arr.base`` itself, a memoryview - holds a reference to the buffer
(numpy points a view's ``base`` at the array owning the memory), so the finalizer
releases the buffer only when ``sys.getrefcount`` shows no reference beyond the
finalizer's own (the count of that path is measured once at import, not assumed).
Otherwise the buffer is left to the garbage collector like any array: a buffer is never
recycled while something can still read it. Raw pointers taken out of numpy
(``arr.ctypes.data`` kept as an int) are outside any rule.
"""

from __future__ import annotations

import sys
import threading
import weakref
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError

__all__ = ["BufferPool", "BufferPoolStats"]

Key = tuple[tuple[int, ...], str]


@dataclass(frozen=True)
class BufferPoolStats:
    reused: int  # acquire served from the pool
    allocated: int  # acquire that had to allocate
    released: int  # buffers taken back
    discarded: int  # buffers refused on release (pool full, not owned, wrong layout)
    idle_bytes: int  # bytes held by idle buffers
    idle_buffers: int
    recycled: int = 0  # fill() buffers that came back by themselves when their frame died
    kept: int = 0  # fill() buffers still referenced when their frame died (left to the GC)
    max_bytes: int = 0  # bound of idle_bytes

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class BufferPool:
    """Idle arrays by (shape, dtype), at most ``max_per_key`` each and ``max_bytes`` in all."""

    def __init__(self, max_bytes: int = 64 << 20, max_per_key: int = 16) -> None:
        if max_bytes < 0 or max_per_key < 0:
            raise InvalidArgumentError("max_bytes and max_per_key must be >= 0")
        self.max_bytes = int(max_bytes)
        self.max_per_key = int(max_per_key)
        self._idle: defaultdict[Key, deque[np.ndarray]] = defaultdict(deque)
        self._bytes = 0
        self._count = 0
        # Re-entrant: a frame's finalizer may run (garbage collection) in a thread that is
        # inside the pool already, and it releases into the pool.
        self._lock = threading.RLock()
        self._reused = self._allocated = self._released = self._discarded = 0
        self._recycled = self._kept = 0

    @staticmethod
    def _key(shape: tuple[int, ...] | int, dtype: Any) -> Key:
        shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
        return shape, np.dtype(dtype).str

    def acquire(self, shape: tuple[int, ...] | int, dtype: Any) -> np.ndarray:
        """A writable C-contiguous array of ``shape``/``dtype`` (contents undefined)."""
        key = self._key(shape, dtype)
        with self._lock:
            idle = self._idle.get(key)
            if idle:
                arr = idle.pop()  # most recently released: likeliest to be in the CPU cache
                self._bytes -= arr.nbytes
                self._count -= 1
                self._reused += 1
                return arr
            self._allocated += 1
        return np.empty(key[0], np.dtype(key[1]))

    def release(self, arr: np.ndarray) -> bool:
        """Give ``arr`` back for reuse; returns False if it was not kept."""
        ok = (
            isinstance(arr, np.ndarray)
            and arr.base is None
            and arr.flags.c_contiguous
            and arr.flags.writeable
            and arr.flags.owndata
        )
        key = self._key(arr.shape, arr.dtype) if ok else None
        with self._lock:
            if not ok or key is None:
                self._discarded += 1
                return False
            idle = self._idle[key]
            if len(idle) >= self.max_per_key or self._bytes + arr.nbytes > self.max_bytes:
                self._discarded += 1
                return False
            idle.append(arr)
            self._bytes += arr.nbytes
            self._count += 1
            self._released += 1
            return True

    @contextmanager
    def lease(self, shape: tuple[int, ...] | int, dtype: Any) -> Iterator[np.ndarray]:
        """``with pool.lease(shape, dtype) as buf:`` — released when the block ends."""
        arr = self.acquire(shape, dtype)
        try:
            yield arr
        finally:
            self.release(arr)

    def decode_into(
        self, decode: Callable[..., np.ndarray], data: bytes, shape: tuple[int, ...], dtype: Any, **kwargs: Any
    ) -> np.ndarray:
        """``decode(data, out=buffer, **kwargs)`` into a pooled buffer; the buffer goes back on error."""
        buf = self.acquire(shape, dtype)
        try:
            out = decode(data, out=buf, **kwargs)
        except BaseException:
            self.release(buf)
            raise
        if out is not buf and not np.shares_memory(out, buf):
            self.release(buf)  # the codec ignored out=: do not leak the buffer
        return out

    def fill(
        self, shape: tuple[int, ...] | int, dtype: Any, produce: Callable[[np.ndarray], np.ndarray]
    ) -> np.ndarray:
        """``produce(buffer)`` with a pooled buffer of ``shape``/``dtype``; returns its result.

        ``produce`` writes a frame into the buffer (a decoder's ``out=``) and returns the
        frame: the buffer, a view of it, or a new array when it could not use the buffer.
        A frame in the buffer is returned as a view of it that recycles the buffer when it
        dies (module docstring: "Recycling rule"); an unused buffer comes back at once.
        On an error the buffer is dropped, not recycled (the traceback may still see it).
        """
        buf = self.acquire(shape, dtype)
        result = produce(buf)
        if result is buf or (isinstance(result, np.ndarray) and result.base is buf):
            frame = buf[...] if result is buf else result
            del result
            watch = weakref.finalize(frame, _recycle, self, buf)
            watch.atexit = False
            return frame
        if isinstance(result, np.ndarray) and np.may_share_memory(result, buf):
            return result  # some other view chain: leave the buffer to the garbage collector
        probe = np.empty(0)  # a local referenced from here only: what "unshared" counts
        if sys.getrefcount(buf) <= sys.getrefcount(probe):
            self.release(buf)
        return result

    def _returned(self, buf: np.ndarray, refs: int) -> None:
        """A fill() frame died; ``refs`` is the buffer's reference count seen by ``_recycle``."""
        if refs > _FINALIZER_REFS:
            with self._lock:
                self._kept += 1
            return
        if self.release(buf):
            with self._lock:
                self._recycled += 1

    def resize(self, max_bytes: int) -> None:
        """Change the bound of idle bytes; idle buffers beyond it are dropped at once."""
        dropped: list[np.ndarray] = []
        with self._lock:
            self.max_bytes = max(0, int(max_bytes))
            for idle in self._idle.values():
                while idle and self._bytes > self.max_bytes:
                    arr = idle.popleft()  # least recently released first
                    self._bytes -= arr.nbytes
                    self._count -= 1
                    dropped.append(arr)
        del dropped  # freed outside the lock

    def clear(self) -> None:
        """Drop every idle buffer (buffers of live frames come back later as usual)."""
        with self._lock:
            self._idle.clear()
            self._bytes = 0
            self._count = 0

    def stats(self) -> BufferPoolStats:
        with self._lock:
            return BufferPoolStats(
                reused=self._reused,
                allocated=self._allocated,
                released=self._released,
                discarded=self._discarded,
                idle_bytes=self._bytes,
                idle_buffers=self._count,
                recycled=self._recycled,
                kept=self._kept,
                max_bytes=self.max_bytes,
            )


def _recycle(pool: Any, buf: np.ndarray) -> None:
    """The finalizer of a fill() frame: hand the buffer back if nothing else references it."""
    pool._returned(buf, sys.getrefcount(buf))  # noqa: SLF001 - the pool's own finalizer; a module function keeps the counted path fixed


class _Probe:
    refs = 0

    def _returned(self, buf: np.ndarray, refs: int) -> None:
        self.refs = refs


def _finalizer_refs() -> int:
    """The buffer's reference count inside ``_recycle`` when nothing but the finalizer
    machinery references it, measured on this interpreter (counts differ between Python
    versions; the rule must not guess them)."""
    probe = _Probe()
    buf = np.empty(1)
    frame = buf[...]
    weakref.finalize(frame, _recycle, probe, buf).atexit = False
    del buf
    del frame  # the finalizer runs here
    if not probe.refs:  # pragma: no cover - weakref callbacks deferred: never recycle
        return 0
    return probe.refs


_FINALIZER_REFS = _finalizer_refs()
