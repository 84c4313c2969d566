"""Parse a DICOM header up to (not into) the pixel data and locate that element.

pydicom parses every element before the pixel data; we then read the pixel data
element's own header (tag, VR, length) ourselves, so opening a 2 GB file reads a
few kilobytes. Deflated files are inflated by streaming into a temporary file, so
memory stays bounded whatever the inflated size.
"""

from __future__ import annotations

import struct
import tempfile
import threading
import zlib
from dataclasses import dataclass, field
from typing import Any

from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import _read_file_meta_info, read_dataset, read_partial, read_preamble
from pydicom.tag import BaseTag
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    PrivateTransferSyntaxes,
)

from ..errors import DicomFormatError, SourceError
from ..io.reader import SourceReader
from ..io.source import ByteSource, FileObjectSource
from .pixel_spec import PIXEL_KEYWORDS
from .skip import skip_element

__all__ = ["Header", "PixelElement", "parse_header", "MAX_INFLATED_BYTES"]

#: Upper bound on the inflated size of a Deflated Explicit VR file (a deflate bomb
#: guard); the temporary file never grows beyond it.
MAX_INFLATED_BYTES = 8 << 30

_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


@dataclass(frozen=True)
class PixelElement:
    """Where the top-level pixel data element sits in the source."""

    tag: int
    keyword: str
    vr: str | None
    element_offset: int
    value_offset: int
    length: int | None  # None: undefined length (encapsulated)

    @property
    def encapsulated(self) -> bool:
        return self.length is None


#: Per-Frame Functional Groups Sequence: one item per frame, parsed on demand.
PER_FRAME_GROUPS = 0x52009230


@dataclass
class Header:
    """The parsed header: dataset without pixel data, encoding, pixel element.

    ``dataset`` lacks the Per-Frame Functional Groups Sequence when opening
    stepped over it (``deferred_offset`` says where it is);
    :meth:`complete_dataset` parses and inserts it on first use.
    """

    dataset: FileDataset
    transfer_syntax: UID
    is_little_endian: bool
    is_implicit_vr: bool
    pixel: PixelElement | None
    source: ByteSource  # where pixel bytes are read (an inflated copy for deflate)
    owned_sources: list[ByteSource] = field(default_factory=list)
    deferred_offset: int | None = None
    deferred_end: int | None = None  # where the deferred element ends
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def deferred_bytes(self) -> bytes | None:
        """The deferred Per-Frame Functional Groups element exactly as stored (tag to end),
        or None when there is none or it has been parsed into the dataset since."""
        with self._lock:
            start, end = self.deferred_offset, self.deferred_end
            if start is None or end is None:
                return None
            return self.source.read_exact(start, end - start, "the per-frame functional groups")

    def complete_dataset(self) -> FileDataset:
        """The dataset with every element before the pixel data, deferred ones parsed."""
        if self.deferred_offset is None:
            return self.dataset
        with self._lock:
            if self.deferred_offset is not None:
                reader = SourceReader(self.source, start=self.deferred_offset, block_size=1 << 20)
                only_this = lambda tag, vr, length: int(tag) != PER_FRAME_GROUPS  # noqa: E731
                part = _guard(
                    self.source.name, read_dataset, reader, self.is_implicit_vr, self.is_little_endian, stop_when=only_this
                )
                if PER_FRAME_GROUPS in part:
                    self.dataset[PER_FRAME_GROUPS] = part[PER_FRAME_GROUPS]
                self.deferred_offset = self.deferred_end = None
        return self.dataset


def _at_pixel_data(tag: BaseTag, vr: str | None, length: int) -> bool:
    return int(tag) in PIXEL_KEYWORDS


def _at_pixel_data_or_frame_groups(tag: BaseTag, vr: str | None, length: int) -> bool:
    return int(tag) in PIXEL_KEYWORDS or int(tag) == PER_FRAME_GROUPS


