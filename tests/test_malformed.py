"""Bad input only ever produces typed errors.

Whatever the bytes, ``dcmstream.open`` and ``Instance.frame`` either work or raise
a :class:`dcmstream.DcmstreamError` subclass (IndexError/TypeError for bad
arguments): never a hang, a crash, another exception type, or an allocation sized
by what the file claims rather than by what it holds.

The inputs are real files (pydicom's test files and pydicom-data), truncated at
every region, with lengths/offsets/attributes overwritten, plus hand-built
hostile files and random mutations (hypothesis). Every case runs under a SIGALRM
deadline, so a hang fails fast instead of stalling the suite.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import random
import signal
import struct
import sys
import tempfile
import time
import tracemalloc
import warnings
import zlib
from collections.abc import Callable, Iterator

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from pydicom.dataelem import RawDataElement
from pydicom.encaps import encapsulate, encapsulate_extended
from pydicom.tag import Tag
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

import dcmstream
from dcmstream import BytesSource, DcmstreamError, DecodeError, DicomFormatError, FrameIndexError, SourceError
from dcmstream.errors import InvalidArgumentError
from dcmstream.index import header as header_module

MB = 1 << 20
DEADLINE = 10.0  # seconds any single open + read may take before it counts as a hang


# -- helpers ------------------------------------------------------------------------


class Hang(BaseException):
    """Raised by the deadline alarm. A BaseException, so no ``except Exception`` in
    the code under test can turn a hang into an ordinary typed error."""


@contextlib.contextmanager
def deadline(seconds: float = DEADLINE) -> Iterator[None]:
    def expire(signum: int, frame: object) -> None:
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Ignore the warnings bad input provokes, except numpy's overflow warnings:
    those mean offset arithmetic wrapped around, which is a bug."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", RuntimeWarning)
        yield


@contextlib.contextmanager
def peak_allocation() -> Iterator[list[int]]:
    """Track Python/numpy allocations; the list receives the peak in bytes."""
    result: list[int] = []
    tracemalloc.start()
    try:
        yield result
    finally:
        result.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


def load(name: str) -> bytes:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} is not in this pydicom/pydicom-data version")
    with open(path, "rb") as f:
        return f.read()


def open_(data: bytes, strict: bool = True) -> dcmstream.Instance:
    return dcmstream.open(BytesSource(data), strict=strict, cache=False)


def originals(data: bytes) -> list[np.ndarray]:
    with quiet(), open_(data) as inst:
        return [inst.frame(i) for i in range(len(inst))]


def exercise(
    data: bytes,
    strict: bool = True,
    *,
    max_frames: int | None = None,
    expected: list[np.ndarray] | None = None,
    as_bytes: bool = False,
) -> str:
    """Open ``data`` and decode its frames, allowing only typed errors.

    Returns "rejected" (open raised a DcmstreamError), "no pixels" or "opened".
    Every frame must decode to the declared shape or raise a DcmstreamError; with
    ``expected`` (the intact file's frames) a frame that decodes must also equal
    the original.
    """
    with deadline(), quiet():
        try:
            inst = dcmstream.open(data if as_bytes else BytesSource(data), strict=strict, cache=False)
        except DcmstreamError:
            return "rejected"
        with inst:
            if not inst.has_pixels:
                assert len(inst) == 0
                return "no pixels"
            shape = inst.pixel_spec.shape
            n = len(inst)
            assert 1 <= n <= inst.pixel_spec.number_of_frames
            for i in range(n if max_frames is None else min(n, max_frames)):
                try:
                    arr = inst.frame(i)
                except DcmstreamError:
                    continue
                assert arr.shape == shape, f"frame {i}: shape {arr.shape}, declared {shape}"
                if expected is not None and i < len(expected):
                    assert np.array_equal(arr, expected[i]), f"frame {i} decodes to different pixels"
    return "opened"


def patched(data: bytes, offset: int, new: bytes) -> bytes:
    assert offset >= 0 and offset + len(new) <= len(data)
    return data[:offset] + new + data[offset + len(new) :]


def rewritten(name: str, **elements: object) -> bytes:
    """``name`` re-saved with elements changed: a value, None to delete, or a
    (VR, raw bytes) pair written verbatim (no validation, any VR)."""
    ds = pydicom.dcmread(get_testdata_file(name))
    for keyword, value in elements.items():
        tag = Tag(keyword)
        if value is None:
            del ds[tag]
        elif isinstance(value, tuple):
            vr, raw = value
            ds[tag] = RawDataElement(tag, vr, len(raw), raw, 0, ds.is_implicit_VR, ds.is_little_endian)
        else:
            setattr(ds, keyword, value)
    buf = io.BytesIO()
    with quiet():
        ds.save_as(buf)
    return buf.getvalue()


def with_syntax(name: str, uid: bytes, vr: bytes = b"UI") -> bytes:
    """``name`` with its file meta Transfer Syntax UID element replaced, bytes-wise
    (pydicom refuses to write most of these)."""
    data = load(name)
    at = data.index(b"\x02\x00\x10\x00UI", 132)
    (old_length,) = struct.unpack_from("<H", data, at + 6)
    value = uid + b"\0" * (len(uid) % 2)
    element = b"\x02\x00\x10\x00" + vr + struct.pack("<H", len(value)) + value
    (group_length,) = struct.unpack_from("<L", data, 140)  # (0002,0000) UL, right after DICM
    data = patched(data, 140, struct.pack("<L", group_length + len(value) - old_length))
    return data[:at] + element + data[at + 8 + old_length :]


def layout(data: bytes) -> tuple[dcmstream.index.PixelElement, list[tuple[int, int]], bool]:
    """(pixel element, frame spans, wrapped) of an intact file."""
    with quiet(), open_(data) as inst:
        spans = [inst.frame_index.span(i) for i in range(len(inst))]
        return inst.pixel_element, spans, inst.frame_index.wrapped


def fragments(data: bytes) -> list[tuple[int, int]]:
    """(item header offset, value length) of every fragment after the BOT."""
    pixel, _, _ = layout(data)
    pos = pixel.value_offset
    _, _, bot_length = struct.unpack_from("<HHL", data, pos)
    pos += 8 + bot_length
    items = []
    while pos + 8 <= len(data):
        group, elem, length = struct.unpack_from("<HHL", data, pos)
        if (group, elem) != (0xFFFE, 0xE000):
            break
        items.append((pos, length))
        pos += 8 + length
    return items


def encoded_frames(name: str) -> list[bytes]:
    with quiet(), open_(load(name)) as inst:
        return [inst.encoded_frame(i) for i in range(len(inst))]


def reencapsulated(name: str, frames: list[bytes], *, extended: bool = False, **kwargs: object) -> bytes:
    """``name`` with its pixel data re-encapsulated from ``frames``."""
    ds = pydicom.dcmread(get_testdata_file(name))
    if extended:
        ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(frames)
    else:
        ds.PixelData = encapsulate(frames, **kwargs)
    ds["PixelData"].VR = "OB"
    buf = io.BytesIO()
    with quiet():
        ds.save_as(buf)
    return buf.getvalue()


J2K = "emri_small_jpeg_2k_lossless.dcm"  # 10 frames, one fragment each, no BOT
JLS = "emri_small_jpeg_ls_lossless.dcm"  # 10 frames, one fragment each, no BOT
RLE10 = "emri_small_RLE.dcm"  # 10 frames with a BOT


def eot_file() -> bytes:
    """J2K frames with an Extended Offset Table (no corpus file carries one)."""
    return reencapsulated(J2K, encoded_frames(J2K), extended=True)


def markers_file() -> bytes:
    """JPEG-LS frames in two fragments each, no offset table: split by SOI markers."""
    return reencapsulated(JLS, encoded_frames(JLS), fragments_per_frame=2, has_bot=False)


def test_synthesized_files_use_the_intended_index() -> None:
    with quiet():
        with open_(eot_file()) as inst:
            assert inst.frame_index.kind == "eot"
        with open_(markers_file()) as inst:
            assert inst.frame_index.kind == "markers"


# -- 1. truncation at every region -----------------------------------------------------

TRUNCATED = [
    "CT_small.dcm",  # native, one frame
    "emri_small.dcm",  # native, 10 frames
    "MR_small_bigendian.dcm",  # Explicit VR Big Endian
    "SC_rgb_small_odd_big_endian.dcm",  # big endian 8-bit RGB stored as OW (byte-swapped pairs)
    "liver_1frame.dcm",  # native 1-bit
    "SC_rgb_small_odd_jpeg.dcm",  # JPEG baseline with a BOT
    "JPEGLSNearLossless_08.dcm",  # JPEG-LS with a BOT
    "SC_rgb_rle_2frame.dcm",  # RLE, 2 frames, BOT
    RLE10,  # RLE, 10 frames, BOT
    J2K,  # J2K, 10 frames, no BOT
    "image_dfl.dcm",  # Deflated Explicit VR Little Endian
]


def cut_points(data: bytes) -> list[int]:
    """Where to truncate: the header region at a step; every byte of the pixel
    element header, the BOT item and the first item header; around every item
    header and inside every frame; the last bytes."""
    size = len(data)
    with quiet(), open_(data) as inst:
        if inst.transfer_syntax == DeflatedExplicitVRLittleEndian:
            # Offsets are in the inflated copy: cut the compressed stream everywhere.
            return list(range(0, size, 3)) + [size - 1]
        pixel = inst.pixel_element
        points = set(range(0, min(size, 2048), 5))
        points.update(range(pixel.element_offset, pixel.value_offset + 8))
        if pixel.encapsulated:
            (bot_length,) = struct.unpack_from("<L", data, pixel.value_offset + 4)
            end_of_bot = pixel.value_offset + 8 + bot_length
            points.update(range(pixel.value_offset + 8, end_of_bot, max(1, bot_length // 32)))
            points.update(range(end_of_bot, end_of_bot + 12))
        for offset, length in (inst.frame_index.span(i) for i in range(len(inst))):
            points.update({offset - 8, offset - 4, offset - 1, offset, offset + 1, offset + 4, offset + 8})
            points.update({offset + length // 3, offset + length // 2, offset + length - 1, offset + length})
    points.update({size - 8, size - 2, size - 1})
    return sorted(p for p in points if 0 <= p < size)


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "lenient"])
@pytest.mark.parametrize("name", TRUNCATED)
def test_truncation_anywhere_gives_typed_errors(name: str, strict: bool) -> None:
    data = load(name)
    expected = originals(data)
    outcomes = set()
    for cut in cut_points(data):
        # Frames that decode after a truncation are complete ones: they must be
        # pixel-identical to the intact file's.
        outcomes.add(exercise(data[:cut], strict, expected=expected, as_bytes=cut % 2 == 0))
    assert "rejected" in outcomes


@pytest.mark.parametrize("name", ["emri_small.dcm", "liver.dcm", J2K])
def test_lenient_open_keeps_the_complete_frames(name: str) -> None:
    data = load(name)
    expected = originals(data)
    _, spans, _ = layout(data)
    last_offset = spans[-1][0]
    short = data[: last_offset + 1]  # the last frame is cut, the others are whole
    with quiet():
        with pytest.raises(DicomFormatError):
            open_(short, strict=True)
        if name == J2K:
            # An item header claiming bytes the file does not hold is an error in
            # both modes: the walk cannot tell where the following frames are.
            with pytest.raises(FrameIndexError):
                open_(short, strict=False)
            return
        with open_(short, strict=False) as inst:
            assert len(inst) == len(expected) - 1
            for i in range(len(inst)):
                assert np.array_equal(inst.frame(i), expected[i])


# -- 2. corrupted lengths, offsets and attributes --------------------------------------


def _pixel_length_patch(name: str, value: int | None = None, delta: int = 0) -> bytes:
    data = load(name)
    pixel, _, _ = layout(data)
    little = name != "MR_small_bigendian.dcm"
    at = pixel.value_offset - 4
    length = value if value is not None else pixel.length + delta
    return patched(data, at, struct.pack("<L" if little else ">L", length & 0xFFFFFFFF))


def _bot_patch(entry: int, value: Callable[[list[int]], int]) -> bytes:
    data = load(RLE10)
    pixel, _, _ = layout(data)
    (bot_length,) = struct.unpack_from("<L", data, pixel.value_offset + 4)
    table = list(struct.unpack_from(f"<{bot_length // 4}L", data, pixel.value_offset + 8))
    return patched(data, pixel.value_offset + 8 + 4 * entry, struct.pack("<L", value(table) & 0xFFFFFFFF))


def _bot_length_patch(value: int) -> bytes:
    data = load(RLE10)
    pixel, _, _ = layout(data)
    return patched(data, pixel.value_offset + 4, struct.pack("<L", value))


def _item_patch(name: str, fragment: int, *, tag: tuple[int, int] | None = None, length: Callable[[int], int] | None = None) -> bytes:
    data = load(name)
    offset, value_length = fragments(data)[fragment]
    if tag is not None:
        data = patched(data, offset, struct.pack("<HH", *tag))
    if length is not None:
        data = patched(data, offset + 4, struct.pack("<L", length(value_length) & 0xFFFFFFFF))
    return data


def _eot_patch(offsets: Callable[[list[int]], list[int]] | None = None, lengths: Callable[[list[int]], list[int]] | None = None) -> bytes:
    frames = encoded_frames(J2K)
    ds = pydicom.dcmread(get_testdata_file(J2K))
    pixel_data, table, table_lengths = encapsulate_extended(frames)
    rel = list(struct.unpack(f"<{len(table) // 8}Q", table))
    sizes = list(struct.unpack(f"<{len(table_lengths) // 8}Q", table_lengths))
    if offsets is not None:
        rel = offsets(rel)
    if lengths is not None:
        sizes = lengths(sizes)
    ds.PixelData = pixel_data
    ds["PixelData"].VR = "OB"
    ds.ExtendedOffsetTable = struct.pack(f"<{len(rel)}Q", *[v & (2**64 - 1) for v in rel])
    ds.ExtendedOffsetTableLengths = struct.pack(f"<{len(sizes)}Q", *[v & (2**64 - 1) for v in sizes])
    buf = io.BytesIO()
    with quiet():
        ds.save_as(buf)
    return buf.getvalue()


def _eot_raw(vr: str, raw: bytes) -> bytes:
    """An EOT element with a corrupt VR (its value is then not bytes)."""
    ds = pydicom.dcmread(io.BytesIO(eot_file()))
    tag = Tag("ExtendedOffsetTable")
    ds[tag] = RawDataElement(tag, vr, len(raw), raw, 0, False, True)
    buf = io.BytesIO()
    with quiet():
        ds.save_as(buf)
    return buf.getvalue()


INF = struct.pack("<d", float("inf"))

# (id, builder, what strict opening must raise: an error class, or None when the
# file may open, in which case every frame must decode right or raise typed)
CORRUPTIONS: list[tuple[str, Callable[[], bytes], type[Exception] | None]] = [
    # pixel data element length
    ("native-length-undefined", lambda: _pixel_length_patch("CT_small.dcm", 0xFFFFFFFF), DicomFormatError),
    ("native-length-huge", lambda: _pixel_length_patch("CT_small.dcm", 0xFFFFFFF0), None),
    ("native-length-odd", lambda: _pixel_length_patch("CT_small.dcm", 3), DicomFormatError),
    ("native-length-short", lambda: _pixel_length_patch("emri_small.dcm", delta=-1), DicomFormatError),
    ("native-length-past-eof", lambda: _pixel_length_patch("emri_small.dcm", delta=1000), None),
    ("bigendian-length-undefined", lambda: _pixel_length_patch("MR_small_bigendian.dcm", 0xFFFFFFFF), DicomFormatError),
    ("bigendian-length-zero", lambda: _pixel_length_patch("MR_small_bigendian.dcm", 0), DicomFormatError),
    ("encapsulated-length-defined", lambda: _pixel_length_patch(J2K, 1000), DicomFormatError),
    # Basic Offset Table entries and length
    ("bot-entry-undefined", lambda: _bot_patch(3, lambda t: 0xFFFFFFFF), None),
    ("bot-entry-past-eof", lambda: _bot_patch(9, lambda t: t[9] + 10**6), None),
    ("bot-entry-odd", lambda: _bot_patch(5, lambda t: t[5] + 1), None),
    ("bot-entry-first-not-zero", lambda: _bot_patch(0, lambda t: 8), None),
    ("bot-entry-not-increasing", lambda: _bot_patch(4, lambda t: t[3]), None),
    ("bot-entry-inside-item", lambda: _bot_patch(9, lambda t: t[9] + 2), None),
    ("bot-length-undefined", lambda: _bot_length_patch(0xFFFFFFFF), FrameIndexError),
    ("bot-length-odd", lambda: _bot_length_patch(3), FrameIndexError),
    ("bot-length-huge", lambda: _bot_length_patch(0x7FFFFFF0), FrameIndexError),
    ("bot-length-zero", lambda: _bot_length_patch(0), FrameIndexError),
    # item tags and lengths
    ("item-tag-delimiter", lambda: _item_patch(J2K, 3, tag=(0xFFFE, 0xE0DD)), FrameIndexError),
    ("item-tag-garbage", lambda: _item_patch(J2K, 3, tag=(0x0008, 0x0010)), FrameIndexError),
    ("item-length-undefined", lambda: _item_patch(J2K, 4, length=lambda n: 0xFFFFFFFF), FrameIndexError),
    ("item-length-huge", lambda: _item_patch(J2K, 4, length=lambda n: 0x7FFFFFFF), FrameIndexError),
    ("item-length-odd", lambda: _item_patch(J2K, 4, length=lambda n: n + 1), FrameIndexError),
    ("item-length-zero", lambda: _item_patch(J2K, 4, length=lambda n: 0), FrameIndexError),
    ("item-length-past-eof", lambda: _item_patch(J2K, 9, length=lambda n: n + 9), FrameIndexError),
    ("bot-item-tag-garbage", lambda: _item_patch(RLE10, 0, tag=(0x1234, 0x5678)), None),
    ("bot-item-length-odd", lambda: _item_patch(RLE10, 2, length=lambda n: n + 1), None),
    ("markers-item-length-zero", lambda: (lambda d: patched(d, fragments(d)[5][0] + 4, b"\0\0\0\0"))(markers_file()), FrameIndexError),
    # Number of Frames
    ("frames-1e9", lambda: rewritten("emri_small.dcm", NumberOfFrames=10**9), DicomFormatError),
    ("frames-zero", lambda: rewritten("emri_small.dcm", NumberOfFrames=0), None),
    ("frames-negative", lambda: rewritten("emri_small.dcm", NumberOfFrames=("IS", b"-5")), DicomFormatError),
    ("frames-not-a-number", lambda: rewritten("emri_small.dcm", NumberOfFrames=("IS", b"abc ")), DicomFormatError),
    ("frames-fraction", lambda: rewritten("emri_small.dcm", NumberOfFrames=("IS", b"1.5 ")), DicomFormatError),
    ("frames-multi-valued", lambda: rewritten("emri_small.dcm", NumberOfFrames=("IS", b"1\\2 ")), DicomFormatError),
    ("frames-more-than-fragments", lambda: rewritten(J2K, NumberOfFrames=11), FrameIndexError),
    ("frames-1e9-encapsulated", lambda: rewritten(J2K, NumberOfFrames=10**9), DicomFormatError),
    # Image Pixel attributes
    ("rows-zero", lambda: rewritten("CT_small.dcm", Rows=0), DicomFormatError),
    ("rows-65535", lambda: rewritten("CT_small.dcm", Rows=65535), DicomFormatError),
    ("columns-65535", lambda: rewritten("emri_small.dcm", Columns=65535), DicomFormatError),
    ("rows-missing", lambda: rewritten("CT_small.dcm", Rows=None), DicomFormatError),
    ("rows-unknown-vr", lambda: rewritten("CT_small.dcm", Rows=("QQ", b"\x00\x02")), DicomFormatError),
    ("rows-infinite", lambda: rewritten("CT_small.dcm", Rows=("FD", INF)), DicomFormatError),
    ("rows-text", lambda: rewritten("CT_small.dcm", Rows=("LO", b"many")), DicomFormatError),
    ("rows-65535-j2k", lambda: rewritten(J2K, Rows=65535, Columns=65535), None),
    ("bits-allocated-0", lambda: rewritten("CT_small.dcm", BitsAllocated=0), DicomFormatError),
    ("bits-allocated-7", lambda: rewritten("CT_small.dcm", BitsAllocated=7), DicomFormatError),
    ("bits-allocated-12", lambda: rewritten("CT_small.dcm", BitsAllocated=12), DicomFormatError),
    ("bits-allocated-128", lambda: rewritten("CT_small.dcm", BitsAllocated=128), DicomFormatError),
    ("bits-allocated-8-on-j2k", lambda: rewritten(J2K, BitsAllocated=8, BitsStored=8), None),
    ("bits-stored-17", lambda: rewritten("CT_small.dcm", BitsStored=17), DicomFormatError),
    ("pixel-representation-2", lambda: rewritten("CT_small.dcm", PixelRepresentation=2), DicomFormatError),
    ("samples-2", lambda: rewritten("CT_small.dcm", SamplesPerPixel=2), DicomFormatError),
    ("samples-0", lambda: rewritten("CT_small.dcm", SamplesPerPixel=0), DicomFormatError),
    ("samples-3-on-rle", lambda: rewritten(RLE10, SamplesPerPixel=3, PhotometricInterpretation="RGB"), None),
    ("photometric-ybr422-native", lambda: rewritten("CT_small.dcm", PhotometricInterpretation="YBR_FULL_422"), None),
    ("planar-7", lambda: rewritten("SC_rgb_2frame.dcm", PlanarConfiguration=7), DicomFormatError),
    # Transfer Syntax UID
    ("syntax-not-a-transfer-syntax", lambda: with_syntax("CT_small.dcm", b"1.2.840.10008.5.1.4.1.1.2"), DicomFormatError),
    ("syntax-unknown-vr", lambda: with_syntax("CT_small.dcm", b"1.2.840.10008.1.2.1", vr=b"QQ"), DicomFormatError),
    ("syntax-not-a-uid", lambda: with_syntax("CT_small.dcm", b"not/a/uid"), DicomFormatError),
    ("syntax-native-on-encapsulated", lambda: with_syntax(J2K, b"1.2.840.10008.1.2.1"), DicomFormatError),
    ("syntax-encapsulated-on-native", lambda: with_syntax("CT_small.dcm", b"1.2.840.10008.1.2.4.90"), DicomFormatError),
    ("syntax-unknown-on-encapsulated", lambda: with_syntax(J2K, b"1.2.3.4.5.6"), DcmstreamError),
    # Extended Offset Table
    ("eot-too-few-entries", lambda: _eot_patch(offsets=lambda r: r[:-1], lengths=lambda s: s[:-1]), None),
    ("eot-lengths-mismatch", lambda: _eot_patch(lengths=lambda s: s[:-1]), None),
    ("eot-offset-past-eof", lambda: _eot_patch(offsets=lambda r: r[:-1] + [10**9]), None),
    ("eot-offset-near-2**63", lambda: _eot_patch(offsets=lambda r: [2**63 - 16] + r[1:]), None),
    ("eot-offset-2**64-1", lambda: _eot_patch(offsets=lambda r: r[:3] + [2**64 - 1] + r[4:]), None),
    ("eot-not-increasing", lambda: _eot_patch(offsets=lambda r: [r[0], r[2], r[1]] + r[3:]), None),
    ("eot-not-at-items", lambda: _eot_patch(offsets=lambda r: [v + 2 for v in r]), None),
    ("eot-lengths-huge", lambda: _eot_patch(lengths=lambda s: [2**62] * len(s)), None),
    ("eot-lengths-zero", lambda: _eot_patch(lengths=lambda s: [0] * len(s)), None),
    ("eot-lengths-too-long", lambda: _eot_patch(lengths=lambda s: [v + 100 for v in s]), None),
    ("eot-as-integer", lambda: _eot_raw("UL", struct.pack("<L", 0xFFFFFFF0)), None),
    ("eot-as-text", lambda: _eot_raw("LO", b"offsets!"), None),
    ("eot-unknown-vr", lambda: _eot_raw("QQ", b"\0" * 8), DicomFormatError),
]


@pytest.mark.parametrize("builder, error", [c[1:] for c in CORRUPTIONS], ids=[c[0] for c in CORRUPTIONS])
def test_corrupted_lengths_offsets_and_attributes(builder: Callable[[], bytes], error: type[Exception] | None) -> None:
    data = builder()
    if error is not None:
        with deadline(), quiet(), pytest.raises(error):
            open_(data)
    for strict in (True, False):
        exercise(data, strict)


@pytest.mark.parametrize(
    "builder",
    [
        lambda: _bot_patch(3, lambda t: 0xFFFFFFFF),
        lambda: _bot_patch(9, lambda t: t[9] + 10**6),
        lambda: _bot_patch(0, lambda t: 8),
        lambda: _bot_patch(4, lambda t: t[3]),
    ],
    ids=["undefined", "past-eof", "first-not-zero", "not-increasing"],
)
def test_an_inconsistent_bot_falls_back_to_the_item_walk(builder: Callable[[], bytes]) -> None:
    expected = originals(load(RLE10))
    with quiet(), open_(builder()) as inst:
        assert inst.frame_index.kind == "fragments"
        for i in range(len(inst)):
            assert np.array_equal(inst.frame(i), expected[i])


@pytest.mark.parametrize(
    "builder",
    [c[1] for c in CORRUPTIONS if c[0].startswith("eot-") and c[2] is None],
    ids=[c[0] for c in CORRUPTIONS if c[0].startswith("eot-") and c[2] is None],
)
def test_a_wrong_eot_is_ignored_or_gives_typed_frame_errors(builder: Callable[[], bytes]) -> None:
    expected = originals(load(J2K))
    with quiet(), open_(builder()) as inst:
        if inst.frame_index.kind != "eot":
            # Ignored: the item walk finds the frames.
            assert [np.array_equal(inst.frame(i), expected[i]) for i in range(len(inst))] == [True] * 10
    exercise(builder(), expected=None)


def test_a_bot_pointing_inside_an_item_fails_only_the_frames_it_misplaces() -> None:
    data = _bot_patch(5, lambda t: t[5] + 2)
    expected = originals(load(RLE10))
    with quiet(), open_(data) as inst:
        assert inst.frame_index.kind == "bot"
        for i in range(len(inst)):
            if i in (4, 5):
                with pytest.raises(FrameIndexError):
                    inst.frame(i)
            else:
                assert np.array_equal(inst.frame(i), expected[i])


def test_corrupt_deflate_stream_gives_typed_errors() -> None:
    data = bytearray(load("image_dfl.dcm"))
    # The deflated body starts right after the file meta group.
    ds = pydicom.dcmread(io.BytesIO(bytes(data)), stop_before_pixels=True)
    start = 132 + 12 + ds.file_meta.FileMetaInformationGroupLength
    for offset in range(start, len(data), 97):
        mutated = bytes(data[:offset]) + bytes(b ^ 0x5A for b in data[offset : offset + 16]) + bytes(data[offset + 16 :])
        exercise(mutated)
    assert exercise(bytes(data[:start]) + b"\xff" * 64) == "rejected"


def test_deflate_bomb_stops_at_the_inflate_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(header_module, "MAX_INFLATED_BYTES", 1 << 20)
    ds = pydicom.dcmread(get_testdata_file("image_dfl.dcm"), stop_before_pixels=True)
    data = load("image_dfl.dcm")
    start = 132 + 12 + ds.file_meta.FileMetaInformationGroupLength
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bomb = compressor.compress(b"\0" * (8 << 20)) + compressor.flush()  # 8 MB of zeros in ~8 KB
    with deadline(), quiet(), pytest.raises(DicomFormatError, match="inflates beyond"):
        open_(data[:start] + bomb)


# -- 3. huge declared sizes must not allocate ------------------------------------------


def _assert_cheap(peak: list[int], started: float, limit: int = 4 * MB) -> None:
    assert peak[0] < limit, f"peak allocation {peak[0] / MB:.1f} MB"
    assert time.perf_counter() - started < 2.0


def test_huge_native_claims_are_refused_without_allocating() -> None:
    data = rewritten("CT_small.dcm", Rows=65535, Columns=65535, NumberOfFrames=10**6)
    started = time.perf_counter()
    with peak_allocation() as peak, quiet(), pytest.raises(DicomFormatError):
        open_(data)
    _assert_cheap(peak, started)


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "lenient"])
def test_huge_encapsulated_claims_are_refused_without_allocating(strict: bool) -> None:
    data = rewritten(J2K, Rows=65535, Columns=65535, NumberOfFrames=10**6)
    started = time.perf_counter()
    with peak_allocation() as peak, quiet():
        if strict:
            with pytest.raises(FrameIndexError):
                open_(data)
        else:
            with open_(data, strict=False) as inst:
                assert len(inst) == 10
                with pytest.raises(DecodeError):
                    inst.frame(0)
    _assert_cheap(peak, started)


def _codestream_geometry_patch(name: str, rows: int, columns: int) -> bytes:
    """Overwrite the size in frame 0's codestream header (JPEG SOF or J2K SIZ)."""
    data = load(name)
    _, spans, _ = layout(data)
    start = spans[0][0]
    sof = [data.find(m, start) for m in (b"\xff\xc0", b"\xff\xc1", b"\xff\xc3", b"\xff\xf7")]
    siz = data.find(b"\xff\x4f\xff\x51", start)
    if 0 <= siz < spans[0][0] + spans[0][1]:
        return patched(data, siz + 8, struct.pack(">LLLL", columns, rows, 0, 0))
    at = min(p for p in sof if p >= 0)
    return patched(data, at + 5, struct.pack(">HH", rows, columns))


@pytest.mark.parametrize("name", ["SC_rgb_small_odd_jpeg.dcm", "JPEGLSNearLossless_08.dcm", "JPEG-LL.dcm", J2K])
def test_codestream_claiming_a_huge_image_is_refused_before_decoding(name: str) -> None:
    # The codecs size their output from the codestream header: 65535 x 65535 x 3
    # would be a 12 GB allocation attempted for a frame of a few hundred bytes.
    data = _codestream_geometry_patch(name, 65535, 65535)
    with quiet(), open_(data) as inst:
        started = time.perf_counter()
        with peak_allocation() as peak, deadline(), pytest.raises(DecodeError, match="codestream header"):
            inst.frame(0)
    _assert_cheap(peak, started)


def _rle_frame(segments: list[bytes]) -> bytes:
    offsets, pos = [], 64
    for segment in segments:
        offsets.append(pos)
        pos += len(segment)
    return struct.pack("<16L", len(segments), *offsets, *[0] * (15 - len(segments))) + b"".join(segments)


def test_rle_runs_expanding_past_the_frame_do_not_allocate() -> None:
    # 200 KB of two-byte runs would inflate to 12.8 MB; the frame is 64 x 64 x 2.
    frames = encoded_frames(RLE10)
    frames[0] = _rle_frame([b"\x81\x07" * 100_000, b"\x81\x07" * 4])
    data = reencapsulated(RLE10, frames, has_bot=True)
    with quiet(), open_(data) as inst:
        started = time.perf_counter()
        with peak_allocation() as peak, pytest.raises(DecodeError):
            inst.frame(0)
    _assert_cheap(peak, started, limit=2 * MB)


@pytest.mark.parametrize(
    "offsets",
    [[64, 264, 0xFFFFFFD0], [64, 0x80000000, 400], [64, 300, 200], [64, 264, 465], [0, 64, 128], [64, 64, 64]],
    ids=["past-2**32", "past-2**31", "decreasing", "past-end", "inside-header", "empty-segments"],
)
def test_rle_segment_offsets_outside_the_frame_are_refused(offsets: list[int]) -> None:
    # Regression: imagecodecs.dicomrle_decode crashed the process (SIGSEGV) on a
    # segment offset at or beyond 2**31.
    frames = encoded_frames("SC_rgb_rle_2frame.dcm")
    frame = bytearray(frames[1])
    frame[4:16] = struct.pack("<3L", *offsets)
    frames[1] = bytes(frame)
    data = reencapsulated("SC_rgb_rle_2frame.dcm", frames, has_bot=True)
    with quiet(), open_(data) as inst:
        inst.frame(0)
        with deadline(), pytest.raises(DecodeError):
            inst.frame(1)


def test_eot_with_an_integer_value_does_not_allocate_its_value() -> None:
    # Regression: bytes(ds.ExtendedOffsetTable) of a corrupt UL value 0xFFFFFFF0
    # allocated 4 GB.
    data = _eot_raw("UL", struct.pack("<L", 0xFFFFFFF0))
    started = time.perf_counter()
    with peak_allocation() as peak, quiet(), open_(data) as inst:
        assert inst.frame_index.kind == "fragments"
    _assert_cheap(peak, started)


def test_a_million_one_pixel_frames_index_quickly() -> None:
    # Legal but extreme: 1-bit 1 x 1 frames. The index is whole-array arithmetic
    # (a per-frame Python loop took ~0.4 s per million frames).
    ds = pydicom.dcmread(get_testdata_file("liver_1frame.dcm"))
    ds.Rows = ds.Columns = 1
    ds.NumberOfFrames = 10**6
    ds.PixelData = b"\x55" * (10**6 // 8)
    buf = io.BytesIO()
    ds.save_as(buf)
    started = time.perf_counter()
    with quiet(), deadline(), open_(buf.getvalue()) as inst:
        assert len(inst) == 10**6
        assert time.perf_counter() - started < 2.0
        assert [int(inst.frame(i)[0, 0]) for i in (0, 1, 2, 999_999)] == [1, 0, 1, 0]


# -- 4. deeply nested sequences ---------------------------------------------------------


def _element(tag: int, vr: bytes, value: bytes, implicit: bool) -> bytes:
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if implicit:
        return head + struct.pack("<L", len(value)) + value
    if vr in (b"SQ", b"OB", b"OW", b"UN", b"UT"):
        return head + vr + b"\0\0" + struct.pack("<L", len(value)) + value
    return head + vr + struct.pack("<H", len(value)) + value


def _nested(depth: int, implicit: bool, defined: bool) -> bytes:
    """(0040,0275) Request Attributes Sequence nested ``depth`` levels deep."""
    sq = struct.pack("<HH", 0x0040, 0x0275) + (b"" if implicit else b"SQ\0\0")
    item = struct.pack("<HH", 0xFFFE, 0xE000)
    if not defined:
        opening = (sq + b"\xff\xff\xff\xff" + item + b"\xff\xff\xff\xff") * depth
        closing = (struct.pack("<HHL", 0xFFFE, 0xE00D, 0) + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)) * depth
        return opening + closing
    inner = b""
    for _ in range(depth):
        inner = sq + struct.pack("<L", len(inner) + 8) + item + struct.pack("<L", len(inner)) + inner
    return inner


def _deep_file(depth: int, implicit: bool, defined: bool) -> bytes:
    syntax = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    meta_elements = _element(0x00020010, b"UI", syntax.encode() + (b"\0" if len(syntax) % 2 else b""), False)
    meta = _element(0x00020000, b"UL", struct.pack("<L", len(meta_elements)), False) + meta_elements
    body = b"".join(
        [
            _element(0x00280002, b"US", struct.pack("<H", 1), implicit),
            _element(0x00280004, b"CS", b"MONOCHROME2 ", implicit),
            _element(0x00280010, b"US", struct.pack("<H", 2), implicit),
            _element(0x00280011, b"US", struct.pack("<H", 2), implicit),
            _element(0x00280100, b"US", struct.pack("<H", 8), implicit),
            _element(0x00280101, b"US", struct.pack("<H", 8), implicit),
            _element(0x00280103, b"US", struct.pack("<H", 0), implicit),
            _nested(depth, implicit, defined),
            _element(0x7FE00010, b"OB", b"\x01\x02\x03\x04", implicit),
        ]
    )
    return b"\0" * 128 + b"DICM" + meta + body


@pytest.mark.parametrize("defined", [False, True], ids=["undefined-length", "defined-length"])
@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
def test_deeply_nested_sequences_are_a_format_error(implicit: bool, defined: bool) -> None:
    shallow = _deep_file(3, implicit, defined)
    with quiet(), open_(shallow) as inst:  # the construction itself is valid DICOM
        assert inst.frame(0).tolist() == [[1, 2], [3, 4]]
    deep = _deep_file(5000, implicit, defined)
    if defined:
        # pydicom keeps a defined-length sequence as raw bytes until it is
        # accessed, and opening never accesses it: the pixels are fine.
        with deadline(), quiet(), open_(deep) as inst:
            assert inst.frame(0).tolist() == [[1, 2], [3, 4]]
        return
    with deadline(), quiet(), pytest.raises(DicomFormatError, match="nested too deeply"):
        open_(deep)


# -- 5. not DICOM at all ----------------------------------------------------------------

_rng = random.Random(1234)
NOT_DICOM = {
    "empty": b"",
    "one-byte": b"\x08",
    "random-4k": bytes(_rng.randrange(256) for _ in range(4096)),
    "random-64k": bytes(_rng.randrange(256) for _ in range(65536)),
    "zeros": b"\0" * 4096,
    "ones": b"\xff" * 4096,
    "png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
    + b"\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82",
    "jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + b"\x00" * 200 + b"\xff\xd9",
    "text": b"This is a plain text file.\nIt is not DICOM.\n" * 50,
    "json": b'{"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]}}\n',
    "gzip": zlib.compress(b"DICM" * 100)[:2] + b"\x08\x00" + bytes(100),
    "magic-only": b"\0" * 128 + b"DICM",
    "magic-then-random": b"\0" * 128 + b"DICM" + bytes(_rng.randrange(256) for _ in range(1024)),
    "magic-then-text": b"\0" * 128 + b"DICM" + b"not a dataset at all\n" * 20,
}


@pytest.mark.parametrize("data", NOT_DICOM.values(), ids=NOT_DICOM.keys())
def test_not_dicom_is_a_format_error(data: bytes) -> None:
    for source in (data, BytesSource(data)):
        with deadline(), quiet(), pytest.raises(DicomFormatError):
            dcmstream.open(source, cache=False)


@pytest.mark.parametrize("name", ["README.txt", "crayons.icc", "test1.json", "zipMR.gz", "rtplan.dump"])
def test_non_dicom_files_of_the_corpus_are_a_format_error(name: str) -> None:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} is not in this pydicom version")
    with deadline(), quiet(), pytest.raises(DicomFormatError):
        dcmstream.open(path, cache=False)


