"""Streaming writer of DICOM Part 10 files: header by pydicom, Pixel Data element by hand.

One mechanism for everything dcmstream writes (the synthetic samples, the transcoder, the
hybrid previews):

* :class:`AtomicFile` (from :mod:`dcmstream.io.atomic`, re-exported) - a hidden temporary
  file in the destination folder, fsynced and renamed over the destination only when the
  caller commits; discarded on any failure, so a reader never sees a half-written file.
* :class:`Encoding` - byte-level element encoding of a dataset (implicit/explicit VR, byte
  order), :func:`file_meta_bytes` for the preamble and group 0002.
* :func:`write_sequence` - a sequence written item by item (per-frame functional groups of
  thousands of frames never sit in memory twice).
* :func:`write_native` / :func:`write_encapsulated` - Pixel Data from an iterator of frames.
  Encapsulated Pixel Data gets one fragment per frame (or more, for test files) and a Basic
  Offset Table, or an empty one plus the Extended Offset Table; both tables are reserved
  before the fragments and filled by seeking back, so frames stream straight to disk.
"""

from __future__ import annotations

import itertools
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Literal

import numpy as np
from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_dataset, write_file_meta_info
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

from ..codecs.syntaxes import syntax
from ..errors import DcmstreamError, InvalidArgumentError
from ..io.atomic import AtomicFile

__all__ = [
    "AtomicFile",
    "DeflateWriter",
    "EXPLICIT_LITTLE",
    "Encoding",
    "EncapsulatedLayout",
    "OFFSET_TABLES",
    "PixelDataTooLarge",
    "encoding_for",
    "file_meta_bytes",
    "split_fragments",
    "write_encapsulated",
    "write_native",
    "write_sequence",
]

PIXEL_DATA = 0x7FE00010
EXTENDED_OFFSET_TABLE = 0x7FE00001
EXTENDED_OFFSET_TABLE_LENGTHS = 0x7FE00002
PER_FRAME_GROUPS = 0x52009230
ITEM = 0xFFFEE000
ITEM_DELIMITER = 0xFFFEE00D
SEQUENCE_DELIMITER = 0xFFFEE0DD
UNDEFINED_LENGTH = 0xFFFFFFFF
MAX_LENGTH = 0xFFFFFFFE  # largest even 32-bit length

#: Offset table kinds :func:`write_encapsulated` writes: Basic, none (empty BOT), Extended.
OFFSET_TABLES = ("bot", "none", "eot")



class PixelDataTooLarge(DcmstreamError, ValueError):
    """Encapsulated Pixel Data outgrew the 32-bit offsets of the Basic Offset Table."""


class WriterError(DcmstreamError, RuntimeError):
    """The frames handed to a writer do not match what its header declared (their count,
    or a placeholder the header must hold)."""


