"""Blob stores: where the archive keeps the bytes of each instance.

A :class:`BlobStore` maps keys (``"study/series/sop.dcm"``-like paths built from
validated UIDs) to immutable byte strings. It is deliberately small, in the spirit
of zarr's ``Store``: put a finished file atomically, open random access to a blob
(a :class:`~dcmstream.io.ByteSource`, so frame reads fetch exactly one frame's
bytes), stream a byte range, list, delete. Every backend proves itself by passing
``tests/archive/test_blobstore.py::BlobStoreTests``: :class:`FilesystemBlobStore` here,
:class:`~.s3store.S3BlobStore` (``open`` returns a ranged source) for object storage.

:class:`FilesystemBlobStore` writes with temp file + fsync + rename + fsync of the
directory, so a blob is either absent or complete, even after a power cut.

A put replaces an existing blob by default; ``exclusive=True`` refuses to
(:class:`BlobExistsError`), so that of several writers of one key (processes or hosts
sharing the store) the first one's bytes stay: the filesystem store publishes with a
hard link, which fails atomically when the name exists, S3 with a conditional request.

Staging files and the sweeps (what a killed writer leaves):

* a writer holds a shared ``flock`` on each file it has in flight, from the moment the
  file exists (:meth:`BlobStore.create_staging`: ``lk-`` names, created locked) until it
  is done with it; the lock dies with the process, so a file nobody holds is a killed
  writer's leftover and :func:`sweep_staging` deletes it at once, whatever its age (it
  takes the lock exclusively first, so it never deletes a file a live writer holds).
  Files named after such a file (:meth:`StagingFile.sibling`, and the hidden temporary
  files of a writer that renames into place there) share its lock. Every writer of this
  package stages that way; a file made otherwise in the staging folder (a foreign or older
  writer that does not lock) is left until older than the sweep's age limit;
* the same lock, held on a blob's file from before its name is published until the
  catalog row that points at it is committed, tells :func:`.ingest.sweep_orphans` that the
  blob is in flight (:meth:`BlobStore.claim`). Object storage has no such locks: there the
  sweep of unreferenced blobs goes by age.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from ..errors import DcmstreamError
from ..io.atomic import commit_file, fsync_dir, fsync_file
from ..io.source import ByteSource, FileSource, WritableBuffer

__all__ = [
    "BlobStore",
    "FilesystemBlobStore",
    "BlobNotFoundError",
    "BlobExistsError",
    "BlobStoreError",
    "StorageFullError",
    "storage_full",
    "FULL_ERRNOS",
    "InvalidKeyError",
    "validate_key",
    "iter_source",
    "sweep_staging",
    "staging_leftovers",
    "staging_lock",
    "StagingFile",
    "create_locked",
    "LOCKED_PREFIX",
]

#: Name prefix of the staging files created locked (:func:`create_locked`): unlocked, they
#: are leftovers whatever their age.
LOCKED_PREFIX = "lk-"

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_MAX_KEY = 1024
_CHUNK = 1 << 20


class BlobNotFoundError(DcmstreamError, KeyError):
    """No blob under this key (a KeyError too, for mapping-style callers)."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(key)

    def __str__(self) -> str:
        # KeyError's str() is the repr of its argument; say what is missing instead.
        return f"no blob under key {self.key!r}"


class BlobExistsError(DcmstreamError, FileExistsError):
    """An exclusive put found a blob under its key already (a FileExistsError too).

    Raised by ``put_file(..., exclusive=True)``: the key was taken by another writer
    first, and its blob is left as that writer stored it.
    """

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(errno.EEXIST, f"a blob already exists under key {key!r}")

    def __str__(self) -> str:
        return f"a blob already exists under key {self.key!r}"


class BlobStoreError(DcmstreamError, OSError):
    """The blob store itself failed (network, permissions, a refused request)."""


class StorageFullError(DcmstreamError, OSError):
    """Storage is exhausted: no space left on the device, a disk quota or file size limit
    reached (ENOSPC, EDQUOT, EFBIG), an object store refusing for want of space, or the
    catalog database full. Nothing was stored; the same write succeeds once space is
    freed, without a restart. 507 (Insufficient Storage) on the web, FailureReason 0xA700."""