def test_datasets_without_pixels_or_meta_still_open() -> None:
    # The not-DICOM checks must not reject real datasets without file meta or pixels.
    for name in ("ExplVR_LitEndNoMeta.dcm", "ExplVR_BigEndNoMeta.dcm", "rtstruct.dcm", "no_meta_group_length.dcm"):
        with quiet(), dcmstream.open(load(name), cache=False) as inst:
            assert not inst.has_pixels and len(inst.dataset) > 0


# -- bad arguments ----------------------------------------------------------------------


def test_bad_arguments_raise_index_and_type_errors() -> None:
    with quiet(), open_(load("emri_small.dcm")) as inst:
        for bad in (10, 10**12, -11):
            with pytest.raises(IndexError):
                inst.frame(bad)
        for bad in ("0", 1.0, None, [0]):
            with pytest.raises(TypeError):
                inst.frame(bad)  # type: ignore[arg-type]
        with pytest.raises(IndexError):
            inst.encoded_frame(10)
    with pytest.raises(TypeError):
        dcmstream.open(12345)  # type: ignore[arg-type]
    with quiet(), dcmstream.open(load("rtstruct.dcm"), cache=False) as inst, pytest.raises(DicomFormatError):
        inst.frame(0)


class _FailingFile(io.RawIOBase):
    """A file object whose reads past ``fail_after`` raise an I/O error."""

    def __init__(self, data: bytes, fail_after: int) -> None:
        self._buf = io.BytesIO(data)
        self._fail_after = fail_after

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._buf.seek(offset, whence)

    def tell(self) -> int:
        return self._buf.tell()

    def read(self, size: int = -1) -> bytes:
        if self._buf.tell() > self._fail_after:
            raise OSError(5, "Input/output error")
        return self._buf.read(size)


