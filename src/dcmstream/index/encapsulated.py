"""Frame positions for encapsulated pixel data (PS3.5 A.4).

Preference order, cheapest first: the Extended Offset Table (no read at all), the
Basic Offset Table (one small read), else a walk over the item headers (8 bytes
read per fragment, values skipped). When there are more fragments than frames and
no offset table, a frame starts at each fragment that begins with the codec's
start-of-image marker (JPEG SOI FFD8, JPEG 2000 SOC FF4F or a JP2 signature).
"""

from __future__ import annotations

import struct
import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import FrameIndexError
from ..io.source import ByteSource
from .frame_index import FrameIndex, OffsetTableKind

__all__ = ["encapsulated_frame_index", "item_header", "unwrap_items", "ITEM_TAG", "SEQUENCE_DELIMITER"]

ITEM_TAG = 0xFFFEE000
SEQUENCE_DELIMITER = 0xFFFEE0DD
_HEADER = struct.Struct("<HHL")

# Start-of-codestream signatures, per codec family.
_JPEG_SOI = b"\xff\xd8"
_J2K_SOC = b"\xff\x4f\xff\x51"
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  "


def item_header(source: ByteSource, offset: int, name: str) -> tuple[int, int]:
    """(tag, length) of the item header at ``offset``."""
    head = source.read_at(offset, 8)
    if len(head) < 8:
        raise FrameIndexError(f"{name}: encapsulated pixel data is truncated at offset {offset} (no item header)")
    group, elem, length = _HEADER.unpack(head)
    return group << 16 | elem, length


@dataclass(frozen=True)
class _Fragments:
    value_offsets: list[int]
    lengths: list[int]
    end: int  # offset just past the last item (at the sequence delimiter or EOF)


def _walk(source: ByteSource, start: int, name: str, stop_after: int | None = None) -> _Fragments:
    """Walk item headers from ``start`` to the sequence delimiter."""
    offsets: list[int] = []
    lengths: list[int] = []
    pos = start
    size = source.size
    while pos < size:
        if stop_after is not None and len(offsets) >= stop_after:
            break
        tag, length = item_header(source, pos, name)
        if tag == SEQUENCE_DELIMITER:
            return _Fragments(offsets, lengths, pos)
        if tag != ITEM_TAG:
            found = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
            raise FrameIndexError(f"{name}: expected an item tag (FFFE,E000) at offset {pos} of the pixel data, found {found}")
        if length == 0xFFFFFFFF or pos + 8 + length > size:
            raise FrameIndexError(
                f"{name}: fragment {len(offsets)} at offset {pos} claims {length} bytes, past the end of the file ({size})"
            )
        offsets.append(pos + 8)
        lengths.append(length)
        pos += 8 + length
    # No delimiter before EOF: pydicom accepts that, and so do we.
    return _Fragments(offsets, lengths, pos)


def unwrap_items(data: bytes, name: str, frame: int) -> bytes:
    """Concatenate the values of the items in ``data`` (a wrapped frame range)."""
    parts: list[bytes] = []
    pos = 0
    view = memoryview(data)
    while pos + 8 <= len(data):
        group, elem, length = _HEADER.unpack_from(data, pos)
        tag = group << 16 | elem
        if tag == SEQUENCE_DELIMITER:
            break
        if tag != ITEM_TAG or pos + 8 + length > len(data):
            raise FrameIndexError(
                f"{name}: frame {frame}: the offset table points at bytes that are not a "
                f"valid item (tag ({tag >> 16:04X},{tag & 0xFFFF:04X}), length {length})"
            )
        parts.append(bytes(view[pos + 8 : pos + 8 + length]))
        pos += 8 + length
    if 0 < len(data) - pos < 8:
        # Ranges end at an item boundary; a partial header means the offset table
        # put the next frame's start a few bytes off.
        raise FrameIndexError(f"{name}: frame {frame} ends {len(data) - pos} bytes into an item header")
    if not parts:
        raise FrameIndexError(f"{name}: frame {frame} has no fragment")
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _starts_frame(head: bytes) -> bool:
    return head.startswith(_JPEG_SOI) or head.startswith(_J2K_SOC) or head.startswith(_JP2_SIGNATURE)


def _from_eot(eot: bytes, eot_lengths: bytes, first_item: int, n: int, source: ByteSource, name: str) -> FrameIndex | None:
    if len(eot) % 8 or len(eot_lengths) != len(eot):
        warnings.warn(f"{name}: Extended Offset Table and its lengths differ in size; ignored", stacklevel=3)
        return None
    rel = np.frombuffer(eot, dtype="<u8").astype(np.int64)
    lengths = np.frombuffer(eot_lengths, dtype="<u8").astype(np.int64)
    if len(rel) != n:
        warnings.warn(f"{name}: Extended Offset Table has {len(rel)} entries for {n} frames; ignored", stacklevel=3)
        return None
    # Bound the entries by the source size first: near 2**63, first_item + rel
    # would wrap around to a negative offset and pass the checks below.
    in_range = (rel >= 0).all() and (lengths >= 0).all() and (rel <= source.size).all() and (lengths <= source.size).all()
    offsets = first_item + rel + 8
    if not in_range or (offsets + lengths > source.size).any() or (np.diff(rel) <= 0).any():
        warnings.warn(f"{name}: Extended Offset Table points outside the pixel data; ignored", stacklevel=3)
        return None
    # Check one item header so a table pointing at the wrong bytes is caught now.
    tag, length = item_header(source, int(first_item + rel[0]), name)
    if tag != ITEM_TAG or length < lengths[0]:
        warnings.warn(f"{name}: Extended Offset Table does not point at items; ignored", stacklevel=3)
        return None
    return FrameIndex(OffsetTableKind.EOT, offsets.astype(np.int64), lengths)


