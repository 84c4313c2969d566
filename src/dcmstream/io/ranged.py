"""A byte source read by ranges from somewhere remote (object storage, HTTP Range).

:class:`RangedSource` knows the size of the bytes up front and reads any
``(offset, length)`` through one callable, ``fetch(start, end) -> bytes`` (``end``
exclusive), so it holds no protocol: the S3 blob store passes a GetObject with a
Range header, an HTTP source will pass a GET with one. What it adds is what every
remote source needs and a local file does not:

* **bounded read-ahead**: a small read (shorter than ``readahead``, 64 KiB by
  default) fetches one block of ``readahead`` bytes from its offset and keeps it,
  so the many small reads of a header walk cost one request per block instead of
  one each. A read of ``readahead`` bytes or more (a frame) fetches exactly its
  range, nothing before or after it, and is not kept. :meth:`read_writable`, the
  frame payload read, never reads ahead. At most one block is held per source.
* **counters**: :attr:`fetched` counts the requests and bytes that went over the
  wire (``bytes_read``/``read_calls`` of :class:`ByteSource` count what callers
  asked for); a store can pass one shared :class:`FetchStats` to all its sources.
* **typed failures**: a fetch that returns more or fewer bytes than asked for is a
  :class:`~dcmstream.errors.SourceError` (the object changed or is truncated, or
  the server ignored the range); so is a failed one.
* **retries**: a fetch that raises ``ConnectionError`` or ``TimeoutError`` (the
  builtin ones: fetch callables translate their client's transient errors to them)
  is retried ``retries`` times with exponential backoff, then a SourceError.
* **known bytes**: :meth:`seed` puts bytes the opener already has (the first range an
  URL open fetched to learn the size) into the read-ahead block, and ``known=``
  segments (the bytes a previous open read, from :mod:`~dcmstream.io.open_cache`)
  answer any read that lies inside one of them without a request.
* **the open footprint**: with ``record=True`` every range a caller reads is kept
  (what was asked for, not the read-ahead around it) until :meth:`opened`, which
  :class:`~dcmstream.image.instance.Instance` calls once the header and frame index are
  built; ``on_opened`` then gets the merged segments, so an open cache can replay the
  same open later from them. Recording stops at ``record_limit`` bytes (a huge header
  is not worth keeping).
* **growing read-ahead while opening**: with ``grow_to`` set, small reads that go on
  where the block ends (a header walk) grow the read-ahead (x4, then x2 each time), up
  to ``grow_to`` bytes, so a 1 MiB header costs 4 requests instead of 16; a read elsewhere
  starts again at ``readahead``. :meth:`opened` ends the growth: frame reads that follow
  never read more than ``readahead`` past their bytes.
"""

from __future__ import annotations

import bisect
import random
import threading
import time
from collections.abc import Callable, Sequence

from ..errors import InvalidArgumentError, SourceError
from .source import ByteSource

__all__ = ["READAHEAD", "FetchStats", "RangedSource", "Segments", "merge_segments"]

#: Default read-ahead: the most a small read fetches (also the most a frame request
#: fetches beyond the frame's bytes).
READAHEAD = 64 * 1024

Fetch = Callable[[int, int], bytes]
#: Byte ranges known without a request: sorted, disjoint (offset, bytes) pairs.
Segments = list[tuple[int, bytes]]


def merge_segments(parts: Sequence[tuple[int, bytes]]) -> Segments:
    """``parts`` sorted, with overlapping or touching ranges joined into one."""
    out: Segments = []
    for start, data in sorted(parts, key=lambda p: (p[0], -len(p[1]))):
        if not data:
            continue
        if out and start <= out[-1][0] + len(out[-1][1]):
            prev_start, prev = out[-1]
            end = start + len(data)
            if end > prev_start + len(prev):
                out[-1] = (prev_start, prev + data[prev_start + len(prev) - start :])
        else:
            out.append((start, data))
    return out