def _step_over_frame_groups(
    ds: Dataset, reader: SourceReader, stop: int, implicit: bool, little: bool
) -> tuple[int, int | None, int | None]:
    """If parsing stopped at the per-frame groups, skip them and parse the rest.

    Returns the new stop offset (at the pixel data or the end) and where the
    deferred sequence starts and ends (None if there was none).
    """
    source = reader.source
    if stop + 4 > source.size:
        return stop, None, None
    endian = "<" if little else ">"
    reader.seek(stop)
    group, elem = struct.unpack(endian + "HH", reader.read(4))
    if (group << 16 | elem) != PER_FRAME_GROUPS:
        return stop, None, None
    end = skip_element(reader, stop, implicit=implicit, little=little)
    reader.seek(end)
    rest = _guard(source.name, read_dataset, reader, implicit, little, stop_when=_at_pixel_data)
    _check_complete(rest, source.name)
    for tag in rest.keys():  # noqa: SIM118 - a Dataset iterates over elements; keys() gives tags without converting values
        # Copied raw, as the elements before the groups are: converting here would raise
        # pydicom's untyped errors (NotImplementedError for an unknown VR, TypeError, ...)
        # at open for an element nobody asked for; dataset_value types them on access.
        ds[tag] = rest.get_item(tag, keep_deferred=True)
    return reader.tell(), stop, end


def _read_pixel_element(source: ByteSource, offset: int, little: bool, implicit: bool) -> PixelElement | None:
    """Decode the element header at ``offset`` if it is a pixel data element."""
    head = source.read_at(offset, 12)
    if len(head) < 8:
        return None
    endian = "<" if little else ">"
    group, elem = struct.unpack(endian + "HH", head[:4])
    tag = group << 16 | elem
    if tag not in PIXEL_KEYWORDS:
        return None
    vr: str | None = None
    vr_bytes = head[4:6]
    if implicit or not (vr_bytes.isalpha() and vr_bytes.isupper()):  # a VR is two ASCII capitals
        (length,) = struct.unpack(endian + "L", head[4:8])
        value_offset = offset + 8
    elif vr_bytes in _LONG_VRS:
        if len(head) < 12:
            raise DicomFormatError(f"{source.name}: pixel data element header at {offset} is truncated")
        (length,) = struct.unpack(endian + "L", head[8:12])
        vr = vr_bytes.decode("ascii")
        value_offset = offset + 12
    else:
        (length,) = struct.unpack(endian + "H", head[6:8])
        vr = vr_bytes.decode("ascii")
        value_offset = offset + 8
    return PixelElement(
        tag=tag,
        keyword=PIXEL_KEYWORDS[tag],
        vr=vr,
        element_offset=offset,
        value_offset=value_offset,
        length=None if length == _UNDEFINED else length,
    )


def _inflate_to_tempfile(source: ByteSource, start: int, limit: int) -> ByteSource:
    """Stream-inflate ``source[start:]`` (raw deflate) into a temporary file."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    tmp = tempfile.TemporaryFile(prefix="dcmstream-inflate-")  # noqa: SIM115 - the returned source owns and closes it
    written = 0
    chunk = 1 << 20
    pos = start
    try:
        while pos < source.size and not inflater.eof:
            block = source.read_at(pos, chunk)
            pos += len(block)
            data = inflater.decompress(block, chunk * 4)
            while True:
                written += len(data)
                if written > limit:
                    raise DicomFormatError(
                        f"{source.name}: deflated data inflates beyond {limit} bytes (refused)"
                    )
                tmp.write(data)
                if not inflater.unconsumed_tail:
                    break
                data = inflater.decompress(inflater.unconsumed_tail, chunk * 4)
        tail = inflater.flush()
        tmp.write(tail)
    except zlib.error as exc:
        tmp.close()
        raise DicomFormatError(f"{source.name}: deflated dataset is corrupt ({exc})") from exc
    except BaseException:
        tmp.close()
        raise
    tmp.flush()
    # The source owns the temporary file: closing it deletes the file (not left to the GC).
    return FileObjectSource(tmp, name=f"{source.name} (inflated)", owned=True)


def _character_set(dataset: Dataset) -> str | list[str]:
    """The encodings of a top-level dataset's text, from (0008,0005) (pydicom's private
    ``Dataset._character_set``, through public names)."""
    elem = dataset.get(BaseTag(0x00080005))
    return default_encoding if elem is None else convert_encodings(elem.value)


def _guard(name: str, func: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a pydicom parse step and turn whatever it raises into DicomFormatError."""
    try:
        return func(*args, **kwargs)
    except (DicomFormatError, SourceError):
        raise
    except RecursionError as exc:
        raise DicomFormatError(f"{name}: sequences are nested too deeply") from exc
    except InvalidDicomError as exc:
        raise DicomFormatError(f"{name}: not a DICOM file ({exc})") from exc
    except MemoryError as exc:
        raise DicomFormatError(f"{name}: an element claims more memory than is available") from exc
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on bad input
        raise DicomFormatError(f"{name}: cannot parse header ({type(exc).__name__}: {exc})") from exc


