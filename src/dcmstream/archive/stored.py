"""Frames of an archived instance, read through the frame index stored at ingest.

Serving a frame must not parse the file's header again (a 1,000-frame enhanced CT
has a header of hundreds of kilobytes): :class:`StoredInstance` rebuilds the
:class:`~dcmstream.index.FrameIndex` and :class:`~dcmstream.index.PixelSpec` from
the catalog record and reads exactly one frame's bytes from the blob.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from pydicom.uid import ExplicitVRLittleEndian

from ..cache import FrameCache
from ..codecs import ENCAPSULATED_UNCOMPRESSED
from ..errors import DicomFormatError, FrameNumberError
from ..image.frame_reader import FrameReader
from ..index import FrameIndex, PixelSpec
from ..io.source import ByteSource
from .blobstore import BlobStore
from .catalog import InstanceRecord

if TYPE_CHECKING:
    from ..image.instance import Instance

__all__ = ["StoredInstance", "pixel_record", "spec_from_record"]


def pixel_record(inst: "Instance") -> dict[str, Any] | None:
    """The ``pixel`` entry of a catalog record, from an opened :class:`~dcmstream.Instance`:
    what :class:`StoredInstance` needs, with the frame index, to build a FrameReader."""
    element = inst.pixel_element
    if not inst.has_pixels or element is None:
        return None
    return {
        "tag": element.tag,
        "keyword": element.keyword,
        "vr": element.vr,
        "element_offset": element.element_offset,
        "value_offset": element.value_offset,
        "length": element.length,
        "little_endian": inst.is_little_endian,
        "swap_ow": inst.reader.be_swap_ow,
        "spec": dataclasses.asdict(inst.pixel_spec),
    }


def spec_from_record(pixel: dict[str, Any]) -> PixelSpec:
    names = {f.name for f in dataclasses.fields(PixelSpec)}
    return PixelSpec(**{k: v for k, v in pixel["spec"].items() if k in names})


class StoredInstance:
    """Frame access to one archived instance without parsing its header.

    Only instances whose stored frame index is valid against the blob get one
    (``record.frame_index`` is None for deflated files, whose index refers to the
    inflated bytes); callers fall back to ``dcmstream.open`` on the blob for those.
    Frames are read and decoded by a :class:`~dcmstream.image.frame_reader.FrameReader`
    built from the record, the same one :class:`~dcmstream.Instance` uses; every call
    takes an open ``source`` of the blob, or opens (and closes) one itself.
    """

    def __init__(
        self,
        record: InstanceRecord,
        blobs: BlobStore,
        cache: FrameCache | None = None,
        *,
        open_source: Callable[[], ByteSource] | None = None,
    ) -> None:
        if record.frame_index is None or record.pixel is None:
            raise DicomFormatError(f"{record.sop_uid}: no stored frame index")
        self.record = record
        self.blobs = blobs
        self.cache = cache
        self.index = FrameIndex.from_dict(record.frame_index)
        self.spec = spec_from_record(record.pixel)
        self.transfer_syntax = record.transfer_syntax
        self.little_endian = bool(record.pixel.get("little_endian", True))
        self.native = self.index.kind == "native"
        self.cache_key = ("archive", record.sop_uid, record.blob_key)
        blob_key = record.blob_key
        self.reader = FrameReader(  # raises if nothing decodes the transfer syntax
            self.spec,
            self.transfer_syntax,
            index=self.index,
            open_source=open_source or (lambda: blobs.open(blob_key)),
            name=record.sop_uid,
            little_endian=self.little_endian,
            be_swap_ow=bool(record.pixel.get("swap_ow")),
            value_offset=int(record.pixel.get("value_offset") or 0),
            cache=cache,
            cache_key=self.cache_key,
        )

    def __len__(self) -> int:
        return len(self.index)

    @property
    def pixel_spec(self) -> PixelSpec:
        """Rows, columns, samples, bits and photometric interpretation (from the record)."""
        return self.spec

    @property
    def is_uncompressed_le(self) -> bool:
        """Whether the stored frame bytes already are Explicit VR Little Endian pixels."""
        return (self.native and self.little_endian) or self.transfer_syntax == ENCAPSULATED_UNCOMPRESSED

    def check(self, i: int) -> int:
        if not 0 <= i < len(self.index):
            raise FrameNumberError(f"{self.record.sop_uid}: frame {i + 1} out of range (1..{len(self.index)})")
        return i

    def encoded_frame(self, i: int, source: ByteSource | None = None) -> bytes:
        """Frame ``i`` (0-based) as stored: codestream, or native pixel bytes."""
        self.check(i)
        return self.reader.cached_encoded_frame(i, source)

    def decode(self, data: bytes, i: int) -> np.ndarray:
        """Decode ``data`` (the stored bytes of frame ``i``), as :meth:`dcmstream.Instance.decode`."""
        return self.reader.decode(data, i)

    def frame(self, i: int, source: ByteSource | None = None) -> np.ndarray:
        """Frame ``i`` (0-based) decoded, identical to ``dcmstream.open(blob).frame(i)``."""
        self.check(i)
        return self.reader.frame(i, 0, source)

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
