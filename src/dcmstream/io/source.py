"""Byte sources: "read n bytes at offset" over files, memory and file objects.

Everything dcmstream reads goes through a :class:`ByteSource`, so the engine never
needs a whole file in memory and a test can count exactly which bytes a call read.
Sources are thread-safe: a decode pool may read different frames concurrently.
"""

from __future__ import annotations

import io
import os
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeAlias

from ..errors import InvalidArgumentError, InvalidArgumentTypeError, SourceError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["ByteSource", "FileSource", "BytesSource", "FileObjectSource", "WritableBuffer", "as_source"]

#: What :meth:`ByteSource.read_into` writes into (numpy arrays: C-contiguous).
WritableBuffer: TypeAlias = "bytearray | memoryview | np.ndarray[Any, Any]"


def _byte_view(out: WritableBuffer) -> memoryview:
    """``out`` as a flat memoryview of bytes."""
    return memoryview(out).cast("B")  # type: ignore[arg-type]  # numpy's stubs give ndarray __buffer__ on Python >= 3.12 only


class ByteSource(ABC):
    """Random access to an immutable sequence of bytes.

    Subclasses implement :meth:`_read_at`; the base class keeps the counters
    ``bytes_read`` and ``read_calls`` that the memory tests and metrics use.
    """

    name: str = "<source>"
    #: Whether every read is a round trip to another machine (an HTTP or S3 range request):
    #: readers then prefer one larger read over two small ones.
    remote: bool = False

    def __init__(self) -> None:
        self.bytes_read = 0
        self.read_calls = 0
        self._closed = False
        self._count_lock = threading.Lock()

    @property
    @abstractmethod
    def size(self) -> int:
        """Total number of bytes in the source."""

    @abstractmethod
    def _read_at(self, offset: int, length: int) -> bytes:
        """Return up to ``length`` bytes at ``offset`` (fewer only at the end)."""

    def read_at(self, offset: int, length: int) -> bytes:
        """Return ``length`` bytes at ``offset``, fewer only where the source ends.

        The length is clamped to the source size before anything is allocated,
        so a corrupt length field can never cause a huge allocation.
        """
        if self._closed:
            raise SourceError(f"{self.name}: source is closed")
        if offset < 0 or length < 0:
            raise SourceError(f"{self.name}: negative offset or length ({offset}, {length})")
        length = max(0, min(length, self.size - offset))
        if length == 0:
            return b""
        data = self._read_at(offset, length)
        with self._count_lock:
            self.bytes_read += len(data)
            self.read_calls += 1
        return data

    def read_exact(self, offset: int, length: int, what: str = "data") -> bytes:
        """Like :meth:`read_at` but a short read is a truncation error."""
        data = self.read_at(offset, length)
        if len(data) != length:
            from ..errors import DicomFormatError

            raise DicomFormatError(
                f"{self.name}: {what} at offset {offset} needs {length} bytes but the "
                f"source ends after {len(data)} (truncated file?)"
            )
        return data

    def read_writable(self, offset: int, length: int, what: str = "data") -> bytearray:
        """Like :meth:`read_exact`, into a new writable buffer (numpy arrays over it can be
        changed in place, so callers need not copy what they read)."""
        buf = bytearray(length)
        self.read_into(offset, length, buf, what)
        return buf

    def read_into(self, offset: int, length: int, out: WritableBuffer, what: str = "data") -> None:
        """Like :meth:`read_exact`, into the first ``length`` bytes of ``out`` (a writable
        buffer: a bytearray, a C-contiguous numpy array). A frame cache reads native frames
        straight into its recycled frame buffers this way. A short read is a truncation
        error; ``out`` may then hold part of the bytes."""
        view = _byte_view(out)
        try:
            if len(view) < length:
                raise InvalidArgumentError(f"read_into: {length} bytes do not fit in a buffer of {len(view)}")
            view[:length] = self.read_exact(offset, length, what)
        finally:
            view.release()

    def reset_counters(self) -> None:
        """Set ``bytes_read`` and ``read_calls`` back to zero."""
        with self._count_lock:
            self.bytes_read = 0
            self.read_calls = 0

    def opened(self) -> None:  # noqa: B027 - a hook: most sources have nothing to do
        """Told by :class:`~dcmstream.image.instance.Instance` once the header and frame index
        are read: a remote source ends its open footprint here (see ``RangedSource``)."""

    def close(self) -> None:
        """Release the underlying resource; further reads raise SourceError."""
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "ByteSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, size={self.size})"