def test_failing_file_objects_give_source_errors() -> None:
    path = get_testdata_file("emri_small.dcm")
    with quiet():
        with open(path, "rb") as f:
            inst = dcmstream.open(f, cache=False)
        with pytest.raises(SourceError):  # the caller closed the file
            inst.frame(5)
        inst.close()
        with pytest.raises(SourceError):  # the instance is closed
            inst.frame(0)
        with pytest.raises(SourceError):
            dcmstream.open(_FailingFile(load("emri_small.dcm"), fail_after=3000), cache=False).frame(5)
        with pytest.raises(SourceError):
            dcmstream.open(_FailingFile(load("emri_small.dcm"), fail_after=100), cache=False)
        read_end, write_end = os.pipe()
        os.write(write_end, load("CT_small.dcm")[:4096])
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe, pytest.raises(SourceError):  # not seekable
            dcmstream.open(pipe, cache=False)
        with open(path, errors="ignore") as text, pytest.raises(TypeError):  # text mode
            dcmstream.open(text, cache=False)  # type: ignore[arg-type]


# -- targeted regressions -----------------------------------------------------------------


def test_pixel_element_with_a_non_ascii_vr_is_a_format_error_or_implicit() -> None:
    # Regression: VR bytes b"O\xfe" passed the b"AA" <= vr <= b"ZZ" check and
    # raised UnicodeDecodeError.
    data = load("CT_small.dcm")
    pixel, _, _ = layout(data)
    for vr in (b"O\xfe", b"B\x80", b"Z\xff", b"a1"):
        exercise(patched(data, pixel.element_offset + 4, vr))


