"""BufferPool: reuse preallocated output arrays for codecs that decode into ``out=``.

imagecodecs' ``jpegls_decode``, ``htj2k_decode``, ``jpeg2k_decode``,
``jpeg8_decode``, ``ljpeg_decode`` and ``dicomrle_decode`` accept ``out=`` (an
array of exactly the decoded shape and dtype; a wrong shape raises ValueError).
A pool keeps released arrays by ``(shape, dtype)`` and hands them out again, so
a decode loop need not ask the allocator (and the kernel, for page faults) for
fresh memory per frame.

Measured here (``bench/bench_buffers.py``, results in ``bench/results/buffers.md``):
no gain on 512x512 16-bit JPEG-LS (~3.6 ms) and HTJ2K (~1.2 ms) frames — decoding
thread CPU time per frame is 0.7-2.7 % *higher* with the pool, wall-time
differences change sign from run to run. glibc already hands a just-freed
512 KiB block straight back, and a fresh block costs ~20-50 page faults, well
under 1 % of a decode. So the decode path does not use the pool (it also could
not: cached frames are shared with callers, so an evicted array may still be in
use). It is kept for callers with their own loops that decode, use and drop.

Ownership: :meth:`release` hands the array back to the pool. The caller must
not keep it, or any view of it, afterwards — the next :meth:`acquire` will
overwrite it. Views and arrays that do not own their memory are refused.
"""

from __future__ import annotations

import threading
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

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

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class BufferPool:
    """Idle arrays by (shape, dtype), at most ``max_per_key`` each and ``max_bytes`` in all."""

    def __init__(self, max_bytes: int = 64 << 20, max_per_key: int = 16) -> None:
        if max_bytes < 0 or max_per_key < 0:
            raise ValueError("max_bytes and max_per_key must be >= 0")
        self.max_bytes = int(max_bytes)
        self.max_per_key = int(max_per_key)
        self._idle: defaultdict[Key, deque[np.ndarray]] = defaultdict(deque)
        self._bytes = 0
        self._count = 0
        self._lock = threading.Lock()
        self._reused = self._allocated = self._released = self._discarded = 0

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

    def clear(self) -> None:
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
            )