#: errno values that mean "out of space" rather than "broken": no space on the device, a
#: disk quota, a file size limit (RLIMIT_FSIZE, with SIGXFSZ ignored).
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def storage_full(exc: BaseException, what: str) -> StorageFullError | None:
    """``exc`` (or an OSError it was raised from) as a :class:`StorageFullError` saying
    ``what`` was being written, or None when it is not storage exhaustion."""
    seen: BaseException | None = exc
    for _ in range(8):  # walk the __cause__/__context__ chain a little way
        if seen is None:
            return None
        if isinstance(seen, StorageFullError):
            return seen
        if isinstance(seen, OSError) and seen.errno in FULL_ERRNOS:
            return StorageFullError(seen.errno, f"{what}: storage full ({os.strerror(seen.errno)})")
        seen = seen.__cause__ or seen.__context__
    return None


class InvalidKeyError(DcmstreamError, ValueError):
    """A key that could escape the store or is not a plain relative path."""


def validate_key(key: object) -> str:
    """Return ``key`` if it is a safe relative key, else raise :class:`InvalidKeyError`.

    Keys are ``/``-separated segments of letters, digits, ``.``, ``_`` and ``-`` that
    do not start with a dot (so no ``..``, no hidden files, no absolute paths).
    """
    if not isinstance(key, str) or not key or len(key) > _MAX_KEY:
        raise InvalidKeyError(f"invalid blob key {key!r}")
    for segment in key.split("/"):
        if not _SEGMENT.match(segment) or ".." in segment:
            raise InvalidKeyError(f"invalid blob key {key!r} (segment {segment!r})")
    return key


