"""Instance: one DICOM file opened lazily, frame by frame."""

from __future__ import annotations

import functools
import os
import uuid
import warnings
from collections.abc import Iterable, Iterator
from typing import BinaryIO

import numpy as np
from pydicom.dataset import FileDataset
from pydicom.uid import UID

from ..cache import FrameCache, default_cache
from ..codecs import ENCAPSULATED_UNCOMPRESSED, NATIVE_SYNTAXES, Decoded, decode_native, decoder_for
from ..errors import DcmstreamError, DecodeError, DicomFormatError, SourceError, UnsupportedTransferSyntaxError
from ..index import (
    FrameIndex,
    PixelSpec,
    encapsulated_frame_index,
    native_frame_index,
    parse_header,
    pixel_spec_from_dataset,
    unwrap_items,
)
from ..index.encapsulated import ITEM_TAG, item_header
from ..index.pixel_spec import dataset_value
from ..io.source import ByteSource, as_source
from .levels import check_level, decimate, geometric_max_level, level_for_size, level_shape, representation
from .postprocess import finish_frame
from .render import Renderer, check_size, resize_area, target_shape

__all__ = ["Instance", "open"]

Source = str | os.PathLike[str] | BinaryIO | ByteSource | bytes
#: ``cache=`` argument: a FrameCache, None for the process-wide default, False for none.
CacheArg = FrameCache | None | bool


def file_cache_key(path: str | os.PathLike[str], st: os.stat_result) -> tuple[str, ...]:
    """The cache identity of a local file: its real path, size and modification time."""
    return ("file", os.path.realpath(path), str(st.st_size), str(st.st_mtime_ns))