def _jp2(codestream: bytes, boxes_before: bytes = b"") -> bytes:
    """A minimal JP2 file around a J2K codestream (signature, ftyp, jp2h, jp2c)."""
    width, height = struct.unpack_from(">LL", codestream, 8)  # SIZ Xsiz, Ysiz
    (components,) = struct.unpack_from(">H", codestream, 40)
    bpc = codestream[42]
    ihdr = struct.pack(">L4sLLHBBBB", 22, b"ihdr", height, width, components, bpc, 7, 0, 0)
    colr = struct.pack(">L4sBBBL", 15, b"colr", 1, 0, 0, 17 if components == 1 else 16)
    jp2h = struct.pack(">L4s", 8 + len(ihdr) + len(colr), b"jp2h") + ihdr + colr
    ftyp = struct.pack(">L4s4sL4s", 20, b"ftyp", b"jp2 ", 0, b"jp2 ")
    signature = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
    return signature + boxes_before + ftyp + jp2h + struct.pack(">L4s", 8 + len(codestream), b"jp2c") + codestream


def test_jp2_wrapped_frames_decode_like_bare_codestreams() -> None:
    frames = encoded_frames(J2K)
    data = reencapsulated(J2K, [_jp2(f) for f in frames])
    expected = originals(load(J2K))
    with quiet(), open_(data) as inst:
        for i in (0, 9):
            assert np.array_equal(inst.frame(i), expected[i])