# ---------------------------------------------------------------------------------------------
# Element encoding
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Encoding:
    """Byte-level encoding of the dataset (everything after the file meta information)."""

    implicit: bool
    little: bool

    @property
    def byte_order(self) -> Literal["<", ">"]:
        return "<" if self.little else ">"

    def element_header(self, tag: int, vr: str, length: int) -> bytes:
        """Header of an element with a 4-byte length (OB, OW, OV, SQ, ... or any if implicit)."""
        head = struct.pack(f"{self.byte_order}HH", tag >> 16, tag & 0xFFFF)
        if self.implicit:
            return head + struct.pack(f"{self.byte_order}I", length)
        return head + vr.encode() + struct.pack(f"{self.byte_order}2xI", length)

    def delimiter(self, tag: int, length: int = 0) -> bytes:
        """Item or delimiter tag: no VR in any transfer syntax."""
        return struct.pack(f"{self.byte_order}HHI", tag >> 16, tag & 0xFFFF, length)

    def dataset(self, ds: Dataset, charset: str | list[str] | None = None) -> bytes:
        """``ds`` encoded; ``charset``: the Specific Character Set of the enclosing dataset
        when ``ds`` is a piece of one (pydicom's ``parent_encoding``).

        When ``ds`` says it was read in this very encoding (its original encoding and
        character set), its unparsed elements are copied as stored, as pydicom's
        ``write_dataset`` would do - but without pydicom's per-element set-up, which cost
        ~20 us an element (a millisecond a file for a CT slice's header); parsed elements
        still go through pydicom."""
        buffer = DicomBytesIO()
        buffer.is_implicit_VR, buffer.is_little_endian = self.implicit, self.little
        if not self._as_stored(ds):
            if charset is None:
                write_dataset(buffer, ds)
            else:
                write_dataset(buffer, ds, charset)
            return buffer.getvalue()
        declared = ds.get(0x00080005)
        encodings = declared.value if declared is not None and declared.value else \
            (charset or default_encoding)
        for elem in ds.elements():
            if elem.tag.element == 0 and elem.tag.group > 6:
                continue  # retired group lengths are not written (PS3.5 7.2), as pydicom
            stored = _stored_bytes(elem) if isinstance(elem, RawDataElement) else None
            if stored is None:
                write_data_element(buffer, elem, encodings)
            else:
                buffer.write(stored)
        return buffer.getvalue()

    def _as_stored(self, ds: Dataset) -> bool:
        """Whether pydicom would write ``ds``'s raw elements as stored: explicit VR little
        endian both ways and the character set it was read with (see write_dataset)."""
        if self.implicit or not self.little or ds.original_encoding != (False, True):
            return False
        declared = ds.get(0x00080005)
        now = convert_encodings(declared.value) if declared is not None and declared.value \
            else convert_encodings(default_encoding)
        return convert_encodings(ds.original_character_set) == now


EXPLICIT_LITTLE = Encoding(implicit=False, little=True)


def _stored_bytes(elem: RawDataElement) -> bytes | None:
    """A raw explicit VR little endian element as stored (header, value, and the sequence
    delimiter an undefined length needs), or None for what pydicom must handle itself."""
    vr, value = elem.VR, elem.value
    if vr is None or elem.is_implicit_VR or not elem.is_little_endian \
            or not isinstance(value, bytes):
        return None
    undefined = elem.length == UNDEFINED_LENGTH
    head = struct.pack("<HH", elem.tag >> 16, elem.tag & 0xFFFF) + vr.encode("ascii")
    if vr in EXPLICIT_VR_LENGTH_32:
        head += struct.pack("<2xI", UNDEFINED_LENGTH if undefined else len(value))
    elif undefined or len(value) > 0xFFFF:
        return None  # pydicom's own rules (a 16-bit length overflowing becomes UN)
    else:
        head += struct.pack("<H", len(value))
    return head + value + (_SEQUENCE_END if undefined else b"")


_SEQUENCE_END = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


def encoding_for(transfer_syntax: str) -> Encoding:
    """The dataset encoding of a transfer syntax (all encapsulated ones: explicit little)."""
    row = syntax(transfer_syntax)
    return Encoding(implicit=row is not None and not row.explicit_vr,
                    little=row is None or row.little_endian)


def is_deflated(transfer_syntax: str) -> bool:
    row = syntax(transfer_syntax)
    return row is not None and row.deflated


class DeflateWriter:
    """Raw-deflates everything written (Deflated Explicit VR Little Endian, PS3.5 A.5)."""

    def __init__(self, raw: BinaryIO, level: int = 6) -> None:
        self._raw = raw
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, -15)  # negative: no header

    def write(self, data: bytes | memoryview) -> None:
        self._raw.write(self._compressor.compress(data))

    def finish(self) -> None:
        self._raw.write(self._compressor.flush())


def file_meta_bytes(meta: FileMetaDataset) -> bytes:
    """Preamble, ``DICM`` and the File Meta Information group (lengths computed by pydicom)."""
    buffer = DicomBytesIO()
    write_file_meta_info(buffer, meta, enforce_standard=True)
    return b"\0" * 128 + b"DICM" + buffer.getvalue()