class FileSource(ByteSource):
    """A local file read with ``os.pread``: no shared file position, thread-safe."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self.path = Path(path)
        self.name = str(path)
        try:
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except OSError as exc:
            raise SourceError(f"{self.name}: cannot open ({exc.strerror})") from exc
        self._size = os.fstat(self._fd).st_size

    @property
    def size(self) -> int:
        return self._size

    def read_into(self, offset: int, length: int, out: WritableBuffer, what: str = "data") -> None:
        # preadv fills the buffer itself: one copy (kernel to buffer) instead of two.
        if self._closed:
            raise SourceError(f"{self.name}: source is closed")
        view = _byte_view(out)
        try:
            if offset < 0 or length < 0 or offset + length > self.size or len(view) < length:
                return super().read_into(offset, length, out, what)  # the checks and messages
            done = 0
            try:
                while done < length:
                    n = os.preadv(self._fd, [view[done:length]], offset + done)
                    if n <= 0:
                        break
                    done += n
            except OSError as exc:
                raise SourceError(f"{self.name}: read failed at {offset} ({exc.strerror})") from exc
        finally:
            view.release()
        if done < length:  # the file shrank under us: read_exact reports it
            return super().read_into(offset, length, out, what)
        with self._count_lock:
            self.bytes_read += length
            self.read_calls += 1
        return None

    def _read_at(self, offset: int, length: int) -> bytes:
        try:
            data = os.pread(self._fd, length, offset)
            # pread may return short reads on some file systems; finish them.
            while len(data) < length:
                more = os.pread(self._fd, length - len(data), offset + len(data))
                if not more:
                    break
                data += more
            return data
        except OSError as exc:
            raise SourceError(f"{self.name}: read failed at {offset} ({exc.strerror})") from exc

    def close(self) -> None:
        if not self._closed:
            os.close(self._fd)
        super().close()


class BytesSource(ByteSource):
    """Bytes already in memory (tests, small uploads)."""

    def __init__(self, data: bytes | bytearray | memoryview, name: str = "<bytes>") -> None:
        super().__init__()
        self._data = memoryview(data).cast("B")
        self.name = name

    @property
    def size(self) -> int:
        return len(self._data)

    def _read_at(self, offset: int, length: int) -> bytes:
        return bytes(self._data[offset : offset + length])


class FileObjectSource(ByteSource):
    """A seekable binary file object; seek+read are serialised by a lock.

    With ``owned=True`` the source owns the file object and :meth:`close` closes it too
    (a temporary file, deleted on close: an inflated deflated dataset, a downloaded object);
    otherwise the caller's file stays open."""

    def __init__(self, fileobj: BinaryIO, name: str | None = None, *, owned: bool = False) -> None:
        super().__init__()
        self._owned = owned
        if not (hasattr(fileobj, "read") and hasattr(fileobj, "seek")):
            raise InvalidArgumentTypeError("file object must have read() and seek()")
        if isinstance(fileobj, io.TextIOBase):
            raise InvalidArgumentTypeError("file object must be opened in binary mode ('rb'), not text mode")
        self._fp = fileobj
        self._lock = threading.Lock()
        self.name = name or str(getattr(fileobj, "name", "<file object>"))
        with self._lock:
            try:
                here = fileobj.tell()
                self._size = fileobj.seek(0, os.SEEK_END)
                fileobj.seek(here)
            except (OSError, ValueError) as exc:  # a pipe or socket; a closed file
                raise SourceError(f"{self.name}: file object is not seekable ({exc})") from exc

    @property
    def size(self) -> int:
        return self._size

    def _read_at(self, offset: int, length: int) -> bytes:
        with self._lock:
            try:
                self._fp.seek(offset)
                return self._fp.read(length)
            except (OSError, ValueError) as exc:  # ValueError: the caller closed the file
                raise SourceError(f"{self.name}: read failed at {offset} ({exc})") from exc

    def close(self) -> None:
        if self._owned and not self._closed:
            self._fp.close()
        super().close()


def as_source(obj: "str | os.PathLike[str] | BinaryIO | ByteSource | bytes") -> ByteSource:
    """Wrap a path, bytes, a binary file object or a ByteSource as a ByteSource."""
    if isinstance(obj, ByteSource):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        return FileSource(obj)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return BytesSource(obj)
    if hasattr(obj, "read") and hasattr(obj, "seek"):
        return FileObjectSource(obj)
    raise InvalidArgumentTypeError(f"cannot read DICOM from {type(obj).__name__}")