@pytest.mark.parametrize(
    "box",
    [struct.pack(">L4s", 0, b"junk") + b"\0" * 16, struct.pack(">L4sQ", 1, b"junk", 2**63), struct.pack(">L4s", 3, b"junk")],
    ids=["zero-length", "xl-huge", "too-short"],
)
def test_jp2_boxes_that_never_reach_the_codestream_do_not_hang(box: bytes) -> None:
    # Regression: pydicom's get_j2k_parameters loops forever on a box of length 0.
    frames = encoded_frames(J2K)
    frames[0] = _jp2(frames[0], boxes_before=box)
    data = reencapsulated(J2K, frames)
    with quiet(), open_(data) as inst, deadline(5), pytest.raises(DecodeError):
        inst.frame(0)


# -- 6. random mutations (hypothesis) -------------------------------------------------------

FUZZED = [
    "CT_small.dcm",
    "MR_small_bigendian.dcm",
    "SC_rgb_small_odd_big_endian.dcm",
    "image_dfl.dcm",
    "SC_rgb_small_odd_jpeg.dcm",
    "SC_rgb_rle_2frame.dcm",
    "JPEGLSNearLossless_08.dcm",
    "SC_rgb_jls_lossy_line.dcm",
    "SC_rgb_gdcm_KY.dcm",  # J2K
    "rtdose_rle_1frame.dcm",
    "rtdose_1frame.dcm",
]
FUZZED_MULTIFRAME = [J2K, RLE10, "emri_small.dcm", "liver.dcm"]

