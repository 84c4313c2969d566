"""Atomic output: a file appears at its destination whole, or not at all.

The one mechanism every writer of dcmstream uses (the transcoder, the synthetic samples,
the compression report, the archive's blob store, small JSON files): data goes to a
hidden temporary sibling of the destination (same folder, so same file system and the
final :func:`os.replace` is atomic), is fsynced, renamed over the destination, and the
folder is fsynced so the rename itself survives a power cut. A crash or an exception
before the commit leaves the old destination untouched and removes the temporary file
(a hard crash leaves a hidden ``.NAME.XXXX.tmp`` that folder walkers skip).

Large files call :meth:`AtomicFile.write_behind` every few MiB: it starts the disk writes
of what is written so far (Linux ``sync_file_range``), so the final fsync finds little
left to do instead of stalling on the whole file.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from ..errors import DcmstreamError
from ..libc import libc

__all__ = ["AtomicFile", "atomic_copy", "atomic_write", "commit_file", "fsync_dir", "fsync_file", "temp_sibling"]


def temp_sibling(destination: str | os.PathLike[str]) -> Path:
    """A fresh hidden name beside ``destination`` (``.NAME.<12 hex>.tmp``).

    Unique, so concurrent writers of the same destination never share a temporary file;
    hidden, so folder walkers and blob listings never pick it up half-written.
    """
    dest = Path(destination)
    return dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:12]}.tmp")


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Flush a folder's entries to disk: a rename is durable only after this.

    Best effort: where folders cannot be opened (Windows) the rename is still atomic.
    """
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike[str]) -> None:
    """fsync a closed file by path (its data and size on disk before it is renamed)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_file(temporary: str | os.PathLike[str], destination: str | os.PathLike[str], *,
                fsync: bool = True) -> None:
    """Publish a finished, closed ``temporary`` file (a sibling of ``destination``) at
    ``destination``: fsync it, rename it over the destination, fsync the folder.

    ``fsync=False`` keeps only the atomicity (readers never see a partial file), for
    data that is cheap to recreate.
    """
    if fsync:
        fsync_file(temporary)
    os.replace(temporary, destination)
    if fsync:
        fsync_dir(Path(destination).parent)


class FileClosedError(DcmstreamError, ValueError):
    """An :class:`AtomicFile` was used after it was committed or discarded (a ValueError,
    like writing to a closed file)."""


class AtomicFile:
    """A file that appears at ``destination`` whole, or not at all.

    Writes go to ``fh``, a hidden temporary sibling (:func:`temp_sibling`). :meth:`commit`
    fsyncs the data, renames over the destination and fsyncs the folder; leaving the
    ``with`` block without a commit - an exception, a failed verification - removes the
    temporary file. (Not ``tempfile.NamedTemporaryFile``: its 0600 mode would stick to the
    published file.)
    """

    def __init__(self, destination: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.destination = Path(destination)
        self.path = temp_sibling(self.destination)
        self.fsync = fsync
        self._fh: BinaryIO | None = open(self.path, "xb")  # noqa: SIM115 - closed in close()
        self.committed = False

    @property
    def fh(self) -> BinaryIO:
        if self._fh is None:
            raise FileClosedError(f"{self.path}: already closed")
        return self._fh

    def write_behind(self) -> None:
        """Start the disk writes of everything written so far, without waiting for them
        (Linux ``sync_file_range``), so that the fsync of :meth:`close` finds little left
        to write: called every few MiB while a large file is written."""
        fh = self.fh
        fh.flush()
        _start_writeback(fh.fileno())

    def close(self) -> None:
        """Flush (and fsync) and close the temporary file (it stays until commit or discard)."""
        if self._fh is not None:
            self._fh.flush()
            if self.fsync:
                os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None

    def commit(self) -> Path:
        """fsync, rename over the destination, fsync the folder; returns the destination."""
        self.close()
        os.replace(self.path, self.destination)
        self.committed = True
        if self.fsync:
            fsync_dir(self.destination.parent)
        return self.destination

    def discard(self) -> None:
        """Remove the temporary file (idempotent)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if not self.committed:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()


def atomic_write(destination: str | os.PathLike[str],
                 data: bytes | str | Callable[[BinaryIO], object], *, fsync: bool = True) -> Path:
    """Write ``data`` (bytes, text as UTF-8, or a function writing to a binary file) to
    ``destination`` atomically; returns the destination."""
    with AtomicFile(destination, fsync=fsync) as out:
        if isinstance(data, str):
            out.fh.write(data.encode("utf-8"))
        elif isinstance(data, (bytes, bytearray, memoryview)):
            out.fh.write(data)
        else:
            data(out.fh)
        return out.commit()


def atomic_copy(source: str | os.PathLike[str], destination: str | os.PathLike[str]) -> Path:
    """Copy ``source`` to ``destination`` atomically (streamed in 1 MiB blocks)."""
    with open(source, "rb") as fh:
        return atomic_write(destination, lambda out: shutil.copyfileobj(fh, out, 1 << 20))


def _writeback_starter():  # noqa: ANN202 - a ctypes function or None
    try:
        function = libc().sync_file_range  # type: ignore[union-attr]
    except AttributeError:  # not Linux: fsync alone does the work
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


_SYNC_FILE_RANGE = _writeback_starter()
_SYNC_FILE_RANGE_WRITE = 2  # linux/fs.h: start write-out of dirty pages, do not wait


def _start_writeback(fd: int) -> None:
    # Only a hint: durability still comes from the fsync in close(); failures are ignored.
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)