class FetchStats:
    """Requests and bytes fetched from a remote store (thread-safe counters)."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        self._lock = threading.Lock()

    def add(self, nbytes: int) -> None:
        """Count one request that returned ``nbytes`` bytes (0 for a failed one)."""
        with self._lock:
            self.requests += 1
            self.bytes += nbytes

    def reset(self) -> None:
        with self._lock:
            self.requests = 0
            self.bytes = 0

    def __repr__(self) -> str:
        return f"FetchStats(requests={self.requests}, bytes={self.bytes})"


class RangedSource(ByteSource):
    """Random access to ``size`` bytes read through ``fetch(start, end)`` (see the module)."""

    remote = True

    def __init__(
        self,
        fetch: Fetch,
        size: int,
        *,
        name: str = "<ranged>",
        readahead: int = READAHEAD,
        retries: int = 3,
        backoff: float = 0.1,
        transient: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError),
        stats: FetchStats | None = None,
        on_read: Callable[[int], None] | None = None,
        on_close: Callable[[], None] | None = None,
        known: Sequence[tuple[int, bytes]] = (),
        record: bool = False,
        record_limit: int = 4 << 20,
        on_opened: Callable[[Segments], None] | None = None,
        identity: tuple[str, ...] | None = None,
        grow_to: int = 0,
    ) -> None:
        super().__init__()
        if size < 0 or readahead < 0 or retries < 0 or backoff < 0:
            raise InvalidArgumentError("size, readahead, retries and backoff must be >= 0")
        self._fetch_range = fetch
        self._size = size
        self.name = name
        self.readahead = readahead
        self.retries = retries
        self.backoff = backoff
        self.transient = transient
        #: Requests and bytes this source fetched.
        self.fetched = FetchStats()
        self._shared_stats = stats
        self._on_read = on_read
        self._on_close = on_close
        self._block_lock = threading.Lock()
        self._block_start = 0
        self._block = b""  # at most ``readahead`` bytes at _block_start
        self._known = merge_segments(known)
        self._known_starts = [start for start, _ in self._known]
        self._recording: list[tuple[int, bytes]] | None = [] if record else None
        self._recorded = 0
        self.record_limit = record_limit
        self._on_opened = on_opened
        self._grow_to = grow_to
        self._ahead = readahead  # the current read-ahead (grows while opening)
        #: Identity of the bytes for frame caches (e.g. URL + ETag); None: none survives reopening.
        self.cache_identity = identity

    @property
    def size(self) -> int:
        return self._size

    # -- known bytes and the open footprint ---------------------------------------------
    def seed(self, offset: int, data: bytes) -> None:
        """Make ``data`` (the bytes at ``offset``, fetched by the opener) the read-ahead block."""
        with self._block_lock:
            self._block_start, self._block = offset, bytes(data)

    def _from_known(self, offset: int, length: int) -> bytes | None:
        i = bisect.bisect_right(self._known_starts, offset) - 1
        if i < 0:
            return None
        start, data = self._known[i]
        if offset + length <= start + len(data):
            return data[offset - start : offset - start + length]
        return None

    def _record(self, offset: int, data: bytes) -> None:
        rec = self._recording
        if rec is None:
            return
        with self._block_lock:
            self._recorded += len(data)
            if self._recorded > self.record_limit:
                self._recording = None  # too much to be worth replaying
            else:
                rec.append((offset, bytes(data)))

    def opened(self) -> None:
        """The open is complete: stop recording and hand the footprint to ``on_opened``."""
        with self._block_lock:
            rec, self._recording = self._recording, None
            self._grow_to = 0
            self._ahead = self.readahead
        if rec is not None and self._on_opened is not None:
            self._on_opened(merge_segments(rec))

    # -- reads ---------------------------------------------------------------------------
    def _read_at(self, offset: int, length: int) -> bytes:
        data = self._from_known(offset, length) if self._known else None
        if data is None:
            data = self._read(offset, length, ahead=True)
        self._record(offset, data)
        if self._on_read is not None:
            self._on_read(len(data))
        return data

    def read_writable(self, offset: int, length: int, what: str = "data") -> bytearray:
        # The frame payload read: exactly its range, never read-ahead (what is past a
        # frame belongs to the next frame, which this request does not need).
        if self._closed:
            raise SourceError(f"{self.name}: source is closed")
        if offset < 0 or length < 0 or offset + length > self.size or length == 0:
            return super().read_writable(offset, length, what)  # the checks and messages
        buf = bytearray(self._read(offset, length, ahead=False))
        with self._count_lock:
            self.bytes_read += length
            self.read_calls += 1
        if self._on_read is not None:
            self._on_read(length)
        return buf

    def _read(self, offset: int, length: int, *, ahead: bool) -> bytes:
        """``length`` bytes at ``offset`` (inside the source), from the block or fetched."""
        end = offset + length
        with self._block_lock:
            block_start, block = self._block_start, self._block
        block_end = block_start + len(block)
        if block and block_start <= offset and end <= block_end:
            return block[offset - block_start : end - block_start]
        prefix = b""
        start = offset
        if block and block_start <= offset < block_end:
            # The read begins inside the block: fetch only what follows it.
            prefix = block[offset - block_start :]
            start = block_end
        need = end - start
        # Small reads read ahead; the rest of a frame-sized one that began in the block
        # is fetched exactly (it is the frame, the bytes after it are not).
        if ahead and length < self.readahead:
            with self._block_lock:
                if self._grow_to:
                    # A header walk going on where the block ends: double the read-ahead.
                    onward = bool(block) and block_start <= offset <= block_end + self._ahead
                    # x4 the first time: a header past the first block (an enhanced multiframe's
                    # per-frame groups, ~280 KiB for 1,000 frames) then costs one more request,
                    # not two; x2 after that, so what is read past the header stays below ~2x it.
                    factor = 4 if self._ahead == self.readahead else 2
                    self._ahead = min(self._ahead * factor, self._grow_to) if onward else self.readahead
                size = self._ahead
            fetched = self._fetch(start, min(self._size, start + max(size, length - len(prefix))))
            with self._block_lock:
                # The new block keeps the part of the old one this read began in: the
                # element headers just before it are often read again (the pixel element).
                self._block_start, self._block = (offset, prefix + fetched) if prefix else (start, fetched)
            rest = fetched[:need]
        else:
            rest = self._fetch(start, end)
        return prefix + rest if prefix else rest

    def _fetch(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` through the fetch callable: retried, counted, checked."""
        attempt = 0
        while True:
            try:
                data = self._fetch_range(start, end)
            except SourceError:
                self._count_fetch(0)
                raise
            except self.transient as exc:
                self._count_fetch(0)
                if attempt >= self.retries:
                    raise SourceError(
                        f"{self.name}: bytes {start}-{end - 1} failed after {attempt + 1} attempts ({exc})"
                    ) from exc
                # Exponential backoff with jitter, so many readers do not retry in step.
                time.sleep(self.backoff * (2**attempt) * (0.5 + random.random() / 2))
                attempt += 1
                continue
            except OSError as exc:
                self._count_fetch(0)
                raise SourceError(f"{self.name}: bytes {start}-{end - 1} failed ({exc})") from exc
            break
        self._count_fetch(len(data))
        if len(data) != end - start:
            raise SourceError(
                f"{self.name}: asked for bytes {start}-{end - 1} ({end - start} bytes) of {self._size}, got "
                f"{len(data)} (the object is truncated or changed, or the server ignored the range)"
            )
        return bytes(data)

    def _count_fetch(self, nbytes: int) -> None:
        self.fetched.add(nbytes)
        if self._shared_stats is not None:
            self._shared_stats.add(nbytes)

    def close(self) -> None:
        if not self._closed:
            with self._block_lock:
                self._block = b""
            if self._on_close is not None:
                self._on_close()
        super().close()