class Instance:
    """A DICOM instance whose frames are read and decoded one at a time.

    Opening parses the header (everything before the pixel data) and builds the
    :class:`~dcmstream.index.FrameIndex`; :meth:`encoded_frame` then reads exactly
    one frame's bytes and :meth:`frame` decodes them. Use as a context manager, or
    call :meth:`close`.

    Decoded frames go through a :class:`~dcmstream.cache.FrameCache` (the
    process-wide default unless ``cache=`` says otherwise; ``cache=False`` turns
    caching off). Arrays that come from a cache are read-only, because they are
    shared; copy one before changing it.
    """

    def __init__(self, source: Source, *, strict: bool = True, cache: CacheArg = None) -> None:
        self._owns_source = not isinstance(source, ByteSource)
        self.source: ByteSource = as_source(source)
        self.name = self.source.name
        self.cache: FrameCache | None = default_cache() if cache is None or cache is True else (cache or None)
        self._max_level: int | None = None
        self._renderer: Renderer | None = None
        self._view: np.ndarray | None = None
        try:
            self._header = parse_header(self.source)
            self._init_pixels(strict)
        except BaseException:
            self.close()
            raise

    # -- opening -----------------------------------------------------------------
    @functools.cached_property
    def cache_key(self) -> tuple[str, ...]:
        """Identity of the bytes, so reopening the same unchanged file hits the cache.

        Computed on first use (a stat and a realpath): an instance opened with
        ``cache=False`` in a batch over many small files never pays for it.
        """
        path = getattr(self.source, "path", None)
        if path is not None:
            try:
                return file_cache_key(path, os.stat(path))
            except OSError:
                pass
        return ("source", uuid.uuid4().hex)

    def _init_pixels(self, strict: bool) -> None:
        header = self._header
        pixel = header.pixel
        self._spec: PixelSpec | None = None
        self._index: FrameIndex | None = None
        self._decoder = None
        if pixel is None:
            return
        ds = header.dataset
        ts = header.transfer_syntax
        spec = pixel_spec_from_dataset(ds, pixel.keyword, self.name)
        self._be_swap_ow = (
            not header.is_little_endian and spec.bits_allocated == 8 and pixel.vr == "OW" and pixel.keyword == "PixelData"
        )
        if pixel.encapsulated:
            if ts in NATIVE_SYNTAXES:
                raise DicomFormatError(f"{self.name}: pixel data is encapsulated but the transfer syntax {ts} is native")
            if ts != ENCAPSULATED_UNCOMPRESSED:
                # Fail at open, not at the first frame, when nothing can decode it.
                self._decoder = decoder_for(ts)
            eot = None
            if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
                table = dataset_value(ds, "ExtendedOffsetTable", self.name)
                lengths = dataset_value(ds, "ExtendedOffsetTableLengths", self.name)
                # OV values are bytes; anything else is corrupt (and bytes() of a
                # corrupt integer value would allocate that many bytes).
                if isinstance(table, (bytes, bytearray)) and isinstance(lengths, (bytes, bytearray)):
                    eot = (bytes(table), bytes(lengths))
                elif table is not None or lengths is not None:
                    warnings.warn(f"{self.name}: Extended Offset Table is not OV data; ignored", stacklevel=3)
            index = encapsulated_frame_index(
                header.source, pixel.value_offset, spec.number_of_frames, self.name, extended_offsets=eot, strict=strict
            )
        else:
            if ts not in NATIVE_SYNTAXES:
                uid = UID(ts)
                if not uid.is_valid or not uid.is_transfer_syntax:
                    # is_compressed raises ValueError for a UID that is not a transfer syntax.
                    raise DicomFormatError(f"{self.name}: {ts!r} is not a transfer syntax UID")
                if uid.is_compressed:
                    raise DicomFormatError(
                        f"{self.name}: transfer syntax {ts} needs encapsulated pixel data but (7FE0,0010) has a defined length"
                    )
            index = native_frame_index(pixel, spec, header.source.size, self.name, strict=strict)
        if len(index) < spec.number_of_frames:
            warnings.warn(f"{self.name}: {spec.number_of_frames} frames declared, {len(index)} present", stacklevel=3)
        self._spec = spec
        self._index = index

    # -- properties --------------------------------------------------------------
    @property
    def dataset(self) -> FileDataset:
        """The pydicom dataset of everything except the pixel data.

        Opening steps over the Per-Frame Functional Groups Sequence (one item
        per frame, the bulk of an enhanced multiframe header); the first access
        to this property parses it, once.
        """
        return self._header.complete_dataset()

    @property
    def header_dataset(self) -> FileDataset:
        """The dataset as opening parsed it: every top-level element, except that the
        Per-Frame Functional Groups Sequence is missing until something reads
        :attr:`dataset` (cheap, for top-level look-ups)."""
        return self._header.dataset

    def dataset_and_raw_frame_groups(self) -> tuple[FileDataset, bytes | None]:
        """The header for copying without parsing its per-frame functional groups.

        When opening stepped over the Per-Frame Functional Groups Sequence, nothing has
        parsed it since, and the dataset is Explicit VR Little Endian: (the dataset without
        that element, the element's bytes as stored) - a copy can splice the bytes in
        instead of parsing and re-encoding one item per frame. Otherwise
        ``(self.dataset, None)``. The dataset is the instance's own: do not change it.
        """
        header = self._header
        if header.is_little_endian and not header.is_implicit_vr:
            raw = header.deferred_bytes()
            if raw is not None:
                return self.header_dataset, raw
        return self.dataset, None

    @property
    def transfer_syntax(self) -> UID:
        """The transfer syntax UID the pixel data is stored in."""
        return self._header.transfer_syntax

    @property
    def frame_index(self) -> FrameIndex:
        """Where each frame is; raises DicomFormatError for an instance without pixels."""
        if self._index is None:
            raise DicomFormatError(f"{self.name}: the dataset has no pixel data")
        return self._index

    @property
    def pixel_spec(self) -> PixelSpec:
        """Rows, columns, samples, bits and photometric interpretation, validated."""
        if self._spec is None:
            raise DicomFormatError(f"{self.name}: the dataset has no pixel data")
        return self._spec

    @property
    def has_pixels(self) -> bool:
        return self._index is not None

    @property
    def pixel_element(self):  # noqa: ANN201 - PixelElement, kept out of the public imports
        """Position of the pixel data element (for byte-range servers)."""
        return self._header.pixel

    def __len__(self) -> int:
        return 0 if self._index is None else len(self._index)

    # -- frames ------------------------------------------------------------------
    def _check_index(self, i: int) -> int:
        if self.source.closed:
            raise SourceError(f"{self.name}: the instance is closed")
        n = len(self)
        if n == 0:
            raise DicomFormatError(f"{self.name}: the dataset has no pixel data")
        if not isinstance(i, (int, np.integer)):
            raise TypeError(f"frame index must be an integer, not {type(i).__name__}")
        j = int(i) + n if i < 0 else int(i)
        if not 0 <= j < n:
            raise IndexError(f"{self.name}: frame {i} out of range (0..{n - 1})")
        return j

    def _native_bytes(self, i: int) -> bytes:
        offset, length = self.frame_index.span(i)
        src = self._header.source
        if not self._be_swap_ow:
            return src.read_exact(offset, length, f"frame {i}")
        # 8-bit big endian data stored as OW: bytes are swapped in pairs, so read
        # the enclosing aligned pairs and swap them back.
        base = self._header.pixel.value_offset
        rel = offset - base
        start = base + rel - rel % 2
        end = offset + length
        end += (end - base) % 2
        raw = src.read_exact(start, end - start, f"frame {i}")
        swapped = np.frombuffer(raw, ">u2").astype("<u2").tobytes()
        return swapped[rel % 2 : rel % 2 + length]

    def encoded_frame(self, i: int) -> bytes:
        """The stored bytes of frame ``i`` (0-based), reading nothing else.

        For encapsulated syntaxes this is the codestream (fragments joined); for
        native syntaxes it is the frame's raw pixel bytes as stored.
        """
        j = self._check_index(i)
        index = self.frame_index
        if index.kind == "native":
            return self._native_bytes(j)
        offset, length = index.span(j)
        src = self._header.source
        if index.wrapped and length > 8:
            # Usually one fragment per frame: read its item header, then exactly its value
            # (no copy out of a larger read). Anything else is read whole and unwrapped.
            tag, item_length = item_header(src, offset, self.name)
            if tag == ITEM_TAG and item_length == length - 8:
                return src.read_exact(offset + 8, item_length, f"frame {j}")
        data = src.read_exact(offset, length, f"frame {j}")
        return unwrap_items(data, self.name, j) if index.wrapped else data

    def decode(self, data: bytes, i: int = 0, level: int = 0) -> np.ndarray:
        """Decode ``data`` (the encoded bytes of frame ``i``) into the final array.

        ``level`` k > 0 gives the frame at ``ceil(rows / 2**k) x ceil(columns / 2**k)``:
        JPEG 2000 and HTJ2K decode only those resolution levels, everything
        else is decoded in full and decimated (see :mod:`dcmstream.image.levels`).
        """
        if level < 0:
            raise ValueError(f"level must be >= 0, got {level}")
        spec = self.pixel_spec
        ts = self.transfer_syntax
        reduced = bool(level) and self._decoder is not None and self._decoder.reduces
        try:
            if self.frame_index.kind == "native":
                bit_offsets = self.frame_index.bit_offsets
                decoded = decode_native(
                    data, spec, self._header.is_little_endian or self._be_swap_ow, 0 if bit_offsets is None else int(bit_offsets[i])
                )
            elif self._decoder is None:  # encapsulated uncompressed
                decoded = decode_native(data, spec, True)
            else:
                decoded = self._decoder.decode(data, spec, level if reduced else 0)
        except (DicomFormatError, UnsupportedTransferSyntaxError, SourceError):
            raise
        except Exception as exc:  # noqa: BLE001 - codecs raise their own error types
            raise DecodeError(f"{self.name}: frame {i} could not be decoded ({type(exc).__name__}: {exc})") from exc
        self._check_shape(decoded, i, level if reduced else 0)
        arr = finish_frame(decoded, spec, ts)
        return arr if reduced else decimate(arr, level)

    def _check_shape(self, decoded: Decoded, i: int, level: int) -> None:
        spec = self.pixel_spec
        arr = decoded.array
        expected = level_shape(spec.shape, level)
        if arr.shape != expected:
            # A codestream whose size disagrees with Rows/Columns is a format error,
            # not something to reshape silently.
            raise DecodeError(f"{self.name}: frame {i} decodes to shape {arr.shape}, the header says {expected}")

    def frame(self, i: int, level: int = 0) -> np.ndarray:
        """Frame ``i`` (0-based) as an array, identical to pydicom's ``pixel_array(ds)[i]``.

        ``level`` k > 0 gives a reduced resolution, ``ceil(rows / 2**k) x
        ceil(columns / 2**k)``: JPEG 2000 and HTJ2K decode only the coarser
        wavelet levels; other syntaxes are decimated (every 2**k-th pixel). A
        level beyond :attr:`max_level` gives level :attr:`max_level`; a negative
        one raises ValueError. Each level is cached on its own (``"level{k}"``).
        """
        j = self._check_index(i)
        k = self._level(level)
        if self.cache is None:
            return self._load_level(j, k)
        return self.cache.get_or_load((self.cache_key, j, representation(k)), lambda: self._load_level(j, k))

    def prefetch(self, i: int, level: int = 0) -> None:
        """Decode frame ``i`` into the cache, marked as a prefetch (no-op without cache).

        Prefetch policies and decode pools call this; an entry that is evicted
        before anyone asks for it counts as ``prefetch_wasted`` in the stats.
        """
        j = self._check_index(i)
        k = self._level(level)
        if self.cache is not None:
            self.cache.get_or_load((self.cache_key, j, representation(k)), lambda: self._load_level(j, k), prefetch=True)

    def is_cached(self, i: int, level: int = 0) -> bool:
        """Whether frame ``i`` (at ``level``) is decoded in the cache now (no side effects)."""
        if self.cache is None:
            return False
        k = self._level(level)
        return self.cache.peek((self.cache_key, int(i) % max(len(self), 1), representation(k)))

    def _load_frame(self, j: int, level: int = 0) -> np.ndarray:
        if self.frame_index.kind == "native" and not self._be_swap_ow:
            # Read into a writable buffer: the decoded array is a view of it, not a copy.
            offset, length = self.frame_index.span(j)
            return self.decode(self._header.source.read_writable(offset, length, f"frame {j}"), j, level)
        return self.decode(self._cached_encoded_frame(j), j, level)

    def _load_level(self, j: int, k: int) -> np.ndarray:
        if k and not (self._decoder is not None and self._decoder.reduces) and self.cache is not None:
            # Decimation: reuse the full frame when it is cached anyway. When it is
            # not, decode without caching it, so thumbnails do not flush the cache.
            full = self.cache.get((self.cache_key, j, "full")) if self.cache.peek((self.cache_key, j, "full")) else None
            if full is not None:
                return decimate(full, k)
        return self._load_frame(j, k)

    # -- resolution levels -------------------------------------------------------
    @property
    def max_level(self) -> int:
        """The coarsest ``level`` :meth:`frame` offers.

        JPEG 2000 / HTJ2K: the decomposition levels of the first frame's
        codestream (typically 5: 512 px down to 16 px); other syntaxes: the level
        at which the longest side is one pixel.
        """
        if self._max_level is None:
            spec = self.pixel_spec
            top = geometric_max_level(spec.rows, spec.columns)
            dec = self._decoder
            if dec is not None and dec.reduces and dec.max_level is not None and len(self):
                try:
                    top = min(top, dec.max_level(self._cached_encoded_frame(0)))
                except DcmstreamError:
                    pass  # an unreadable first frame: its decode error surfaces per frame
            self._max_level = top
        return self._max_level

    def _level(self, level: int | None) -> int:
        """Validate and clamp a requested level (level 0 never touches the codestream)."""
        if level is None:
            return 0
        if isinstance(level, (int, np.integer)) and not isinstance(level, bool) and level == 0:
            return 0
        check_level(level, 0)  # type and sign first
        return check_level(level, self.max_level)

    # -- display -----------------------------------------------------------------
    @property
    def renderer(self) -> Renderer:
        """The :class:`~dcmstream.image.render.Renderer` of this instance's dataset."""
        if self._renderer is None:
            self._renderer = Renderer(self.dataset)
        return self._renderer

    def render(
        self, i: int, window: tuple[float, float] | None = None, size: int | None = None, level: int | None = None
    ) -> np.ndarray:
        """Frame ``i`` as uint8 for display: modality LUT, VOI (window or LUT), MONOCHROME1 inverted.

        ``window`` (center, width) overrides the file's window. ``size`` is the
        longest side of the result in pixels (aspect kept): the frame is decoded
        at the coarsest level that still has at least ``size`` pixels, then
        area-averaged to ``size``. ``level`` forces a resolution level. Grey
        frames give (rows, columns), colour (rows, columns, 3). See
        :mod:`dcmstream.image.render` for the rules.
        """
        j = self._check_index(i)
        spec = self.pixel_spec
        if size is not None:
            size = check_size(size)
        if level is None:
            level = 0 if size is None else level_for_size(spec.rows, spec.columns, size, self.max_level)
        out = self.renderer.render(self.frame(j, level=level), j, window)
        if size is not None:
            out = resize_area(out, *target_shape(spec.rows, spec.columns, size))
        return out

    def thumbnail(self, i: int, size: int = 128) -> np.ndarray:
        """:meth:`render` with the file's window at ``size`` pixels on the longest side.

        Cached (``"thumb{size}"``) when the instance has a cache; cached arrays
        are read-only.
        """
        j = self._check_index(i)
        size = check_size(size)
        if self.cache is None:
            return self.render(j, size=size)
        return self.cache.get_or_load((self.cache_key, j, f"thumb{size}"), lambda: self.render(j, size=size), timed=False)

    # -- arrays ------------------------------------------------------------------
    def to_dask(self, level: int = 0):  # noqa: ANN201 - dask.array.Array, an optional dependency
        """A lazy dask array of all frames, one chunk per frame: (frames, rows, columns[, samples]).

        Nothing is read until it is computed. In this process the chunks read
        through this instance (and its cache); pickled to another process (dask
        distributed, the processes scheduler) they reopen the file by path,
        keeping a few instances open per process. Needs ``pip install dcmstream[dask]``.
        """
        from .arrays import instance_to_dask

        return instance_to_dask(self, self._level(level))

    def frame_view(self, i: int) -> np.ndarray:
        """Frame ``i`` as a read-only view of the file (``numpy.memmap``), without copying.

        Only where the stored bytes already are the array :meth:`frame` returns:
        a local file, native little-endian pixel data (not deflated), 8/16/32/64
        bits with Bits Stored == Bits Allocated (no bits to mask), MONOCHROME1/2,
        RGB or PALETTE COLOR with Planar Configuration 0, float pixel data, and a
        frame offset aligned to the sample size. Anything else falls back to
        :meth:`frame` (a decoded, possibly cached, array); :attr:`can_view` tells
        which one you get.
        """
        j = self._check_index(i)
        if not self.can_view:
            return self.frame(j)
        from .views import frame_view

        if self._view is None:
            self._view = frame_view(self)
        return self._view[j]

    @property
    def can_view(self) -> bool:
        """Whether :meth:`frame_view` maps the file instead of copying."""
        from .views import can_view

        return self.has_pixels and can_view(self)

    def _cached_encoded_frame(self, j: int) -> bytes:
        # Native frames are as large decoded as encoded: keeping both would spend
        # the budget twice, so only compressed frames use the encoded tier.
        if self.cache is None or self.frame_index.kind == "native":
            return self.encoded_frame(j)
        return self.cache.get_or_load((self.cache_key, j, "encoded"), lambda: self.encoded_frame(j), "encoded")

    def frames(self, indices: Iterable[int] | None = None, level: int = 0) -> Iterator[np.ndarray]:
        """Yield frames lazily, one read and one decode at a time."""
        for i in range(len(self)) if indices is None else indices:
            yield self.frame(i, level=level)

    # -- lifetime ----------------------------------------------------------------
    def close(self) -> None:
        """Close the source (when this Instance opened it) and any temporary copy."""
        self._view = None  # views already handed out keep their own mapping
        header = getattr(self, "_header", None)
        if header is not None:
            for owned in header.owned_sources:
                owned.close()
        if self._owns_source:
            self.source.close()

    def purge(self) -> int:
        """Drop this instance's frames from its cache; returns how many entries went."""
        return 0 if self.cache is None else self.cache.purge(self.cache_key)

    def __enter__(self) -> "Instance":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._spec is None:
            return f"<Instance {self.name!r} ts={self.transfer_syntax} (no pixel data)>"
        s = self._spec
        return (
            f"<Instance {self.name!r} ts={self.transfer_syntax.name} frames={len(self)} "
            f"{s.rows}x{s.columns}x{s.samples_per_pixel} {s.bits_stored}/{s.bits_allocated} bits "
            f"{s.photometric_interpretation} index={self.frame_index.kind.value}>"
        )


def open(source: Source, *, strict: bool = True, cache: CacheArg = None) -> Instance:  # noqa: A001 - mirrors builtins.open on purpose
    """Open a DICOM file lazily: read its header and build its frame index.

    ``source`` is a path, bytes, a seekable binary file object or a
    :class:`~dcmstream.io.ByteSource`. With ``strict=False`` a file with fewer
    frames than it declares opens with the frames that are present. ``cache``
    is a :class:`~dcmstream.cache.FrameCache`, None for the process-wide default
    (``dcmstream.cache.default_cache()``) or False for no caching.
    """
    return Instance(source, strict=strict, cache=cache)