def write_sequence(out: BinaryIO | DeflateWriter, enc: Encoding, tag: int,
                   items: Iterable[Dataset | bytes]) -> None:
    """Write a sequence item by item (undefined length), so it is never whole in memory.

    An item is a Dataset (encoded here; undefined length) or its contents already encoded
    in ``enc`` (bytes; defined length), for generators that encode items faster by hand."""
    out.write(enc.element_header(tag, "SQ", UNDEFINED_LENGTH))
    for item in items:
        if isinstance(item, (bytes, bytearray)):
            out.write(enc.delimiter(ITEM, len(item)))
            out.write(item)
            continue
        out.write(enc.delimiter(ITEM, UNDEFINED_LENGTH))
        out.write(enc.dataset(item))
        out.write(enc.delimiter(ITEM_DELIMITER))
    out.write(enc.delimiter(SEQUENCE_DELIMITER))


# ---------------------------------------------------------------------------------------------
# Pixel Data
# ---------------------------------------------------------------------------------------------


def write_native(out: BinaryIO | DeflateWriter, enc: Encoding, frames: Iterable[np.ndarray],
                 count: int, *, frame_bytes: int, bits_allocated: int, dtype: np.dtype) -> None:
    """Native Pixel Data: frames converted to ``dtype`` in the encoding's byte order.

    ``bits_allocated == 1`` packs each frame's 0/1 samples eight to a byte (little bit order,
    PS3.5 8.1.1); the frames must then hold a multiple of 8 pixels, so frames stay byte
    aligned.
    """
    total = frame_bytes * count
    padded = total + total % 2
    if padded > MAX_LENGTH:
        raise PixelDataTooLarge(f"native Pixel Data of {total} bytes exceeds the 32-bit length "
                                "limit; use an encapsulated syntax")
    vr = "OB" if bits_allocated <= 8 else "OW"
    out.write(enc.element_header(PIXEL_DATA, vr, padded))
    target = np.dtype(dtype).newbyteorder(enc.byte_order)
    written = 0
    for frame in frames:
        if bits_allocated == 1:
            data = np.packbits(np.asarray(frame, dtype=np.uint8).ravel() & 1, bitorder="little")
        else:
            data = np.ascontiguousarray(frame, dtype=target)
        view = data.data.cast("B")
        if len(view) != frame_bytes:
            raise InvalidArgumentError(f"frame of {len(view)} bytes, expected {frame_bytes}")
        out.write(view)
        written += 1
    if written != count:
        raise WriterError(f"expected {count} frames, got {written}")
    if total % 2:
        out.write(b"\0")


@dataclass(frozen=True)
class EncapsulatedLayout:
    """Where :func:`write_encapsulated` put each frame: offsets from the first fragment's item
    tag and item lengths (one fragment per frame), as in the offset tables."""

    offsets: list[int]
    lengths: list[int]
    offset_table: str