_CACHE: dict[str, tuple[bytes, list[int]]] = {}


def fuzz_input(name: str) -> tuple[bytes, list[int]]:
    """The file's bytes and its structurally interesting offsets."""
    if name not in _CACHE:
        data = load(name)
        hot: list[int] = []
        with quiet(), open_(data) as inst:
            if inst.transfer_syntax != DeflatedExplicitVRLittleEndian:
                pixel = inst.pixel_element
                hot += [pixel.element_offset, pixel.value_offset]
                for i in range(len(inst)):
                    offset, length = inst.frame_index.span(i)
                    hot += [offset - 8, offset - 4, offset, offset + 8, offset + length - 1]
        _CACHE[name] = (data, [p for p in hot if 0 <= p < len(data)] or [0])
    return _CACHE[name]


EXTREMES = [
    b"\xff\xff\xff\xff",
    b"\x00\x00\x00\x00",
    b"\xfe\xff\xff\xff",
    b"\x00\x00\x00\x80",
    b"\xff\xff\xff\x7f",
    b"\x01\x00\x00\x00",
    b"\xfe\xff\x00\xe0",  # item tag
    b"\xfe\xff\xdd\xe0",  # sequence delimiter
    b"\xfe\xff\x0d\xe0",  # item delimiter
    b"\xe0\x7f\x10\x00",  # pixel data tag
    b"\xff\xd8\xff\xc0",  # JPEG SOI + SOF0
    b"\xff\x4f\xff\x51",  # J2K SOC + SIZ
]