def _check_complete(ds: Dataset, name: str) -> None:
    """Refuse a header pydicom only parsed by reading past the end of the file.

    With ``force=True`` pydicom accepts an element whose value the file ends
    inside, and that is also what text, images or random bytes parse into: one
    element whose "length" is a few hundred megabytes. A file that ends inside
    an element's value is truncated, whatever else it is.
    """
    for tag in ds.keys():  # noqa: SIM118 - a Dataset iterates over elements; keys() gives tags without converting values
        raw = ds.get_item(tag, keep_deferred=True)  # no value conversion
        if isinstance(raw, RawDataElement) and raw.length != _UNDEFINED and raw.value is not None and len(raw.value) < raw.length:
            raise DicomFormatError(
                f"{name}: the file ends inside element {BaseTag(tag)} "
                f"({len(raw.value)} of {raw.length} bytes present; truncated, or not DICOM)"
            )


_META_PEEK = 16384  # bytes read at once for the file meta (a few hundred, usually)
_TAG_VR = struct.Struct("<HH2s")


def _plain_file_meta(reader: SourceReader) -> tuple[bytes, FileMetaDataset, int] | None:
    """(preamble, file meta, where the dataset starts) of the usual Part 10 file, without
    pydicom's element reader: a 128-byte preamble, "DICM", then group 0002 in Explicit VR
    Little Endian with defined lengths, all in the first 16 KiB. The values stay raw
    (converted on access, as pydicom's own would). None for anything else, which pydicom
    reads with its repairs and warnings. A third of the time to open a small file went to
    pydicom's general-purpose reading of these few elements."""
    reader.seek(0)
    head = reader.peek(_META_PEEK)  # the dataset that follows is read from this buffer
    if len(head) < 140 or head[128:132] != b"DICM":
        return None
    raw: dict[BaseTag, DataElement | RawDataElement] = {}
    pos, end = 132, len(head)
    while True:
        if pos + 8 > end:
            return None  # the meta goes on past the peek (or the file ends in it)
        group, elem, vr = _TAG_VR.unpack_from(head, pos)
        if group != 2:
            break
        if not (vr.isalpha() and vr.isupper()):
            return None  # implicit VR file meta: non-conformant, pydicom's repair
        if vr in _LONG_VRS:
            if pos + 12 > end:
                return None
            (length,) = struct.unpack_from("<L", head, pos + 8)
            start = pos + 12
        else:
            (length,) = struct.unpack_from("<H", head, pos + 6)
            start = pos + 8
        if length == _UNDEFINED or start + length > end:
            return None
        tag = BaseTag(group << 16 | elem)
        raw[tag] = RawDataElement(tag, vr.decode("ascii"), length, head[start : start + length], start, False, True)
        pos = start + length
    if not raw:
        return None
    meta = FileMetaDataset(raw)
    meta.set_original_encoding(False, True, "iso8859")
    return head[:128], meta, pos