def _from_bot(bot: bytes, first_item: int, n: int, source: ByteSource, name: str) -> FrameIndex | None:
    rel = np.frombuffer(bot, dtype="<u4").astype(np.int64)
    problem = None
    if len(rel) != n:
        problem = f"has {len(rel)} entries for {n} frames"
    elif rel[0] != 0:
        problem = f"does not start at 0 (first entry {rel[0]})"
    elif (np.diff(rel) <= 0).any():
        problem = "has offsets that do not increase"
    elif first_item + rel[-1] + 8 > source.size:
        beyond = int((first_item + rel + 8 > source.size).sum())
        problem = f"places the last {beyond} of {n} frames past the end of the file ({source.size} bytes; truncated?)"
    if problem is not None:
        warnings.warn(f"{name}: the Basic Offset Table {problem}; walking the items instead", stacklevel=3)
        return None
    starts = first_item + rel
    tag, last_length = item_header(source, int(starts[-1]), name)
    if tag != ITEM_TAG:
        warnings.warn(f"{name}: Basic Offset Table does not point at an item; walking the items instead", stacklevel=3)
        return None
    # The last frame ends where the items end: walk only its own fragments. When its first
    # item ends 8 bytes before the file does (the usual layout: then the sequence
    # delimiter) or at the end, nothing more can belong to the frame (at most an empty
    # item): no read of those 8 bytes, which for a remote file is a round trip of its own.
    after = int(starts[-1]) + 8 + last_length
    end = after if after in (source.size - 8, source.size) else _walk(source, int(starts[-1]), name).end
    bounds = np.append(starts, end)
    return FrameIndex(OffsetTableKind.BOT, starts.astype(np.int64), np.diff(bounds).astype(np.int64), wrapped=True)


def encapsulated_frame_index(
    source: ByteSource,
    value_offset: int,
    number_of_frames: int,
    name: str,
    *,
    extended_offsets: tuple[bytes, bytes] | None = None,
    strict: bool = True,
) -> FrameIndex:
    """Build the index of encapsulated pixel data whose value starts at ``value_offset``."""
    tag, bot_length = item_header(source, value_offset, name)
    if tag != ITEM_TAG:
        raise FrameIndexError(f"{name}: encapsulated pixel data does not start with the Basic Offset Table item")
    if bot_length % 4 or value_offset + 8 + bot_length > source.size:
        raise FrameIndexError(f"{name}: Basic Offset Table length {bot_length} is invalid")
    first_item = value_offset + 8 + bot_length
    n = number_of_frames

    if extended_offsets is not None and bot_length == 0:
        index = _from_eot(extended_offsets[0], extended_offsets[1], first_item, n, source, name)
        if index is not None:
            return index
    if bot_length:
        bot = source.read_exact(value_offset + 8, bot_length, "Basic Offset Table")
        index = _from_bot(bot, first_item, n, source, name)
        if index is not None:
            return index

    frags = _walk(source, first_item, name)
    count = len(frags.value_offsets)
    if count == 0:
        raise FrameIndexError(f"{name}: encapsulated pixel data holds no fragments")
    offsets = np.asarray(frags.value_offsets, dtype=np.int64)
    lengths = np.asarray(frags.lengths, dtype=np.int64)
    if count == n:
        return FrameIndex(OffsetTableKind.FRAGMENTS, offsets, lengths)
    if n == 1:
        # One frame in several fragments: the range runs over all items.
        start = int(offsets[0] - 8)
        return FrameIndex(
            OffsetTableKind.FRAGMENTS,
            np.array([start], dtype=np.int64),
            np.array([frags.end - start], dtype=np.int64),
            wrapped=True,
        )
    if count < n:
        if strict:
            raise FrameIndexError(f"{name}: {count} fragment(s) cannot hold {n} frames")
        warnings.warn(f"{name}: only {count} of {n} frames present", stacklevel=2)
        return FrameIndex(OffsetTableKind.FRAGMENTS, offsets, lengths)

    # More fragments than frames and no table: find each frame's start marker.
    first_frame_fragments = [i for i, off in enumerate(frags.value_offsets) if _starts_frame(source.read_at(off, 8))]
    if not first_frame_fragments or first_frame_fragments[0] != 0:
        raise FrameIndexError(f"{name}: {count} fragments for {n} frames and no start-of-image markers to split them")
    found = len(first_frame_fragments)
    if found < n:
        if strict:
            raise FrameIndexError(f"{name}: found {found} frame start markers in {count} fragments, expected {n}")
        warnings.warn(f"{name}: only {found} of {n} frames present", stacklevel=2)
    # Excess frames (more markers than NumberOfFrames) are ignored, as pydicom does for index < n.
    starts = first_frame_fragments[:n]
    ends = starts[1:] + [count]
    span_offsets = np.asarray([frags.value_offsets[s] - 8 for s in starts], dtype=np.int64)
    span_ends = np.asarray([frags.value_offsets[e - 1] + frags.lengths[e - 1] for e in ends], dtype=np.int64)
    return FrameIndex(OffsetTableKind.MARKERS, span_offsets, span_ends - span_offsets, wrapped=True)
