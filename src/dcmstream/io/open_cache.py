"""What opening a remote object read, kept on disk so the next open costs one request.

Opening a remote DICOM object reads its header and offset table: a few ranges, a few
round trips. Those bytes do not change while the object does not, so
:class:`OpenCache` keeps them ("the open footprint": the merged ranges the open asked
for, usually the first tens of KiB plus the last item header) per URL together with the
object's version (size, ETag, Last-Modified). The next open of the URL validates the
version with one HEAD request and replays the open from the kept bytes: the header
parse and the frame index come out exactly as before, because they run on the same bytes,
and nothing of DICOM needs to live in this layer.

* **Validated, never trusted blindly**: an entry is used only when its size and ETag (or
  Last-Modified when the server sends no ETag) equal what the HEAD reports now, its URL
  is the one asked for, and its payload's SHA-256 matches. A corrupt, truncated or stale
  entry is ignored (and removed); the open then reads from the object and writes it anew.
* **Small and bounded**: entries larger than ``max_entry`` are not kept; when the folder
  grows past ``max_bytes`` the least recently used entries (file modification time,
  touched on every hit) are removed.
* **Atomic**: entries are written with :func:`~dcmstream.io.atomic.atomic_write`, so a
  reader never sees half an entry, and concurrent writers of one URL leave one whole one.

The folder is ``$DCMSTREAM_INDEX_CACHE``, else ``$XDG_CACHE_HOME/dcmstream/index``, else
``~/.cache/dcmstream/index``.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from .atomic import atomic_write
from .ranged import Segments

__all__ = ["OpenCache", "OpenRecord", "default_cache_dir"]

_MAGIC = b"DCMSOPEN1\n"
_LEN = struct.Struct("<I")


def default_cache_dir() -> Path:
    """Where the open cache lives unless told (see the module)."""
    env = os.environ.get("DCMSTREAM_INDEX_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dcmstream" / "index"


@dataclass(frozen=True)
class OpenRecord:
    """The version of a remote object an entry belongs to."""

    size: int
    etag: str | None
    last_modified: str | None

    def matches(self, other: "OpenRecord") -> bool:
        """Same object version: same size and ETag; without ETags, same Last-Modified."""
        if self.size != other.size:
            return False
        if self.etag or other.etag:
            return self.etag == other.etag
        return self.last_modified is not None and self.last_modified == other.last_modified


class OpenCache:
    """Open footprints of remote objects in ``folder`` (see the module)."""

    def __init__(self, folder: str | os.PathLike[str] | None = None, *, max_bytes: int = 64 << 20,
                 max_entry: int = 4 << 20) -> None:
        self.folder = Path(folder) if folder is not None else default_cache_dir()
        self.max_bytes = max_bytes
        self.max_entry = max_entry

    def _path(self, url: str) -> Path:
        return self.folder / (hashlib.sha256(url.encode("utf-8")).hexdigest()[:40] + ".open")

    def has(self, url: str) -> bool:
        """Whether an entry for ``url`` exists (not yet validated)."""
        return self._path(url).is_file()

    def get(self, url: str, version: OpenRecord) -> Segments | None:
        """The kept footprint of ``url`` at ``version``; None when absent, stale or corrupt."""
        path = self._path(url)
        try:
            blob = path.read_bytes()
        except OSError:
            return None
        segments = self._decode(blob, url, version)
        if segments is None:
            self._remove(path)
            return None
        try:
            os.utime(path)  # recently used: evicted last
        except OSError:
            pass
        return segments

    def put(self, url: str, version: OpenRecord, segments: Segments) -> None:
        """Keep ``segments`` for ``url`` at ``version`` (quietly skipped when too large or
        the folder cannot be written: the cache only saves requests)."""
        total = sum(len(data) for _, data in segments)
        if not segments or total > self.max_entry:
            return
        payload = b"".join(data for _, data in segments)
        head = json.dumps({
            "url": url,
            "size": version.size,
            "etag": version.etag,
            "last_modified": version.last_modified,
            "segments": [[offset, len(data)] for offset, data in segments],
            "sha256": hashlib.sha256(payload).hexdigest(),
        }).encode("utf-8")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write(self._path(url), _MAGIC + _LEN.pack(len(head)) + head + payload, fsync=False)
        except OSError:
            return
        self._evict()

    # -- internals ---------------------------------------------------------------------
    @staticmethod
    def _decode(blob: bytes, url: str, version: OpenRecord) -> Segments | None:
        if not blob.startswith(_MAGIC) or len(blob) < len(_MAGIC) + _LEN.size:
            return None
        (head_len,) = _LEN.unpack_from(blob, len(_MAGIC))
        start = len(_MAGIC) + _LEN.size
        try:
            head = json.loads(blob[start : start + head_len])
            kept = OpenRecord(int(head["size"]), head["etag"], head["last_modified"])
            spans = [(int(offset), int(length)) for offset, length in head["segments"]]
            digest = str(head["sha256"])
            if head["url"] != url:
                return None
        except (ValueError, KeyError, TypeError):
            return None
        payload = blob[start + head_len :]
        if not kept.matches(version) or hashlib.sha256(payload).hexdigest() != digest:
            return None
        if sum(length for _, length in spans) != len(payload):
            return None
        segments: Segments = []
        pos = 0
        for offset, length in spans:
            if offset < 0 or length <= 0 or offset + length > version.size:
                return None
            segments.append((offset, payload[pos : pos + length]))
            pos += length
        return segments

    @staticmethod
    def _remove(path: Path) -> None:
        try:
            path.unlink()
        except OSError:
            pass

    def _evict(self) -> None:
        """Remove the least recently used entries until the folder fits ``max_bytes``."""
        entries = []
        try:
            for entry in os.scandir(self.folder):
                if entry.name.endswith(".open"):
                    st = entry.stat()
                    entries.append((st.st_mtime, st.st_size, entry.path))
        except OSError:
            return
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            self._remove(Path(path))
            total -= size
