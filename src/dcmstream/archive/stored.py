"""Frames of an archived instance, read through the frame index stored at ingest.

Serving a frame must not parse the file's header again (a 1,000-frame enhanced CT
has a header of hundreds of kilobytes): :class:`StoredInstance` rebuilds the
:class:`~dcmstream.index.FrameIndex` and :class:`~dcmstream.index.PixelSpec` from
the catalog record and reads exactly one frame's bytes from the blob.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from pydicom.uid import ExplicitVRLittleEndian

from ..cache import FrameCache
from ..codecs import ENCAPSULATED_UNCOMPRESSED, decode_native, decoder_for
from ..errors import DecodeError, DicomFormatError, SourceError, UnsupportedTransferSyntaxError
from ..image.postprocess import finish_frame
from ..index import FrameIndex, PixelSpec, unwrap_items
from ..io.source import ByteSource
from .blobstore import BlobStore
from .catalog import InstanceRecord

__all__ = ["StoredInstance", "pixel_record", "spec_from_record"]


def pixel_record(inst: Any) -> dict[str, Any] | None:
    """The ``pixel`` entry of a catalog record, from an opened :class:`~dcmstream.Instance`."""
    if not inst.has_pixels:
        return None
    element = inst.pixel_element
    spec = inst.pixel_spec
    header = inst._header  # noqa: SLF001 - the encoding flags live on the parsed header
    return {
        "tag": element.tag,
        "keyword": element.keyword,
        "vr": element.vr,
        "element_offset": element.element_offset,
        "value_offset": element.value_offset,
        "length": element.length,
        "little_endian": bool(header.is_little_endian),
        "swap_ow": bool(getattr(inst, "_be_swap_ow", False)),
        "spec": dataclasses.asdict(spec),
    }


def spec_from_record(pixel: dict[str, Any]) -> PixelSpec:
    names = {f.name for f in dataclasses.fields(PixelSpec)}
    return PixelSpec(**{k: v for k, v in pixel["spec"].items() if k in names})


class StoredInstance:
    """Frame access to one archived instance without parsing its header.

    Only instances whose stored frame index is valid against the blob get one
    (``record.frame_index`` is None for deflated files, whose index refers to the
    inflated bytes); callers fall back to ``dcmstream.open`` on the blob for those.
    """

    def __init__(self, record: InstanceRecord, blobs: BlobStore, cache: FrameCache | None = None) -> None:
        if record.frame_index is None or record.pixel is None:
            raise DicomFormatError(f"{record.sop_uid}: no stored frame index")
        if record.pixel.get("swap_ow"):
            raise DicomFormatError(f"{record.sop_uid}: byte-swapped OW pixel data needs the full reader")
        self.record = record
        self.blobs = blobs
        self.cache = cache
        self.index = FrameIndex.from_dict(record.frame_index)
        self.spec = spec_from_record(record.pixel)
        self.transfer_syntax = record.transfer_syntax
        self.little_endian = bool(record.pixel.get("little_endian", True))
        self.native = self.index.kind == "native"
        self.cache_key = ("archive", record.sop_uid, record.blob_key)
        self._decoder = None
        if not self.native and self.transfer_syntax != ENCAPSULATED_UNCOMPRESSED:
            self._decoder = decoder_for(self.transfer_syntax)  # raises if nothing decodes it

    def __len__(self) -> int:
        return len(self.index)

    @property
    def is_uncompressed_le(self) -> bool:
        """Whether the stored frame bytes already are Explicit VR Little Endian pixels."""
        return (self.native and self.little_endian) or self.transfer_syntax == ENCAPSULATED_UNCOMPRESSED

    def check(self, i: int) -> int:
        if not 0 <= i < len(self.index):
            raise IndexError(f"frame {i + 1} out of range (1..{len(self.index)})")
        return i

    def _read(self, i: int, source: ByteSource | None) -> bytes:
        offset, length = self.index.span(i)
        own = source is None
        src = self.blobs.open(self.record.blob_key) if own else source
        try:
            data = src.read_exact(offset, length, f"frame {i}")
        finally:
            if own:
                src.close()
        if self.index.wrapped:
            data = unwrap_items(data, self.record.sop_uid, i)
        return data

    def encoded_frame(self, i: int, source: ByteSource | None = None) -> bytes:
        """Frame ``i`` (0-based) as stored: codestream, or native pixel bytes."""
        self.check(i)
        if self.cache is None or self.native:
            return self._read(i, source)
        return self.cache.get_or_load((self.cache_key, i, "encoded"), lambda: self._read(i, source), "encoded")

    def decode(self, data: bytes, i: int) -> np.ndarray:
        spec = self.spec
        try:
            if self.native:
                bits = self.index.bit_offsets
                decoded = decode_native(data, spec, self.little_endian, 0 if bits is None else int(bits[i]))
            elif self._decoder is None:
                decoded = decode_native(data, spec, True)
            else:
                decoded = self._decoder.decode(data, spec, 0)
        except (DicomFormatError, UnsupportedTransferSyntaxError, SourceError):
            raise
        except Exception as exc:  # noqa: BLE001 - codecs raise their own types
            raise DecodeError(f"{self.record.sop_uid}: frame {i} could not be decoded ({type(exc).__name__}: {exc})") from exc
        if decoded.array.shape != spec.shape:
            raise DecodeError(f"{self.record.sop_uid}: frame {i} decodes to {decoded.array.shape}, header says {spec.shape}")
        return finish_frame(decoded, spec, self.transfer_syntax)

    def frame(self, i: int, source: ByteSource | None = None) -> np.ndarray:
        """Frame ``i`` (0-based) decoded, identical to ``dcmstream.open(blob).frame(i)``."""
        self.check(i)
        if self.cache is None:
            return self.decode(self.encoded_frame(i, source), i)
        return self.cache.get_or_load(
            (self.cache_key, i, "full"), lambda: self.decode(self.encoded_frame(i, source), i)
        )

    def uncompressed_frame(self, i: int, source: ByteSource | None = None) -> bytes:
        """Frame ``i`` as Explicit VR Little Endian pixel bytes (what octet-stream serves).

        Native little-endian data is served byte for byte as stored; everything else
        is decoded and written little endian (colour as RGB, planar configuration 0).
        """
        if self.is_uncompressed_le and self.spec.photometric_interpretation != "YBR_FULL_422" and self.spec.bits_allocated != 1:
            return self.encoded_frame(i, source)
        arr = self.frame(i, source)
        if self.spec.bits_allocated == 1:
            return np.packbits(arr.reshape(-1), bitorder="little").tobytes()
        return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


def uncompressed_syntax() -> str:
    return ExplicitVRLittleEndian
