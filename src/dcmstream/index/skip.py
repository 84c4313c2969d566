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
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


def skip_element(reader: SourceReader, offset: int, *, implicit: bool, little: bool) -> int:
    """Offset just past the element (or item) that starts at ``offset``.

    Nesting is tracked with an explicit stack, not recursion, so a hostile depth
    cannot exhaust the interpreter stack; every step moves forward at least 8
    bytes, so the walk ends. An undefined-length element of VR UN holds an
    implicit VR sequence (PS3.5 6.2.2), so its contents are walked as implicit.
    """
    source = reader.source
    size = source.size
    endian = "<" if little else ">"
    stack: list[bool] = []  # implicit-VR flag of each open sequence/item
    pos = offset
    while True:
        reader.seek(pos)
        head = reader.read(8)
        if len(head) < 8:
            raise DicomFormatError(f"{source.name}: element at offset {pos} is truncated (skipping a sequence)")
        group, elem = struct.unpack(endian + "HH", head[:4])
        tag = group << 16 | elem
        cur_implicit = stack[-1] if stack else implicit
        if group == 0xFFFE:
            # Items and delimiters are always 4-byte little/big-endian lengths, no VR.
            (length,) = struct.unpack(endian + "L", head[4:8])
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
            vr = head[4:6]
            if cur_implicit or not (b"AA" <= vr <= b"ZZ"):
                (length,) = struct.unpack(endian + "L", head[4:8])
                header, inner_implicit = 8, cur_implicit
            elif vr in _LONG_VRS:
                more = reader.read(4)
                if len(more) < 4:
                    raise DicomFormatError(f"{source.name}: element header at offset {pos} is truncated")
                (length,) = struct.unpack(endian + "L", more)
                header, inner_implicit = 12, vr == b"UN" or cur_implicit
            else:
                (length,) = struct.unpack(endian + "H", head[6:8])
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