def write_encapsulated(fh: BinaryIO, encoded: Iterator[bytes] | Iterable[bytes], count: int, *,
                       offset_table: str = "bot",
                       fragments_per_frame: int = 1) -> EncapsulatedLayout:
    """Encapsulated Pixel Data (PS3.5 A.4), offsets filled in by seeking back afterwards.

    ``offset_table``: "bot" (Basic Offset Table), "none" (empty BOT) or "eot" (empty BOT and
    the Extended Offset Table + Lengths, written just before Pixel Data; 64-bit, so any size).
    Items get even lengths: an odd codestream is padded with one 0x00, which JPEG, JPEG-LS
    and JPEG 2000 readers ignore after the end-of-image marker. Raises
    :class:`PixelDataTooLarge` when a BOT offset would pass 4 GiB (the caller can retry with
    "eot"). ``fh`` must be seekable; all encapsulated syntaxes are explicit VR little endian.
    """
    if offset_table not in OFFSET_TABLES:
        raise InvalidArgumentError(f"offset_table must be one of {OFFSET_TABLES}, not {offset_table!r}")
    if offset_table == "eot" and fragments_per_frame != 1:
        raise InvalidArgumentError("the Extended Offset Table requires one fragment per frame")
    enc = EXPLICIT_LITTLE
    table_bytes = 8 * count
    eot_at = None
    if offset_table == "eot":
        # Both tables precede Pixel Data: reserve them now, fill them once offsets are known.
        fh.write(enc.element_header(EXTENDED_OFFSET_TABLE, "OV", table_bytes))
        eot_at = fh.tell()
        fh.write(bytes(table_bytes))
        fh.write(enc.element_header(EXTENDED_OFFSET_TABLE_LENGTHS, "OV", table_bytes))
        fh.write(bytes(table_bytes))
    fh.write(enc.element_header(PIXEL_DATA, "OB", UNDEFINED_LENGTH))
    bot_bytes = 4 * count if offset_table == "bot" else 0
    fh.write(enc.delimiter(ITEM, bot_bytes))
    bot_at = fh.tell()
    fh.write(bytes(bot_bytes))

    first_fragment = fh.tell()
    offsets: list[int] = []
    lengths: list[int] = []
    for data in encoded:
        offset = fh.tell() - first_fragment
        if offset_table == "bot" and offset > 0xFFFFFFFF:
            raise PixelDataTooLarge("Pixel Data exceeds 4 GiB, beyond the Basic Offset Table's "
                                    "32-bit offsets: use offset_table='eot'")
        if len(offsets) >= count:
            raise WriterError(f"expected {count} frames, got more")
        offsets.append(offset)
        fragments = [memoryview(data).cast("B")] if fragments_per_frame == 1 else \
            split_fragments(data, fragments_per_frame)
        for fragment in fragments:
            odd = len(fragment) % 2
            if len(fragment) + odd > MAX_LENGTH:
                raise PixelDataTooLarge(f"an encoded frame of {len(fragment)} bytes does not "
                                        "fit one item")
            fh.write(enc.delimiter(ITEM, len(fragment) + odd))
            fh.write(fragment)
            if odd:
                fh.write(b"\0")
        lengths.append(len(fragment) + odd)  # the frame's single fragment when EOT is used
    if len(offsets) != count:
        raise WriterError(f"expected {count} frames, got {len(offsets)}")
    fh.write(enc.delimiter(SEQUENCE_DELIMITER))

    end = fh.tell()
    if bot_bytes:
        fh.seek(bot_at)
        fh.write(struct.pack(f"<{count}I", *offsets))
    if eot_at is not None:
        fh.seek(eot_at)
        fh.write(struct.pack(f"<{count}Q", *offsets))
        fh.seek(eot_at + table_bytes + 12)  # skip the lengths element header
        fh.write(struct.pack(f"<{count}Q", *lengths))
    fh.seek(end)
    return EncapsulatedLayout(offsets, lengths, offset_table)


def split_fragments(data: bytes, count: int) -> list[memoryview]:
    """Split an encoded frame into ``count`` nearly equal fragments of even length (but the
    last). No fragment but the first starts with 0xFF: readers without an offset table find
    frame starts by looking for codec markers (JPEG FFD8, J2K FF4F) at fragment starts."""
    view = memoryview(data).cast("B")
    bounds = [0]
    for k in range(1, count):
        cut = max((k * len(view) // count) & ~1, bounds[-1] + 2)
        while cut < len(view) and view[cut] == 0xFF:
            cut += 2
        bounds.append(cut)
    if bounds[-1] >= len(view):
        raise InvalidArgumentError(f"an encoded frame of {len(view)} bytes cannot be split into "
                         f"{count} fragments")
    bounds.append(len(view))
    return [view[a:b] for a, b in itertools.pairwise(bounds)]
