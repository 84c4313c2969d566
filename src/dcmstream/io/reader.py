"""A small buffered, file-like view of a ByteSource for pydicom's parser.

pydicom reads a header element by element (8-12 byte reads). Sending each of those
to the source would mean thousands of system calls (or HTTP requests) for an
enhanced multiframe header, so reads are served from a read-ahead block. Reads are
clamped to the bytes that exist, so a corrupt length never allocates more memory
than the file holds.
"""

from __future__ import annotations

import io

from ..errors import InvalidArgumentError
from .source import ByteSource

__all__ = ["SourceReader"]


class SourceReader(io.RawIOBase):
    """Sequential file-like access to ``source`` starting at ``start``."""

    def __init__(self, source: ByteSource, start: int = 0, block_size: int = 16384, max_block_size: int = 65536) -> None:
        super().__init__()
        self.source = source
        self.name = source.name
        self._pos = start
        # Read-ahead grows while reading stays sequential (a long header), so a
        # 1,000-item sequence costs a few reads, while a small header reads one
        # small block: what is read past the header is at most what was used.
        self._min_block = block_size
        self._max_block = max(block_size, max_block_size)
        self._block_size = block_size
        self._buf = b""
        self._buf_start = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.source.size + offset
        else:
            raise InvalidArgumentError(f"invalid whence {whence}")
        if pos < 0:
            raise InvalidArgumentError("negative seek position")
        self._pos = pos
        return pos

    def peek(self, size: int) -> bytes:
        """Up to ``size`` bytes at the current position, without moving it: they stay in
        the read-ahead buffer, so reading them afterwards costs no second read."""
        size = max(0, min(size, self.source.size - self._pos))
        if not (self._buf_start <= self._pos and self._pos + size <= self._buf_start + len(self._buf)):
            self._buf = self.source.read_at(self._pos, max(size, self._min_block))
            self._buf_start = self._pos
        rel = self._pos - self._buf_start
        return self._buf[rel : rel + size]

    def read(self, size: int | None = -1) -> bytes:
        remaining = max(0, self.source.size - self._pos)
        if size is None or size < 0 or size > remaining:
            size = remaining
        if size == 0:
            return b""
        buf_end = self._buf_start + len(self._buf)
        if self._buf_start <= self._pos and self._pos + size <= buf_end:
            rel = self._pos - self._buf_start
            data = self._buf[rel : rel + size]
        elif size >= self._block_size:
            # Large values go straight to the source, not through the buffer.
            data = self.source.read_at(self._pos, size)
        else:
            sequential = self._buf and buf_end <= self._pos <= buf_end + self._block_size
            self._block_size = min(self._block_size * 2, self._max_block) if sequential else self._min_block
            self._buf = self.source.read_at(self._pos, self._block_size)
            self._buf_start = self._pos
            data = self._buf[:size]
        self._pos += len(data)
        return data

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(b))
        n = len(data)
        memoryview(b)[:n] = data
        return n