class BlobStore(ABC):
    """Immutable blobs by key: atomic puts, random-access reads, ranges, listing.

    ``bytes_read`` counts every byte read through sources this store opened, so
    tests (and metrics) can check that a frame request read only that frame.
    """

    def __init__(self) -> None:
        self._read_lock = threading.Lock()
        self._bytes_read = 0

    # -- capabilities ----------------------------------------------------------------
    @property
    def supports_rename(self) -> bool:
        """True when ``put_file(move=True)`` is a rename (no copy of the data)."""
        return False

    @property
    def atomic_exclusive(self) -> bool:
        """True when of concurrent ``exclusive=True`` puts of one key at most one can
        succeed (decided atomically by the backend). Where not, writers that must not
        share a key use keys of their own (see :func:`.ingest._put_blob`)."""
        return False

    @property
    def bytes_read(self) -> int:
        """Bytes read so far through sources opened by this store."""
        return self._bytes_read

    def count_read(self, n: int) -> None:
        """Add ``n`` bytes to :attr:`bytes_read`: the sources a store opens call this on each read."""
        with self._read_lock:
            self._bytes_read += n

    # -- required --------------------------------------------------------------------
    @abstractmethod
    def put_file(self, key: str, path: str | os.PathLike[str], *, move: bool = False, exclusive: bool = False) -> int:
        """Store the finished file at ``path`` under ``key`` atomically; return its size.

        With ``move=True`` the file may be consumed (renamed into place); when the put
        fails it is left where it was. An existing blob under ``key`` is replaced
        atomically: readers see the old or the new bytes, never a mix. With
        ``exclusive=True`` it is not: the put raises :class:`BlobExistsError` and the
        existing blob stays as it is, and of concurrent exclusive puts of one key at
        most one succeeds where the backend can decide that atomically (local files,
        Amazon S3; see the store's notes).
        """

    @abstractmethod
    def open(self, key: str) -> ByteSource:
        """Random access to a blob (close it after use); BlobNotFoundError if absent."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether a blob is stored under ``key``."""

    @abstractmethod
    def size(self, key: str) -> int:
        """Size in bytes of the blob; BlobNotFoundError if absent."""

    @abstractmethod
    def delete(self, key: str) -> bool:
        """Remove a blob; returns whether it existed."""

    @abstractmethod
    def keys(self, prefix: str = "") -> Iterator[str]:
        """Keys of all blobs starting with ``prefix``, in sorted order."""

    @abstractmethod
    def staging_path(self, suffix: str = ".tmp") -> Path:
        """A fresh local path in this store's staging folder (nothing is created).

        For the filesystem store the folder is on the same file system as the blobs, so
        the final put is a rename. Writers do not stage here directly: they use
        :meth:`create_staging` (a file created locked, which no sweep takes while they
        live). This stays the backend's one hook for *where* staging happens (each store
        implements it; :meth:`create_staging`, :meth:`clean_staging` and the sweep's folder
        come from it); a file made at such a path without the lock is swept only by age.
        """

    # -- optional --------------------------------------------------------------------
    def local_path(self, key: str) -> Path | None:
        """The blob's file on the local file system, or None when the store keeps none.

        Lets a reader that needs a path (a transcoder, a worker process) skip a copy;
        the file must be treated as read-only.
        """
        return None

    def modified(self, key: str) -> float | None:
        """When the blob was written (seconds since the epoch), or None when the store
        cannot tell; BlobNotFoundError if absent. Lets sweeps spare what is in flight."""
        if not self.exists(key):
            raise BlobNotFoundError(key)
        return None

    # -- derived ---------------------------------------------------------------------
    def clean_staging(self, older_than: float = 0.0) -> int:
        """Delete the staging files a killed writer left; returns how many.

        A file a live process holds locked (:func:`staging_lock`, :meth:`create_staging`)
        always stays; an unlocked file created locked (a killed writer's) always goes; one
        made by a writer that does not lock goes once older than ``older_than`` seconds.
        Every archive calls this for its stores when it opens, and the periodic sweep
        (:mod:`.sweep`) again; other processes sharing the store keep their files.
        """
        return len(self.staging_leftovers(older_than))

    def staging_leftovers(self, older_than: float = 0.0, *, delete: bool = True) -> list[Path]:
        """The staging files :meth:`clean_staging` removes (``delete=False``: only lists them)."""
        return staging_leftovers(self.staging_path().parent, older_than, delete=delete)

    def create_staging(self, suffix: str = ".tmp") -> StagingFile:
        """A new, empty staging file (:meth:`staging_path`'s folder) held locked by this
        process until the returned :class:`StagingFile` is closed: no sweep deletes it,
        however long it is in flight; if the process dies, the next sweep does."""
        return create_locked(lambda: self._locked_name(suffix))

    def _locked_name(self, suffix: str) -> Path:
        path = self.staging_path(suffix)
        return path.with_name(LOCKED_PREFIX + path.name)

    def pinned_source(self, path: Path, *, move: bool, pins: contextlib.ExitStack) -> Path:
        """The file to put (with ``move=True``) whose lock pins the new blob until ``pins``
        closes, so that :meth:`claim` (the orphan sweep) sees the blob in flight until its
        writer has committed the catalog row pointing at it (ingest, a compression swap).

        A store with local files renames the file it is given into the blob (same inode),
        so the lock on that file is the lock on the blob: a file to be moved on the store's
        file system is ``path`` itself, locked here; any other is copied into a staging
        file created locked (the copy the put would have made anyway). Object storage has
        no lock to hold: ``path`` as it is (its orphans are swept by age).
        """
        if not self.supports_rename:
            return path
        if move:
            try:
                same = os.stat(path).st_dev == os.stat(self.staging_path().parent).st_dev
            except OSError:
                return path  # the put reports it
            if same:
                pins.enter_context(staging_lock(path))
                return path
        staged = pins.enter_context(self.create_staging(".dcm"))
        shutil.copyfile(path, staged.path)
        return staged.path

    @contextmanager
    def claim(self, key: str) -> Iterator[bool | None]:
        """Hold the blob ``key`` against writers for a moment, to delete it as an orphan.

        Yields True when no live process pins the blob (a writer pins the blob's file with
        :func:`staging_lock` from before its name is published until the catalog row
        pointing at it is committed; a killed writer's pin died with it), False when one
        does (in flight: keep it), None when this store has no local files to lock (object
        storage: only an age can tell). While claimed (True), no writer can pin it anew.
        """
        try:
            path = self.local_path(key)
        except BlobNotFoundError:
            yield False  # gone meanwhile: nothing to delete
            return
        if path is None:
            yield None
            return
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            yield False
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def put_bytes(self, key: str, data: bytes | Iterable[bytes], *, exclusive: bool = False) -> int:
        """Store ``data`` (bytes or an iterable of chunks) under ``key`` atomically
        (``exclusive`` as in :meth:`put_file`)."""
        validate_key(key)
        staged = self.create_staging()  # locked: in flight, no sweep takes it
        try:
            with staged.open_write() as fh:
                if isinstance(data, (bytes, bytearray, memoryview)):
                    fh.write(data)
                else:
                    for chunk in data:
                        fh.write(chunk)
            return self.put_file(key, staged.path, move=True, exclusive=exclusive)
        except OSError as exc:
            full = storage_full(exc, f"blob {key!r}")
            if full is not None and full is not exc:
                raise full from exc
            raise
        finally:
            staged.discard()

    def read_range(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes ``[offset, offset+length)`` of a blob (to its end when length is None)."""
        with self.open(key) as src:
            n = src.size - offset if length is None else length
            return src.read_at(offset, max(n, 0))

    def iter_range(self, key: str, start: int = 0, end: int | None = None, chunk_size: int = _CHUNK) -> Iterator[bytes]:
        """Yield the blob's bytes ``[start, end)`` in chunks of at most ``chunk_size``."""
        with self.open(key) as src:
            yield from iter_source(src, start, end, chunk_size)


def iter_source(src: ByteSource, start: int = 0, end: int | None = None, chunk_size: int = _CHUNK) -> Iterator[bytes]:
    """Yield the bytes ``[start, end)`` of an open source in chunks of at most ``chunk_size``
    (the source stays open: its opener closes it)."""
    stop = src.size if end is None else min(end, src.size)
    pos = max(start, 0)
    while pos < stop:
        data = src.read_at(pos, min(chunk_size, stop - pos))
        if not data:
            break
        pos += len(data)
        yield data


def _link_exclusive(tmp: Path, dest: Path, key: str, *, fsync: bool) -> None:
    """Publish the finished ``tmp`` at ``dest`` only if nothing is there yet.

    A hard link is created atomically and fails when the name exists, so of two
    concurrent writers exactly one publishes (a rename would silently replace); the
    temporary name is removed afterwards either way.
    """
    if fsync:
        fsync_file(tmp)
    try:
        os.link(tmp, dest)
    except FileExistsError:
        raise BlobExistsError(key) from None
    tmp.unlink(missing_ok=True)
    if fsync:
        fsync_dir(dest.parent)


def sweep_staging(folder: Path, older_than: float = 0.0) -> int:
    """Delete a staging ``folder``'s leftovers (see :func:`staging_leftovers`); how many."""
    return len(staging_leftovers(folder, older_than))


def staging_leftovers(folder: Path, older_than: float = 0.0, *, delete: bool = True) -> list[Path]:
    """The files in a staging ``folder`` no live process holds locked, deleted unless
    ``delete=False``: every file of a killed writer that locked (see below), whatever its
    age, and the others (writers that do not lock) once older than ``older_than`` seconds.

    A file created locked (``lk-<token><suffix>``, :func:`create_locked`) and the files
    named after it (``lk-<token><suffix><more>``, :meth:`StagingFile.sibling`, and their
    hidden temporary siblings ``.lk-<token>....tmp``, e.g. an atomic writer's) are one
    group: while a live process holds any of them locked (its writer holds the first until
    it is done), all stay; once none is held, all go. So a writer may let another function
    write a sibling by temp file and rename without the result ever being unprotected.

    A file is deleted while this process holds it locked exclusively, and only if it is
    still the file of that name: a writer that created it an instant before locking it
    finds it unlinked once it gets its lock, and makes another (:func:`create_locked`).
    """
    found: list[Path] = []
    limit = time.time() - older_than
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:
        return found
    groups: dict[str, list[Path]] = {}
    for p in entries:
        owner = _lock_group(p.name)
        if owner is not None:
            groups.setdefault(owner, []).append(p)
            continue
        try:
            if not p.is_file() or p.stat().st_mtime > limit:
                continue
        except OSError:
            continue
        found += _take_unlocked([p], delete)
    for members in groups.values():
        found += _take_unlocked(members, delete)
    return found


def _lock_group(name: str) -> str | None:
    """The ``lk-<token>`` a staging file's name belongs to (see :func:`staging_leftovers`),
    or None for a file of a writer that does not lock."""
    bare = name[1:] if name.startswith(".") else name
    return bare.split(".", 1)[0] if bare.startswith(LOCKED_PREFIX) else None


def _take_unlocked(paths: list[Path], delete: bool) -> list[Path]:
    """``paths`` (one lock group), deleted unless ``delete=False``, if no live process holds
    any of them locked: each is locked exclusively first, and deleted only if it is still
    the file of its name. [] when one is held (in flight)."""
    held: list[tuple[Path, int]] = []
    try:
        for p in paths:
            try:
                if not p.is_file():
                    continue
                fd = os.open(p, os.O_RDONLY)
            except OSError:
                continue  # gone meanwhile, or not ours to read
            held.append((p, fd))
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return []  # a live process holds it: the group is in flight, whatever its age
        found = []
        for p, fd in held:
            try:
                if os.fstat(fd).st_ino != p.stat().st_ino:
                    continue  # renamed over meanwhile: another file now
            except OSError:
                continue
            if delete:
                p.unlink(missing_ok=True)
            found.append(p)
        return found
    finally:
        for _, fd in held:
            os.close(fd)  # also releases the lock


@contextmanager
def staging_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold a shared lock on a file in flight (a staging file, the file an ingest is
    about to rename into a blob), so that no sweep (:func:`staging_leftovers`,
    :meth:`BlobStore.claim`, in this or another process) deletes it. A missing file is no
    error (nothing to protect), nor a file system without locks.

    Waits for a sweep holding the file this instant (for a moment); the file may be gone
    after that, which the caller's next step notices.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        except OSError:
            pass  # no locks on this file system
        yield
    finally:
        os.close(fd)


class StagingFile:
    """A staging file held locked by this process (see :func:`create_locked`): ``path``;
    :meth:`open_write` to fill it; :meth:`close` releases the lock (the file stays),
    :meth:`discard` deletes it if still there and releases. A context manager (discards)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def sibling(self, suffix: str) -> Path:
        """A path named after this file (its name + ``suffix``, in its folder) that the
        sweeps leave alone while this file is held, even as a plain file another function
        writes (by temp file and rename: the temporary name is protected too). The caller
        deletes it when done (before :meth:`discard`); a killed writer's goes with this one."""
        return self.path.with_name(self.path.name + suffix)

    def open_write(self) -> BinaryIO:
        """A binary file object writing the file from its start; closing it keeps the lock."""
        if self._fd is None:
            raise BlobStoreError(f"staging file {self.path} was released")
        return os.fdopen(os.dup(self._fd), "wb")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def discard(self) -> None:
        try:
            self.path.unlink(missing_ok=True)
        finally:
            self.close()

    def __enter__(self) -> StagingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()

    def __repr__(self) -> str:
        return f"StagingFile({str(self.path)!r})"


def create_locked(make_path: Callable[[], Path], attempts: int = 8) -> StagingFile:
    """Create a new empty file at ``make_path()`` holding a shared lock on it.

    Between the create and the lock a sweep may take the (unlocked, ``lk-``) file: it
    deletes it while holding it exclusively, so once this process has its lock a file
    with no name left (``st_nlink == 0``) was swept, and another name is tried.
    """
    for _ in range(attempts):
        path = make_path()
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        except OSError:
            return StagingFile(path, fd)  # no locks on this file system: nothing to race
        if os.fstat(fd).st_nlink > 0:
            return StagingFile(path, fd)
        os.close(fd)
    raise BlobStoreError(f"staging files in {make_path().parent} keep being swept as they are created")


class _CountingFileSource(FileSource):
    """A FileSource that also reports its reads to the owning store."""

    def __init__(self, path: Path, count: Callable[[int], None]) -> None:
        super().__init__(path)
        self._report = count

    def _read_at(self, offset: int, length: int) -> bytes:
        data = super()._read_at(offset, length)
        self._report(len(data))
        return data

    def read_into(self, offset: int, length: int, out: WritableBuffer, what: str = "data") -> None:
        # FileSource reads these (and read_writable's) with preadv, past _read_at: count them
        # here. (Its fallback through _read_at only returns when a short read raises anyway.)
        super().read_into(offset, length, out, what)
        self._report(length)


class FilesystemBlobStore(BlobStore):
    """Blobs as files under ``root/objects``; staging files under ``root/tmp``."""

    OBJECTS = "objects"  # the folder of the blobs, under root
    STAGING = "tmp"  # the folder of staging files, under root (same file system: renames)

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        super().__init__()
        self.root = Path(root).resolve()
        self.objects = self.root / self.OBJECTS
        self.tmp = self.root / self.STAGING
        self.fsync = fsync
        self.objects.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    @property
    def supports_rename(self) -> bool:
        return True

    @property
    def atomic_exclusive(self) -> bool:
        return True  # a hard link fails atomically when the name exists

    def _path(self, key: str) -> Path:
        path = self.objects / validate_key(key)
        # validate_key already forbids "..", this is the belt to those braces.
        if self.objects not in path.parents:
            raise InvalidKeyError(f"blob key {key!r} escapes the store")
        return path

    def local_path(self, key: str) -> Path:
        """The blob's file (``root/objects/<key>``); BlobNotFoundError if absent."""
        path = self._path(key)
        if not path.is_file():
            raise BlobNotFoundError(key)
        return path

    def staging_path(self, suffix: str = ".tmp") -> Path:
        return self.tmp / f"{uuid.uuid4().hex}{suffix}"

    def put_file(self, key: str, path: str | os.PathLike[str], *, move: bool = False, exclusive: bool = False) -> int:
        dest = self._path(key)
        src = Path(path)
        if exclusive and dest.exists():
            raise BlobExistsError(key)  # the cheap early answer; the link below decides
        dest.parent.mkdir(parents=True, exist_ok=True)
        # A unique file in the staging folder (same file system, so the final rename or
        # link is atomic; concurrent puts of one key never share it), held locked while in
        # flight, where a sweep finds it if this process is killed before the commit.
        moved = False
        try:
            with contextlib.ExitStack() as held:
                if move:
                    tmp = self._locked_name(".put")
                    held.enter_context(staging_lock(src))  # the lock goes with the file's rename
                    try:
                        os.replace(src, tmp)
                        moved = True
                    except OSError:
                        moved = False  # another file system: copy instead
                if not moved:
                    tmp = held.enter_context(self.create_staging(".put")).path
                    shutil.copyfile(src, tmp)  # into the locked file (same inode)
                size = tmp.stat().st_size
                # The blob's time is when the store wrote it (modified()), not the incoming
                # file's (a rename or link keeps that): sweeps spare a young blob in flight.
                os.utime(tmp)
                if exclusive:
                    _link_exclusive(tmp, dest, key, fsync=self.fsync)
                else:
                    commit_file(tmp, dest, fsync=self.fsync)
        except BaseException as exc:
            if moved:
                try:
                    os.replace(tmp, src)  # a failed put leaves the caller's file in place
                except OSError:
                    pass
                tmp.unlink(missing_ok=True)
            full = storage_full(exc, f"blob {key!r} in {self.root}")
            if full is not None and full is not exc:
                raise full from exc
            raise
        if move and not moved:
            src.unlink(missing_ok=True)
        return size

    def open(self, key: str) -> ByteSource:
        path = self._path(key)
        if not path.is_file():
            raise BlobNotFoundError(key)
        return _CountingFileSource(path, self.count_read)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise BlobNotFoundError(key) from None

    def modified(self, key: str) -> float:
        try:
            return self._path(key).stat().st_mtime
        except FileNotFoundError:
            raise BlobNotFoundError(key) from None

    def delete(self, key: str) -> bool:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        # Remove now-empty parent folders (never the root itself).
        parent = path.parent
        while parent != self.objects:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent
        return True

    def keys(self, prefix: str = "") -> Iterator[str]:
        found = []
        for dirpath, dirnames, filenames in os.walk(self.objects):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = Path(dirpath).relative_to(self.objects)
            for name in filenames:
                if name.startswith("."):
                    continue  # in-flight temp files
                key = name if str(rel) == "." else f"{rel.as_posix()}/{name}"
                if key.startswith(prefix):
                    found.append(key)
        return iter(sorted(found))

    def __repr__(self) -> str:
        return f"FilesystemBlobStore({str(self.root)!r})"