def parse_header(source: ByteSource) -> Header:
    """Parse ``source`` up to its top-level pixel data element.

    Raises :class:`DicomFormatError` when the bytes are not a DICOM dataset.
    A dataset without pixel data parses fine and has ``pixel=None``.
    """
    name = source.name
    reader = SourceReader(source)
    # Peek at the file meta first: a deflated dataset must not be handed to
    # pydicom, which would inflate all of it in memory.
    fast = _plain_file_meta(reader)
    if fast is not None:
        preamble, meta, body_start = fast
        reader.seek(body_start)
    else:
        preamble = _guard(name, read_preamble, reader, True)
        meta = _guard(name, _read_file_meta_info, reader)
        body_start = reader.tell()
    ts = _guard(name, meta.get, "TransferSyntaxUID")  # converted on access: may raise
    owned: list[ByteSource] = []
    if ts == DeflatedExplicitVRLittleEndian:
        pixel_source = _inflate_to_tempfile(source, body_start, MAX_INFLATED_BYTES)
        owned.append(pixel_source)
        inflated = SourceReader(pixel_source)
        dataset = _guard(name, read_dataset, inflated, False, True, stop_when=_at_pixel_data_or_frame_groups)
        ds = FileDataset(name, dataset, preamble, meta, False, True)
        charset = _guard(name, _character_set, dataset)  # converts (0008,0005)
        ds.set_original_encoding(False, True, charset)
        stop = inflated.tell()
        body_reader = inflated
    elif ts is not None and ts not in PrivateTransferSyntaxes and body_start < source.size:
        # The usual file: the meta named the encoding. Read the body from here, as
        # read_partial would after parsing the meta a second time (a third of the
        # cost of opening a small file).
        pixel_source = source
        implicit_ts = ts == ImplicitVRLittleEndian
        little_ts = ts != ExplicitVRBigEndian
        dataset = _guard(name, read_dataset, reader, implicit_ts, little_ts, stop_when=_at_pixel_data_or_frame_groups)
        ds = FileDataset(name, dataset, preamble, meta, implicit_ts, little_ts)
        charset = _guard(name, _character_set, dataset)
        ds.set_original_encoding(implicit_ts, little_ts, charset)
        stop = reader.tell()
        body_reader = reader
    else:
        # No file meta (or no transfer syntax in it): pydicom guesses the encoding.
        pixel_source = source
        reader.seek(0)
        ds = _guard(name, read_partial, reader, stop_when=_at_pixel_data_or_frame_groups, force=True)
        stop = reader.tell()
        body_reader = reader
        if len(ds) == 0 and not ds.file_meta:
            raise DicomFormatError(f"{name}: no DICOM elements found (not a DICOM file?)")
        if not ds.file_meta and any(tag >> 16 == 0 for tag in ds.keys()):  # noqa: SIM118 - tags, not elements
            # Group 0000 is the DIMSE command set, never part of a stored dataset;
            # zero-filled or random bytes read as (0000,xxxx) elements.
            raise DicomFormatError(f"{name}: no file meta and a command group (0000,xxxx) element: not a DICOM dataset")
    _check_complete(ds.file_meta, name)
    _check_complete(ds, name)

    little = bool(ds.original_encoding[1]) if ds.original_encoding[1] is not None else True
    implicit = bool(ds.original_encoding[0]) if ds.original_encoding[0] is not None else True
    if ts is None:
        # No file meta: pydicom guessed the encoding; name the matching syntax.
        ts = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    ts = UID(str(ts))
    stop, deferred, deferred_end = _step_over_frame_groups(ds, body_reader, stop, implicit, little)
    pixel = _read_pixel_element(pixel_source, stop, little, implicit) if stop < pixel_source.size else None
    return Header(
        dataset=ds,
        transfer_syntax=ts,
        is_little_endian=little,
        is_implicit_vr=implicit,
        pixel=pixel,
        source=pixel_source,
        owned_sources=owned,
        deferred_offset=deferred,
        deferred_end=deferred_end,
    )