# A position: anywhere in the file, or near a structural offset (index, delta).
positions = st.one_of(
    st.tuples(st.just("any"), st.integers(0, 1 << 24), st.just(0)),
    st.tuples(st.just("hot"), st.integers(0, 1000), st.integers(-4, 12)),
)
mutations = st.one_of(
    st.tuples(st.just("set"), positions, st.integers(0, 255)),
    st.tuples(st.just("word"), positions, st.sampled_from(EXTREMES)),
    st.tuples(st.just("delete"), positions, st.integers(1, 64)),
    st.tuples(st.just("insert"), positions, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("truncate"), positions, st.just(0)),
)


def mutate(data: bytes, hot: list[int], edits: list[tuple]) -> bytes:
    buf = bytearray(data)
    for op, (where, index, delta), arg in edits:
        if not buf:
            break
        pos = index if where == "any" else hot[index % len(hot)] + delta
        pos = min(max(pos, 0), len(buf) - 1) if where == "hot" else pos % len(buf)
        if op == "set":
            buf[pos] = arg
        elif op == "word":
            buf[pos : pos + len(arg)] = arg
        elif op == "delete":
            del buf[pos : pos + arg]
        elif op == "insert":
            buf[pos:pos] = arg
        else:
            del buf[pos:]
    return bytes(buf)


FUZZ_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ_SETTINGS
@given(name=st.sampled_from(FUZZED), edits=st.lists(mutations, min_size=1, max_size=6), strict=st.booleans())
def test_random_mutations_give_only_typed_errors(name: str, edits: list[tuple], strict: bool) -> None:
    data, hot = fuzz_input(name)
    event(exercise(mutate(data, hot, edits), strict, max_frames=4))


@FUZZ_SETTINGS
@given(name=st.sampled_from(FUZZED_MULTIFRAME), edits=st.lists(mutations, min_size=1, max_size=4), strict=st.booleans())
def test_random_mutations_of_multiframe_files_give_only_typed_errors(name: str, edits: list[tuple], strict: bool) -> None:
    data, hot = fuzz_input(name)
    event(exercise(mutate(data, hot, edits), strict, max_frames=4))


ITEM = (0xFFFE, 0xE000)
SEQUENCE_DELIMITER = (0xFFFE, 0xE0DD)


@functools.cache
def _items_base(name: str) -> tuple[bytes, list[bytes]]:
    """The file up to the pixel data value, and its encoded frames."""
    original = load(name)
    pixel, _, _ = layout(original)
    return original[: pixel.value_offset], encoded_frames(name)


# Damage to one item of an otherwise well-formed layout: (item, what, value).
defects = st.tuples(
    st.integers(0, 40),
    st.sampled_from(["tag", "length", "cut", "flip", "bot-entry"]),
    st.one_of(
        st.sampled_from([0, 1, 3, 0xFFFFFFFF, 0x80000000, 0xFFFEE0DD, 0xFFFEE00D, 0x7FE00010]),
        st.integers(0, 2**32 - 1),
    ),
)


