"""FrameReader: read one frame's stored bytes and decode them, the one way dcmstream does.

Three callers read frames: :class:`~dcmstream.Instance` (a parsed file), the archive's
``StoredInstance`` (a blob described by its catalog record, whose header is never parsed
again) and the transcoder (which decodes the codestreams it writes as dcmstream will read
them). They all go through this class, so the single-fragment fast path, the big-endian OW
swap, typed decode errors, the shape check, pydicom-compatible finishing, decimation and
the cache keys exist once.

A reader holds no parsed header: a :class:`~dcmstream.index.FrameIndex`, a
:class:`~dcmstream.index.PixelSpec`, the transfer syntax and two byte-order flags are all
it needs, and all of them fit in a catalog record.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

from ..cache import FrameCache
from ..codecs import ENCAPSULATED_UNCOMPRESSED, NATIVE_SYNTAXES, Decoded, FrameDecoder, decode_native, decoder_for
from ..errors import (
    DcmstreamError,
    DecodeError,
    DicomFormatError,
    InvalidArgumentError,
    SourceError,
    UnsupportedTransferSyntaxError,
)
from ..index import FrameIndex, PixelSpec, unwrap_items
from ..index.encapsulated import ITEM_TAG, item_header
from ..io.source import ByteSource
from .levels import decimate, geometric_max_level, level_shape, representation
from .postprocess import finish_frame

__all__ = ["FrameReader", "codestream_reader", "file_cache_key", "frame_decoder", "source_cache_key"]

#: Cache identity of the bytes a reader reads (see :func:`source_cache_key`).
CacheKey = tuple[Hashable, ...]

_UNSET: Any = object()


def file_cache_key(path: str | os.PathLike[str], st: os.stat_result) -> tuple[str, ...]:
    """The cache identity of a local file: its real path, size and modification time."""
    return ("file", os.path.realpath(path), str(st.st_size), str(st.st_mtime_ns))


def source_cache_key(source: ByteSource) -> tuple[str, ...]:
    """The cache identity of ``source``: its file's identity, or a fresh one for anything else
    (bytes and file objects have no identity that survives reopening)."""
    identity = getattr(source, "cache_identity", None)
    if identity is not None:  # a remote object: its URL and version (ETag)
        return tuple(identity)
    path = getattr(source, "path", None)
    if path is not None:
        try:
            return file_cache_key(path, os.stat(path))
        except OSError:
            pass
    return ("source", uuid.uuid4().hex)


def frame_decoder(transfer_syntax: str, native: bool) -> FrameDecoder | None:
    """The codec for frames stored in ``transfer_syntax``; None when the frames are
    uncompressed (native, or encapsulated uncompressed). Raises
    UnsupportedTransferSyntaxError when nothing can decode them."""
    if native or transfer_syntax == ENCAPSULATED_UNCOMPRESSED:
        return None
    return decoder_for(transfer_syntax)


class FrameReader:
    """Reads and decodes the frames of one instance.

    ``index`` says where each frame's bytes are (None for a reader that only decodes,
    see :func:`codestream_reader`). Bytes come from ``source``; a reader without one opens
    ``open_source()`` for each call and closes it again (archived blobs: no file stays
    open between requests), and every reading method also takes a ``source`` for the call.

    ``little_endian`` is the byte order of native pixel data; ``be_swap_ow`` marks 8-bit
    big-endian pixel data stored as OW, whose bytes are swapped in pairs (it needs
    ``value_offset``, where the pixel value starts, to find the pairs). ``cache`` (None:
    none) holds decoded frames under ``(cache_key, i, "full" | "level{k}")`` and compressed
    frames' codestreams under ``(cache_key, i, "encoded")``; ``cache_key`` may be a callable,
    computed on first use (a stat and a realpath that a batch without cache never pays).

    Frame numbers are 0-based and not checked here: callers check them against ``len``
    with their own messages (0-based for files, 1-based for DICOMweb).
    """

    def __init__(
        self,
        spec: PixelSpec,
        transfer_syntax: str,
        *,
        index: FrameIndex | None = None,
        source: ByteSource | None = None,
        open_source: Callable[[], ByteSource] | None = None,
        name: str = "<frames>",
        little_endian: bool = True,
        be_swap_ow: bool = False,
        value_offset: int = 0,
        decoder: FrameDecoder | None = _UNSET,
        cache: FrameCache | None = None,
        cache_key: CacheKey | Callable[[], CacheKey] | None = None,
    ) -> None:
        self.spec = spec
        self.transfer_syntax = transfer_syntax
        self.index = index
        self.source = source
        self.open_source = open_source
        self.name = name
        self.little_endian = bool(little_endian)
        self.be_swap_ow = bool(be_swap_ow)
        self.value_offset = int(value_offset)
        self.native = index.kind == "native" if index is not None else transfer_syntax in NATIVE_SYNTAXES
        # Resolved now, so a file nothing can decode fails when it is opened, not at its first frame.
        self.decoder = frame_decoder(transfer_syntax, self.native) if decoder is _UNSET else decoder
        self.cache = cache
        self._cache_key = cache_key
        self._max_level: int | None = None

    def __len__(self) -> int:
        return 0 if self.index is None else len(self.index)

    # -- identity ------------------------------------------------------------------------
    @functools.cached_property
    def cache_key(self) -> CacheKey:
        """Identity of the bytes, the first part of every cache key of this reader."""
        key = self._cache_key
        if callable(key):
            return key()
        if key is None:
            return ("source", uuid.uuid4().hex) if self.source is None else source_cache_key(self.source)
        return key

    def frame_key(self, i: int, level: int = 0) -> tuple[Hashable, ...]:
        """Cache key of decoded frame ``i`` at ``level``."""
        return (self.cache_key, i, representation(level))

    def encoded_key(self, i: int) -> tuple[Hashable, ...]:
        """Cache key of the stored bytes of frame ``i`` (the encoded tier)."""
        return (self.cache_key, i, "encoded")

    @property
    def reduces(self) -> bool:
        """Whether the codec decodes reduced resolutions itself (JPEG 2000, HTJ2K)."""
        return self.decoder is not None and self.decoder.reduces

    # -- reading -------------------------------------------------------------------------
    def _acquire(self, source: ByteSource | None) -> tuple[ByteSource, bool]:
        if source is not None:
            return source, False
        if self.source is not None:
            return self.source, False
        if self.open_source is None:
            raise SourceError(f"{self.name}: the frame reader has no byte source")
        return self.open_source(), True

    def _index(self) -> FrameIndex:
        if self.index is None:
            raise DicomFormatError(f"{self.name}: no frame index to read frames with")
        return self.index

    def encoded_frame(self, i: int, source: ByteSource | None = None) -> bytes:
        """The stored bytes of frame ``i``, reading nothing else.

        For encapsulated syntaxes this is the codestream (fragments joined); for native
        syntaxes the frame's pixel bytes as stored (8-bit OW big endian: swapped back).
        """
        index = self._index()
        src, own = self._acquire(source)
        try:
            if self.native:
                return self._native_bytes(src, i)
            offset, length = index.span(i)
            if index.wrapped and length > 8 and not src.remote:
                # Usually one fragment per frame: read its item header, then exactly its value
                # (no copy out of a larger read). Anything else - and every frame of a remote
                # source, where a second read is a second round trip - is read whole and unwrapped.
                tag, item_length = item_header(src, offset, self.name)
                if tag == ITEM_TAG and item_length == length - 8:
                    return src.read_exact(offset + 8, item_length, f"frame {i}")
            data = src.read_exact(offset, length, f"frame {i}")
            return unwrap_items(data, self.name, i) if index.wrapped else data
        finally:
            if own:
                src.close()

    def _native_bytes(self, src: ByteSource, i: int) -> bytes:
        offset, length = self._index().span(i)
        if not self.be_swap_ow:
            return src.read_exact(offset, length, f"frame {i}")
        # 8-bit big endian data stored as OW: bytes are swapped in pairs, so read
        # the enclosing aligned pairs and swap them back.
        base = self.value_offset
        rel = offset - base
        start = base + rel - rel % 2
        end = offset + length
        end += (end - base) % 2
        raw = src.read_exact(start, end - start, f"frame {i}")
        swapped = np.frombuffer(raw, ">u2").astype("<u2").tobytes()
        return swapped[rel % 2 : rel % 2 + length]

    def cached_encoded_frame(self, i: int, source: ByteSource | None = None) -> bytes:
        """:meth:`encoded_frame` through the cache's encoded tier.

        Native frames are as large decoded as encoded: keeping both would spend the budget
        twice, so only compressed frames use the encoded tier.
        """
        if self.cache is None or self.native:
            return self.encoded_frame(i, source)
        return self.cache.get_or_load(self.encoded_key(i), lambda: self.encoded_frame(i, source), "encoded")

    # -- decoding ------------------------------------------------------------------------
    def _decoded(self, data: bytes | bytearray | np.ndarray, i: int, level: int, out: np.ndarray | None = None) -> Decoded:
        """The codec's output for frame ``i``, into ``out`` where the codec can; errors typed
        and shape checked."""
        spec = self.spec
        try:
            if self.native:
                bit_offsets = None if self.index is None else self.index.bit_offsets
                decoded = decode_native(
                    data,
                    spec,
                    self.little_endian or self.be_swap_ow,
                    0 if bit_offsets is None else int(bit_offsets[i]),
                    out=out,
                )
            elif self.decoder is None:  # encapsulated uncompressed
                decoded = decode_native(data, spec, True, out=out)
            else:
                codestream = data.tobytes() if isinstance(data, np.ndarray) else data
                decoded = self.decoder.decode_frame(codestream, spec, level, out=out)
        except (DicomFormatError, UnsupportedTransferSyntaxError, SourceError):
            raise
        except Exception as exc:  # noqa: BLE001 - codecs raise their own error types
            raise DecodeError(f"{self.name}: frame {i} could not be decoded ({type(exc).__name__}: {exc})") from exc
        expected = level_shape(spec.shape, level)
        if decoded.array.shape != expected:
            # A codestream whose size disagrees with Rows/Columns is a format error,
            # not something to reshape silently.
            raise DecodeError(f"{self.name}: frame {i} decodes to shape {decoded.array.shape}, the header says {expected}")
        return decoded

    def decode(
        self, data: bytes | bytearray | np.ndarray, i: int = 0, level: int = 0, *, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Decode ``data`` (the encoded bytes of frame ``i``; native frames also as a uint8
        array, decoded in place) into the final array.

        The array is what pydicom's ``pixel_array`` gives (see :func:`finish_frame`).
        ``level`` k > 0 gives ``ceil(rows / 2**k) x ceil(columns / 2**k)``: JPEG 2000 and
        HTJ2K decode only those resolution levels, everything else is decoded in full and
        decimated.

        ``out`` (an array of the decoded frame's shape at that level, of ``spec.dtype`` or an
        integer type of its width): decode into it where the codec can, so the result is
        ``out`` or a view of it; otherwise (a codec without ``out=``, a colour conversion)
        a new array and ``out`` is left unused. The cache's recycled frame buffers come in
        this way (:meth:`frame`); without ``out`` the array is the caller's own memory.
        """
        if level < 0:
            raise InvalidArgumentError(f"level must be >= 0, got {level}")
        reduced = bool(level) and self.reduces
        if level and not reduced:
            out = None  # the full frame is decoded, then decimated into a new array
        arr = finish_frame(self._decoded(data, i, level if reduced else 0, out), self.spec, self.transfer_syntax)
        return arr if reduced else decimate(arr, level)

    def decode_stored(self, data: bytes | bytearray, i: int = 0) -> np.ndarray:
        """Decode frame ``i`` to its samples as stored: no YCbCr to RGB conversion, no
        masking or sign correction (the transcoder keeps native YBR_FULL samples exactly).
        The array may be a read-only view of ``data``."""
        return self._decoded(data, i, 0).array

    # -- cache-aware loading -------------------------------------------------------------
    def frame(self, i: int, level: int = 0, source: ByteSource | None = None, *, prefetch: bool = False) -> np.ndarray:
        """Frame ``i`` decoded at ``level`` (already validated), through the cache if any.

        ``prefetch`` marks the cache entry as a prefetch (counted as wasted if evicted unused).
        Full-resolution frames that go into the cache are decoded into its recycled frame
        buffers (:meth:`FrameCache.decode_pooled`); everything else into fresh memory.
        """
        if self.cache is None:
            return self._load_level(i, level, source)
        return self.cache.get_or_load(self.frame_key(i, level), lambda: self._load_level(i, level, source), prefetch=prefetch)

    def is_cached(self, i: int, level: int = 0) -> bool:
        """Whether frame ``i`` at ``level`` is decoded in the cache now (no side effects)."""
        return self.cache is not None and self.cache.peek(self.frame_key(i, level))

    def _load_level(self, i: int, level: int, source: ByteSource | None) -> np.ndarray:
        if level and not self.reduces and self.cache is not None:
            # Decimation: reuse the full frame when it is cached anyway. When it is
            # not, decode without caching it, so thumbnails do not flush the cache.
            key = self.frame_key(i, 0)
            full = self.cache.get(key) if self.cache.peek(key) else None
            if full is not None:
                return decimate(full, level)
        return self._load_frame(i, level, source)

    def _load_frame(self, i: int, level: int, source: ByteSource | None) -> np.ndarray:
        if level or self.cache is None:
            # Into fresh memory: a caller without cache owns its frame, and a reduced level
            # is decimated into a new array (a pooled buffer would outlive its decode).
            return self._read_decode(i, level, source, None)
        # A full frame for the cache: into one of its recycled buffers, which goes back to
        # the pool by itself once the cache has evicted the frame and no caller holds it.
        spec = self.spec
        return self.cache.decode_pooled(spec.shape, spec.dtype, lambda out: self._read_decode(i, 0, source, out))

    def _read_decode(self, i: int, level: int, source: ByteSource | None, out: np.ndarray | None) -> np.ndarray:
        """Read frame ``i`` and decode it at ``level``, into ``out`` where the codec can.

        Native frames (not OW-swapped) are read into writable memory and decoded there:
        straight into ``out`` when it has exactly the frame's stored size (no copy after
        the read), otherwise into a new buffer that the frame is a view of (without
        ``out``) or is copied from (expanding YBR_FULL_422 and 1-bit frames into ``out``).
        """
        if not self.native or self.be_swap_ow:
            return self.decode(self.cached_encoded_frame(i, source), i, level, out=out)
        offset, length = self._index().span(i)
        src, own = self._acquire(source)
        try:
            data: bytearray | np.ndarray
            if out is not None and self.spec.bits_allocated > 1 and out.flags.c_contiguous and out.nbytes == length:
                data = out.reshape(-1).view(np.uint8)
                src.read_into(offset, length, data, f"frame {i}")
            else:
                data = src.read_writable(offset, length, f"frame {i}")
        finally:
            if own:
                src.close()
        return self.decode(data, i, level, out=out)

    # -- resolution levels ---------------------------------------------------------------
    @property
    def max_level(self) -> int:
        """The coarsest level frames offer: the decomposition levels of the first frame's
        codestream for codecs that reduce (JPEG 2000, HTJ2K), otherwise the level at which
        the longest side is one pixel."""
        if self._max_level is None:
            spec = self.spec
            top = geometric_max_level(spec.rows, spec.columns)
            dec = self.decoder
            if dec is not None and dec.reduces and dec.max_level is not None and len(self):
                try:
                    top = min(top, dec.max_level(self.cached_encoded_frame(0)))
                except DcmstreamError:
                    pass  # an unreadable first frame: its decode error surfaces per frame
            self._max_level = top
        return self._max_level

    def __repr__(self) -> str:
        return f"<FrameReader {self.name!r} ts={self.transfer_syntax} frames={len(self)} index={self.index!r}>"


@functools.lru_cache(maxsize=64)
def codestream_reader(transfer_syntax: str, spec: PixelSpec) -> FrameReader:
    """A reader that only decodes: frames of ``spec`` encoded in ``transfer_syntax``, as
    dcmstream decodes them when it reads a file (the transcoder checks what it writes with it).
    Readers are kept per (syntax, spec): building one looks the codec up."""
    return FrameReader(spec, transfer_syntax, name=f"<{transfer_syntax} codestream>")
