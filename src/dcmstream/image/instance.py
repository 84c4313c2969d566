"""Instance: one DICOM file opened lazily, frame by frame."""

from __future__ import annotations

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
from ..errors import DecodeError, DicomFormatError, FrameIndexError, SourceError, UnsupportedTransferSyntaxError
from ..index import (
    FrameIndex,
    PixelSpec,
    encapsulated_frame_index,
    native_frame_index,
    parse_header,
    pixel_spec_from_dataset,
    unwrap_items,
)
from ..io.source import ByteSource, as_source
from .postprocess import finish_frame

__all__ = ["Instance", "open"]

Source = str | os.PathLike[str] | BinaryIO | ByteSource | bytes
#: ``cache=`` argument: a FrameCache, None for the process-wide default, False for none.
CacheArg = FrameCache | None | bool


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
        self.cache_key = self._make_cache_key()
        try:
            self._header = parse_header(self.source)
            self._init_pixels(strict)
        except BaseException:
            self.close()
            raise

    # -- opening -----------------------------------------------------------------
    def _make_cache_key(self) -> tuple[str, ...]:
        """Identity of the bytes, so reopening the same unchanged file hits the cache."""
        path = getattr(self.source, "path", None)
        if path is not None:
            try:
                st = os.stat(path)
                return ("file", os.path.realpath(path), str(st.st_size), str(st.st_mtime_ns))
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
                eot = (bytes(ds.ExtendedOffsetTable or b""), bytes(ds.ExtendedOffsetTableLengths or b""))
            index = encapsulated_frame_index(
                header.source, pixel.value_offset, spec.number_of_frames, self.name, extended_offsets=eot, strict=strict
            )
        else:
            if ts not in NATIVE_SYNTAXES:
                if not UID(ts).is_valid or UID(ts).is_encapsulated or UID(ts).is_compressed:
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
        """The pydicom dataset of everything except the pixel data."""
        return self._header.dataset

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
        data = self._header.source.read_exact(offset, length, f"frame {j}")
        return unwrap_items(data, self.name, j) if index.wrapped else data

    def decode(self, data: bytes, i: int = 0, level: int = 0) -> np.ndarray:
        """Decode ``data`` (the encoded bytes of frame ``i``) into the final array."""
        spec = self.pixel_spec
        ts = self.transfer_syntax
        try:
            if self.frame_index.kind == "native":
                bit_offsets = self.frame_index.bit_offsets
                decoded = decode_native(
                    data, spec, self._header.is_little_endian or self._be_swap_ow, 0 if bit_offsets is None else int(bit_offsets[i])
                )
            elif self._decoder is None:  # encapsulated uncompressed
                decoded = decode_native(data, spec, True)
            else:
                decoded = self._decoder.decode(data, spec, level if self._decoder.reduces else 0)
        except (DicomFormatError, UnsupportedTransferSyntaxError, SourceError):
            raise
        except Exception as exc:  # noqa: BLE001 - codecs raise their own error types
            raise DecodeError(f"{self.name}: frame {i} could not be decoded ({type(exc).__name__}: {exc})") from exc
        self._check_shape(decoded, i, level)
        return finish_frame(decoded, spec, ts)

    def _check_shape(self, decoded: Decoded, i: int, level: int) -> None:
        spec = self.pixel_spec
        arr = decoded.array
        expected = spec.shape
        if level and self._decoder is not None and self._decoder.reduces:
            return
        if arr.shape != expected:
            # A codestream whose size disagrees with Rows/Columns is a format error,
            # not something to reshape silently.
            raise DecodeError(f"{self.name}: frame {i} decodes to shape {arr.shape}, the header says {expected}")

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` (0-based) as an array, identical to pydicom's ``pixel_array(ds)[i]``."""
        j = self._check_index(i)
        if self.cache is None:
            return self.decode(self.encoded_frame(j), j)
        return self.cache.get_or_load((self.cache_key, j, "full"), lambda: self._load_frame(j))

    def prefetch(self, i: int) -> None:
        """Decode frame ``i`` into the cache, marked as a prefetch (no-op without cache).

        Prefetch policies and decode pools call this; an entry that is evicted
        before anyone asks for it counts as ``prefetch_wasted`` in the stats.
        """
        j = self._check_index(i)
        if self.cache is not None:
            self.cache.get_or_load((self.cache_key, j, "full"), lambda: self._load_frame(j), prefetch=True)

    def is_cached(self, i: int) -> bool:
        """Whether frame ``i`` is decoded in the cache now (no side effects)."""
        return self.cache is not None and self.cache.peek((self.cache_key, int(i) % max(len(self), 1), "full"))

    def _load_frame(self, j: int, level: int = 0) -> np.ndarray:
        return self.decode(self._cached_encoded_frame(j), j, level)

    def _cached_encoded_frame(self, j: int) -> bytes:
        # Native frames are as large decoded as encoded: keeping both would spend
        # the budget twice, so only compressed frames use the encoded tier.
        if self.cache is None or self.frame_index.kind == "native":
            return self.encoded_frame(j)
        return self.cache.get_or_load((self.cache_key, j, "encoded"), lambda: self.encoded_frame(j), "encoded")

    def frames(self, indices: Iterable[int] | None = None) -> Iterator[np.ndarray]:
        """Yield frames lazily, one read and one decode at a time."""
        for i in range(len(self)) if indices is None else indices:
            yield self.frame(i)

    # -- lifetime ----------------------------------------------------------------
    def close(self) -> None:
        """Close the source (when this Instance opened it) and any temporary copy."""
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