@FUZZ_SETTINGS
@given(
    name=st.sampled_from([RLE10, J2K]),
    declared=st.integers(1, 9),
    frames=st.lists(st.integers(0, 9), min_size=1, max_size=10),
    split=st.integers(1, 3),
    bot=st.sampled_from(["none", "empty", "exact"]),
    delimiter=st.booleans(),
    damage=st.lists(defects, max_size=3),
    strict=st.booleans(),
)
def test_damaged_item_layouts_give_only_typed_errors(
    name: str,
    declared: int,
    frames: list[int],
    split: int,
    bot: str,
    delimiter: bool,
    damage: list[tuple],
    strict: bool,
) -> None:
    # A real header (Number of Frames 1..9) and a well-formed item layout of real
    # frames (1..3 fragments each, with or without a BOT), then up to three
    # defects: an item tag, length, BOT entry or payload changed.
    header, encoded = _items_base(name)
    out = bytearray(header)
    at = out.index(b"\x28\x00\x08\x00IS\x02\x00") + 8
    out[at : at + 2] = f"{declared:<2d}".encode()
    payloads: list[bytes] = []
    starts: list[int] = []
    position = 0
    for k in frames:
        starts.append(position)
        data = encoded[k]
        step = -(-len(data) // split)
        for piece in (data[i : i + step] for i in range(0, len(data), step)):
            payloads.append(piece)
            position += 8 + len(piece)
    table = starts if bot == "exact" else []
    records = [[ITEM, 4 * len(table), struct.pack(f"<{len(table)}L", *table)]] if bot != "none" else []
    records += [[ITEM, len(p), p] for p in payloads]
    for index, what, value in damage:
        record = records[index % len(records)]
        if what == "tag":
            record[0] = (value >> 16, value & 0xFFFF)
        elif what == "length":
            record[1] = value
        elif what == "cut":
            record[2] = record[2][: value % (len(record[2]) + 1)]
            record[1] = len(record[2])
        elif what == "flip" and record[2]:
            i = value % len(record[2])
            record[2] = record[2][:i] + bytes([record[2][i] ^ 0xFF]) + record[2][i + 1 :]
        elif what == "bot-entry" and bot == "exact" and table:
            table[index % len(table)] = value
            records[0][2] = struct.pack(f"<{len(table)}L", *table)
    for tag, length, payload in records:
        out += struct.pack("<HHL", *tag, length) + payload
    if delimiter:
        out += struct.pack("<HHL", *SEQUENCE_DELIMITER, 0)
    event(exercise(bytes(out), strict, max_frames=4))


ATTRIBUTE_FILES = [
    "CT_small.dcm",  # native 16-bit signed
    "SC_rgb_small_odd.dcm",  # native RGB 8-bit, odd size
    "rtdose_1frame.dcm",  # native 32-bit
    "liver_1frame.dcm",  # native 1-bit
    "SC_rgb_rle_2frame.dcm",  # RLE RGB
    "SC_rgb_small_odd_jpeg.dcm",  # JPEG YBR_FULL_422
    "JPEGLSNearLossless_08.dcm",  # JPEG-LS
    "SC_rgb_gdcm_KY.dcm",  # JPEG 2000 RGB
]


@functools.cache
def _attribute_base(name: str) -> bytes:
    return load(name)





_SIZES = st.sampled_from([0, 1, 2, 3, 4, 7, 8, 12, 15, 16, 24, 32, 33, 63, 64, 65535])
# Per attribute: mostly values that keep the frame size (so decoding is reached),
# sometimes anything.
_ATTRIBUTE_VALUES = {
    "PhotometricInterpretation": st.sampled_from(
        ["MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT", "PALETTE COLOR", "HSV", ""]
    ),
    "PixelRepresentation": st.sampled_from([0, 1, 2]),
    "BitsStored": st.one_of(st.integers(1, 16), _SIZES),
    "HighBit": st.one_of(st.integers(0, 15), _SIZES),
    "PlanarConfiguration": st.sampled_from([0, 1, 2]),
    "SamplesPerPixel": st.sampled_from([1, 3, 4, 0, 2]),
    "BitsAllocated": st.sampled_from([1, 8, 16, 32, 64, 0, 12]),
    "Rows": _SIZES,
    "Columns": _SIZES,
    "NumberOfFrames": st.sampled_from([0, 1, 2, 3, 10**7]),
}


@FUZZ_SETTINGS
@given(
    name=st.sampled_from(ATTRIBUTE_FILES),
    changes=st.lists(
        st.sampled_from(sorted(_ATTRIBUTE_VALUES)).flatmap(lambda k: st.tuples(st.just(k), st.one_of(st.none(), _ATTRIBUTE_VALUES[k]))),
        max_size=3,
    ).map(dict),
    strict=st.booleans(),
)
def test_random_image_pixel_attributes_give_only_typed_errors(name: str, changes: dict[str, object], strict: bool) -> None:
    # Any combination of Image Pixel values, however contradictory: the spec
    # checks, native/codec decoding and post-processing (sign, colour) must cope.
    ds = pydicom.dcmread(io.BytesIO(_attribute_base(name)))
    for keyword, value in changes.items():
        tag = Tag(keyword)
        if value is None:
            ds.pop(tag, None)
        elif isinstance(value, str):
            raw = value.encode() + b" " * (len(value) % 2)
            ds[tag] = RawDataElement(tag, "CS", len(raw), raw, 0, ds.is_implicit_VR, ds.is_little_endian)
        elif keyword == "NumberOfFrames":
            raw = str(value).encode() + b" " * (len(str(value)) % 2)
            ds[tag] = RawDataElement(tag, "IS", len(raw), raw, 0, ds.is_implicit_VR, ds.is_little_endian)
        else:
            ds[tag] = RawDataElement(tag, "US", 2, struct.pack("<H" if ds.is_little_endian else ">H", value), 0, ds.is_implicit_VR, ds.is_little_endian)
    buf = io.BytesIO()
    with quiet():
        ds.save_as(buf)
    event(exercise(buf.getvalue(), strict, max_frames=2))


# -- 7. every transfer syntax, unraisable reports, the fuzz corpus -------------------------

FUZZ_CORPUS = os.path.join(os.path.dirname(__file__), "data", "fuzz")
# A longer run: DCMSTREAM_FUZZ_EXAMPLES=100000 pytest tests/test_malformed.py -k print_nothing
EVERY_SYNTAX_SETTINGS = settings(
    max_examples=int(os.environ.get("DCMSTREAM_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@functools.cache
def generated_samples() -> dict[str, bytes]:
    """Small two-frame files of every syntax dcmstream.samples writes (grey CT, colour US)."""
    from dcmstream.samples import write_multiframe
    from dcmstream.samples.syntaxes import SYNTAXES

    out: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="dcmstream-fuzz-") as tmp:
        for seed, syntax in enumerate(SYNTAXES):
            for kind in ("ct", "us"):
                path = os.path.join(tmp, f"{syntax}-{kind}.dcm")
                try:
                    write_multiframe(path, frames=2, syntax=syntax, kind=kind, rows=16, columns=24, seed=seed)
                except InvalidArgumentError:
                    continue  # e.g. baseline JPEG holds 8-bit samples only
                with open(path, "rb") as f:
                    out[f"{syntax}-{kind}"] = f.read()
    return out


@contextlib.contextmanager
def decoder_reports() -> Iterator[list[str]]:
    """Collect what escapes as an exception would not: unraisable exceptions and text
    the decoders print on the process's stderr (file descriptor 2)."""
    reports: list[str] = []
    previous = sys.unraisablehook
    sys.unraisablehook = lambda u: reports.append(f"unraisable {u.exc_type.__name__}: {u.exc_value} in {u.object!r}")
    saved = os.dup(2)
    with tempfile.TemporaryFile() as err:
        os.dup2(err.fileno(), 2)
        try:
            yield reports
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sys.unraisablehook = previous
            err.seek(0)
            printed = err.read().decode(errors="replace").strip()
            if printed:
                reports.append(f"stderr: {printed[:500]}")


def exercise_all(data: bytes) -> str:
    """``dcmstream.open(bytes)``, then ``.dataset``, ``.frame(0)`` and ``.render(0)``: only
    typed errors, nothing unraisable, nothing printed."""
    outcome = "rejected"
    with decoder_reports() as reports, deadline(), quiet():
        try:
            with dcmstream.open(data, cache=False) as inst:
                outcome = "opened"
                assert inst.dataset is not None
                if inst.has_pixels:
                    for call in (inst.frame, inst.render):
                        try:
                            call(0)
                        except DcmstreamError:
                            outcome = "frame rejected"
        except DcmstreamError:
            pass
    assert not reports, reports
    return outcome


CORPUS_FILES = sorted(f for f in os.listdir(FUZZ_CORPUS) if f.endswith(".dcm"))


@pytest.mark.parametrize("name", CORPUS_FILES)
def test_fuzz_corpus_gives_typed_errors(name: str) -> None:
    # Inputs the fuzzer below once found raising untyped errors (pydicom's
    # NotImplementedError at open) or printing OpenJPH's unraisable "ojph error".
    with open(os.path.join(FUZZ_CORPUS, name), "rb") as f:
        data = f.read()
    assert len(data) < 64 * 1024
    exercise_all(data)


def test_a_corrupt_htj2k_codestream_is_a_decode_error_not_a_half_decoded_frame() -> None:
    with open(os.path.join(FUZZ_CORPUS, "htj2k-ojph-error-in-line-copy.dcm"), "rb") as f:
        data = f.read()
    with decoder_reports() as reports, quiet(), dcmstream.open(data, cache=False) as inst, pytest.raises(DecodeError):
        inst.frame(0)
    assert not reports, reports


def test_an_unknown_vr_after_the_frame_groups_is_a_format_error_naming_the_element() -> None:
    # Was pydicom's NotImplementedError, raised converting every element after the
    # Per-Frame Functional Groups; now they stay raw and the one read is typed.
    with open(os.path.join(FUZZ_CORPUS, "unknown-vr-after-frame-groups.dcm"), "rb") as f:
        data = f.read()
    with quiet(), pytest.raises(DicomFormatError, match=r"SamplesPerPixel cannot be read .*\(0028,0002\)"):
        dcmstream.open(data, cache=False)


def test_generated_samples_cover_every_syntax() -> None:
    from dcmstream.samples.syntaxes import SYNTAXES

    assert {name.rsplit("-", 1)[0] for name in generated_samples()} == set(SYNTAXES)
    for data in generated_samples().values():
        assert exercise_all(data) == "opened"


@EVERY_SYNTAX_SETTINGS
@given(name=st.sampled_from(sorted(set(FUZZED) | {"liver.dcm", "emri_small.dcm"})), edits=st.lists(mutations, min_size=1, max_size=6))
def test_mutations_of_pydicom_files_give_typed_errors_and_print_nothing(name: str, edits: list[tuple]) -> None:
    data, hot = fuzz_input(name)
    event(exercise_all(mutate(data, hot, edits)))


@EVERY_SYNTAX_SETTINGS
@given(index=st.integers(0, 63), edits=st.lists(mutations, min_size=1, max_size=6))
def test_mutations_of_every_syntax_give_typed_errors_and_print_nothing(index: int, edits: list[tuple]) -> None:
    samples = generated_samples()
    name = sorted(samples)[index % len(samples)]
    data = samples[name]
    # Hot spots: the start of the dataset and the last kilobytes (the codestreams).
    hot = [132, 300, 600, *range(max(0, len(data) - 2048), len(data), 64)]
    event(name)
    event(exercise_all(mutate(data, hot, edits)))

