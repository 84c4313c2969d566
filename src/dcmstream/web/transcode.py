"""Whole instances re-encoded as Explicit VR Little Endian, streamed frame by frame.

PS3.18 makes Explicit VR Little Endian the default transfer syntax of WADO-RS
``application/dicom`` responses. An instance stored compressed is decoded one frame
at a time and written out uncompressed, so memory stays at one frame whatever the
size of the instance (a 1,000-frame JPEG-LS CT becomes ~500 MB on the wire, never
in memory). Elements after the pixel data (rare: padding, signatures) are dropped.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from ..archive import Archive, InstanceRecord
from ..codecs import NATIVE_SYNTAXES
from ..image import Instance

__all__ = ["explicit_le_stream", "CHUNK"]

CHUNK = 1 << 20
_PIXEL_TABLE_TAGS = (0x7FE00001, 0x7FE00002, 0x7FE00003)  # EOT, EOT lengths, average fragment size


def _header(inst: Instance) -> tuple[bytes, int, str, int]:
    """Part 10 preamble + meta + dataset (Explicit VR LE), and the pixel element layout."""
    ds: Dataset = inst.dataset
    ds = ds.copy() if hasattr(ds, "copy") else ds
    for tag in _PIXEL_TABLE_TAGS:
        if tag in ds:
            del ds[tag]
    spec = inst.pixel_spec if inst.has_pixels else None
    if spec is not None:
        compressed = str(inst.transfer_syntax) not in NATIVE_SYNTAXES
        # Decoded colour is RGB, pixel-interleaved (what dcmstream and pydicom return).
        if spec.samples_per_pixel == 3 and (
            compressed or spec.photometric_interpretation == "YBR_FULL_422"
        ) and spec.photometric_interpretation.startswith("YBR"):
            ds.PhotometricInterpretation = "RGB"
        if spec.samples_per_pixel > 1:
            ds.PlanarConfiguration = 0
    meta = FileMetaDataset(inst.dataset.file_meta)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if "ImplementationClassUID" not in meta:
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    fp.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(fp, meta, enforce_standard=True)
    write_dataset(fp, ds)
    if spec is None:
        return fp.getvalue(), 0, "", 0
    frames = len(inst)
    if spec.bits_allocated == 1:
        length = (spec.pixels_per_frame * frames + 7) // 8
    else:
        length = spec.pixels_per_frame * spec.dtype.itemsize * frames
    element = inst.pixel_element
    assert element is not None  # spec is not None: the instance has pixel data
    vr = {"FloatPixelData": "OF", "DoubleFloatPixelData": "OD"}.get(element.keyword, "OW" if spec.bits_allocated > 8 else "OB")
    return fp.getvalue(), element.tag, vr, length


def explicit_le_stream(archive: Archive, record: InstanceRecord) -> Iterator[bytes]:
    """Yield the Part 10 bytes of ``record`` re-encoded as Explicit VR Little Endian."""
    inst = archive.open_instance(record)
    try:
        head, tag, vr, length = _header(inst)
        yield head
        if not tag:
            return
        padded = length + (length & 1)
        yield _element_header(tag, vr, padded)
        ts = str(inst.transfer_syntax)
        element = inst.pixel_element
        assert element is not None  # tag != 0: the instance has pixel data
        if ts in NATIVE_SYNTAXES and inst.is_little_endian:
            # Little-endian native pixels are already what we send: copy the value (from
            # the inflated copy for deflate).
            src, pos, end = inst.pixel_value_source, element.value_offset, element.value_offset + length
            while pos < end:
                data = src.read_exact(pos, min(CHUNK, end - pos), "pixel data")
                pos += len(data)
                yield data
        else:
            stored = archive.stored(record)
            spec = inst.pixel_spec
            bits: list[np.ndarray] = []
            for i in range(len(inst)):
                arr = stored.frame(i) if stored is not None else inst.frame(i)
                if spec.bits_allocated == 1:
                    bits.append(np.asarray(arr, dtype=np.uint8).reshape(-1))
                    continue
                yield np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
            if bits:
                yield np.packbits(np.concatenate(bits), bitorder="little").tobytes()
        if padded != length:
            yield b"\x00"
    finally:
        inst.close()


def _element_header(tag: int, vr: str, length: int) -> bytes:
    # Explicit VR little endian, a VR with a 4-byte length: group, element, VR, 2 reserved bytes, length
    return struct.pack("<HH2s2xI", tag >> 16, tag & 0xFFFF, vr.encode("ascii"), length)
