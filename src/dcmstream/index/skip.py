"""Step over a data element without parsing its value (sequences included).

Enhanced multiframe headers carry a Per-Frame Functional Groups Sequence with one
item per frame: for 2,000 frames pydicom builds ~10,000 datasets, tens of
milliseconds that a frame request never needs. Opening steps over it here, reading
only element headers, and the sequence is parsed when the dataset is asked for.
"""

from __future__ import annotations

import struct

from ..errors import DicomFormatError
from ..io.reader import SourceReader

__all__ = ["skip_element"]

_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
# Most bytes of the source held at once while walking: also the most read past the
# sequence's end, which opening a file should keep well under its 64 KiB read-ahead
# (a read per 32 KiB of sequence costs nothing next to walking it).
_WINDOW = 1 << 15


def skip_element(reader: SourceReader, offset: int, *, implicit: bool, little: bool) -> int:
    """Offset just past the element (or item) that starts at ``offset``.

    Nesting is tracked with an explicit stack, not recursion, so a hostile depth
    cannot exhaust the interpreter stack; every step moves forward at least 8
    bytes, so the walk ends. An undefined-length element of VR UN holds an
    implicit VR sequence (PS3.5 6.2.2), so its contents are walked as implicit.
    The walk works on a window of the file in memory (this loop runs once per
    element header: thousands of times for a large enhanced multiframe).
    """
    source = reader.source
    size = source.size
    endian = "<" if little else ">"
    tag_len = struct.Struct(endian + "HHL").unpack_from  # group, element, 4-byte length
    tag_vr_len = struct.Struct(endian + "HH2sH").unpack_from  # group, element, VR, 2-byte length
    long_len = struct.Struct(endian + "L").unpack_from
    stack: list[bool] = []  # implicit-VR flag of each open sequence/item
    pos = offset
    buf = b""
    base = 0  # file offset of buf[0]

    while True:
        rel = pos - base
        if rel < 0 or rel + 12 > len(buf):
            base = pos
            # The window grows with the distance walked, so what is read past
            # the sequence's end is at most about what the sequence itself held.
            buf = source.read_at(pos, min(_WINDOW, max(16384, pos - offset)))
            rel = 0
            if len(buf) < 8:
                raise DicomFormatError(f"{source.name}: element at offset {pos} is truncated (skipping a sequence)")
        group, elem, length = tag_len(buf, rel)
        cur_implicit = stack[-1] if stack else implicit
        if group == 0xFFFE:
            # Items and delimiters: no VR, a 4-byte length.
            tag = group << 16 | elem
            if tag == _ITEM and length == _UNDEFINED:
                stack.append(cur_implicit)
                pos += 8
            elif tag in (_ITEM_END, _SEQ_END):
                if stack:
                    stack.pop()
                pos += 8
            else:
                pos += 8 + length
        else:
            vr = buf[rel + 4 : rel + 6]
            if cur_implicit or not (b"AA" <= vr <= b"ZZ"):
                header, inner_implicit = 8, cur_implicit
            elif vr in _LONG_VRS:
                if rel + 12 > len(buf):
                    raise DicomFormatError(f"{source.name}: element header at offset {pos} is truncated")
                (length,) = long_len(buf, rel + 8)
                header, inner_implicit = 12, vr == b"UN" or cur_implicit
            else:
                length = tag_vr_len(buf, rel)[3]
                header, inner_implicit = 8, cur_implicit
            if length == _UNDEFINED:
                stack.append(inner_implicit)
                pos += header
            else:
                pos += header + length
        if pos > size:
            raise DicomFormatError(f"{source.name}: a sequence starting at offset {offset} runs past the end of the file")
        if not stack:
            return pos
