"""Instance: one DICOM file opened lazily, frame by frame."""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Iterable, Iterator
from typing import BinaryIO

import numpy as np
from pydicom.dataset import FileDataset
from pydicom.uid import UID

from ..cache import FrameCache, default_cache
from ..codecs import NATIVE_SYNTAXES
from ..errors import DicomFormatError, FrameNumberError, InvalidArgumentTypeError, SourceError
from ..index import (
    FrameIndex,
    PixelElement,
    PixelSpec,
    encapsulated_frame_index,
    extended_offset_table,
    native_frame_index,
    parse_header,
    pixel_spec_from_dataset,
)
from ..io.remote import is_url, open_url
from ..io.source import ByteSource, as_source
from .frame_reader import FrameReader, file_cache_key, frame_decoder, source_cache_key
from .levels import check_level, level_for_size
from .render import Renderer, check_size, resize_area, target_shape

__all__ = ["Instance", "open", "file_cache_key"]

Source = str | os.PathLike[str] | BinaryIO | ByteSource | bytes
#: ``cache=`` argument: a FrameCache, None for the process-wide default, False for none.
CacheArg = FrameCache | None | bool


class Instance:
    """A DICOM instance whose frames are read and decoded one at a time.

    Opening parses the header (everything before the pixel data) and builds the
    :class:`~dcmstream.index.FrameIndex`; :meth:`encoded_frame` then reads exactly
    one frame's bytes and :meth:`frame` decodes them, both through the instance's
    :attr:`reader` (a :class:`~dcmstream.image.frame_reader.FrameReader`). Use as a
    context manager, or call :meth:`close`.

    Decoded frames go through a :class:`~dcmstream.cache.FrameCache` (the
    process-wide default unless ``cache=`` says otherwise; ``cache=False`` turns
    caching off). Arrays that come from a cache are read-only, because they are
    shared; copy one before changing it.
    """

    def __init__(self, source: Source, *, strict: bool = True, cache: CacheArg = None, close_source: bool = False) -> None:
        # A ByteSource passed in stays the caller's unless handed over with close_source=True.
        self._owns_source = close_source or not isinstance(source, ByteSource)
        # A URL string (http(s)://, s3://, gs://) is read by range requests (io/remote.py).
        self.source: ByteSource = open_url(source) if is_url(source) else as_source(source)
        self.name = self.source.name
        self.cache: FrameCache | None = default_cache() if cache is None or cache is True else (cache or None)
        self._reader: FrameReader | None = None
        self._renderer: Renderer | None = None
        self._view: np.ndarray | None = None
        try:
            self._header = parse_header(self.source)
            self._init_pixels(strict)
            self.source.opened()  # a remote source keeps what the open read (the open cache)
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
        reader = self._reader
        if reader is not None:
            return reader.cache_key  # type: ignore[return-value]
        return source_cache_key(self.source)

    def _init_pixels(self, strict: bool) -> None:
        header = self._header
        pixel = header.pixel
        self._spec: PixelSpec | None = None
        self._index: FrameIndex | None = None
        self._reader = None
        if pixel is None:
            return
        ds = header.dataset
        ts = header.transfer_syntax
        spec = pixel_spec_from_dataset(ds, pixel.keyword, self.name)
        be_swap_ow = (
            not header.is_little_endian and spec.bits_allocated == 8 and pixel.vr == "OW" and pixel.keyword == "PixelData"
        )
        if pixel.encapsulated:
            if ts in NATIVE_SYNTAXES:
                raise DicomFormatError(f"{self.name}: pixel data is encapsulated but the transfer syntax {ts} is native")
            # Fail at open, not at the first frame, when nothing can decode it.
            decoder = frame_decoder(ts, native=False)
            eot = extended_offset_table(ds, self.name, stacklevel=3)
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
            decoder = None
            index = native_frame_index(pixel, spec, header.source.size, self.name, strict=strict)
        if len(index) < spec.number_of_frames:
            warnings.warn(f"{self.name}: {spec.number_of_frames} frames declared, {len(index)} present", stacklevel=3)
        self._spec = spec
        self._index = index
        self._reader = FrameReader(
            spec,
            ts,
            index=index,
            source=header.source,
            name=self.name,
            little_endian=header.is_little_endian,
            be_swap_ow=be_swap_ow,
            value_offset=pixel.value_offset,
            decoder=decoder,
            cache=self.cache,
            cache_key=functools.partial(source_cache_key, self.source),
        )

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
    def pixel_element(self) -> PixelElement | None:
        """Position of the pixel data element (for byte-range servers)."""
        return self._header.pixel

    @property
    def reader(self) -> FrameReader:
        """The :class:`~dcmstream.image.frame_reader.FrameReader` that reads and decodes the
        frames (index, spec, byte order, codec, cache keys); DicomFormatError without pixels."""
        if self._reader is None:
            raise DicomFormatError(f"{self.name}: the dataset has no pixel data")
        return self._reader

    @property
    def is_little_endian(self) -> bool:
        """Whether the dataset (and native pixel data) is encoded little endian."""
        return bool(self._header.is_little_endian)

    @property
    def pixel_value_source(self) -> ByteSource:
        """The source the pixel value's offsets refer to: :attr:`source`, or for a deflated
        file the inflated temporary copy (read-only use; the instance closes it)."""
        return self._header.source

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
            raise InvalidArgumentTypeError(f"frame index must be an integer, not {type(i).__name__}")
        j = int(i) + n if i < 0 else int(i)
        if not 0 <= j < n:
            raise FrameNumberError(f"{self.name}: frame {i} out of range (0..{n - 1})")
        return j

    def encoded_frame(self, i: int) -> bytes:
        """The stored bytes of frame ``i`` (0-based), reading nothing else.

        For encapsulated syntaxes this is the codestream (fragments joined); for
        native syntaxes it is the frame's raw pixel bytes as stored.
        """
        j = self._check_index(i)
        return self.reader.encoded_frame(j)

    def decode(self, data: bytes, i: int = 0, level: int = 0) -> np.ndarray:
        """Decode ``data`` (the encoded bytes of frame ``i``) into the final array.

        ``level`` k > 0 gives the frame at ``ceil(rows / 2**k) x ceil(columns / 2**k)``:
        JPEG 2000 and HTJ2K decode only those resolution levels, everything
        else is decoded in full and decimated (see :mod:`dcmstream.image.levels`).
        """
        return self.reader.decode(data, i, level)

    def frame(self, i: int, level: int = 0) -> np.ndarray:
        """Frame ``i`` (0-based) as an array, identical to pydicom's ``pixel_array(ds)[i]``.

        ``level`` k > 0 gives a reduced resolution, ``ceil(rows / 2**k) x
        ceil(columns / 2**k)``: JPEG 2000 and HTJ2K decode only the coarser
        wavelet levels; other syntaxes are decimated (every 2**k-th pixel). A
        level beyond :attr:`max_level` gives level :attr:`max_level`; a negative
        one raises ValueError. Each level is cached on its own (``"level{k}"``).
        """
        j = self._check_index(i)
        return self.reader.frame(j, self._level(level))

    def prefetch(self, i: int, level: int = 0) -> None:
        """Decode frame ``i`` into the cache, marked as a prefetch (no-op without cache).

        Prefetch policies and decode pools call this; an entry that is evicted
        before anyone asks for it counts as ``prefetch_wasted`` in the stats.
        """
        j = self._check_index(i)
        k = self._level(level)
        if self.cache is not None:
            self.reader.frame(j, k, prefetch=True)

    def is_cached(self, i: int, level: int = 0) -> bool:
        """Whether frame ``i`` (at ``level``) is decoded in the cache now (no side effects)."""
        if self.cache is None or self._reader is None:
            return False
        k = self._level(level)
        return self._reader.is_cached(int(i) % max(len(self), 1), k)

    # -- resolution levels -------------------------------------------------------
    @property
    def max_level(self) -> int:
        """The coarsest ``level`` :meth:`frame` offers.

        JPEG 2000 / HTJ2K: the decomposition levels of the first frame's
        codestream (typically 5: 512 px down to 16 px); other syntaxes: the level
        at which the longest side is one pixel.
        """
        return self.reader.max_level

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


def open(source: Source, *, strict: bool = True, cache: CacheArg = None, close_source: bool = False) -> Instance:  # noqa: A001 - mirrors builtins.open on purpose
    """Open a DICOM file lazily: read its header and build its frame index.

    ``source`` is a path, bytes, a seekable binary file object, a
    :class:`~dcmstream.io.ByteSource`, or the URL of a remote object
    (``https://host/file.dcm``, ``s3://bucket/key``, ``gs://bucket/key``): the header
    and offset table are read by a few range requests, then each frame by one (see
    :func:`dcmstream.io.remote.open_url`; pass ``open_url(url, anon=True, ...)`` with
    ``close_source=True`` for other options than the defaults). With ``strict=False`` a file with fewer
    frames than it declares opens with the frames that are present. ``cache``
    is a :class:`~dcmstream.cache.FrameCache`, None for the process-wide default
    (``dcmstream.cache.default_cache()``) or False for no caching. A ByteSource
    passed in is closed by :meth:`Instance.close` only with ``close_source=True``
    (the archive hands over the blob sources it opens).
    """
    return Instance(source, strict=strict, cache=cache, close_source=close_source)
