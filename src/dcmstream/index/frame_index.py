"""FrameIndex: where every frame's bytes are, and how that was found."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

__all__ = ["OffsetTableKind", "FrameIndex"]


class OffsetTableKind(StrEnum):
    """How the frame positions were obtained."""

    NATIVE = "native"  # computed from Rows x Columns x ... (uncompressed data)
    EOT = "eot"  # Extended Offset Table (7FE0,0001) + lengths (7FE0,0002)
    BOT = "bot"  # Basic Offset Table (first item of the encapsulated pixel data)
    FRAGMENTS = "fragments"  # item-header walk, one fragment per frame (or one frame)
    MARKERS = "markers"  # item-header walk, frames start at codec start-of-image markers


@dataclass(frozen=True, eq=False)
class FrameIndex:
    """Byte positions of every frame of one instance.

    ``offsets[i]``/``lengths[i]`` give an absolute byte range in the source. When
    ``wrapped`` is False that range is exactly frame *i*'s stored bytes. When it is
    True the range is a run of encapsulated items (headers included) whose values,
    concatenated, are the frame (several fragments per frame, or a BOT whose
    fragment boundaries are only known once the range is read).

    ``bit_offsets`` is set for native 1-bit data, whose frames need not start on a
    byte boundary.
    """

    kind: OffsetTableKind
    offsets: np.ndarray
    lengths: np.ndarray
    wrapped: bool = False
    bit_offsets: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.offsets.shape[0])

    def span(self, i: int) -> tuple[int, int]:
        """(offset, length) of frame ``i``'s byte range."""
        return int(self.offsets[i]), int(self.lengths[i])

    @property
    def total_bytes(self) -> int:
        """Sum of the frame ranges (the encoded pixel bytes)."""
        return int(self.lengths.sum())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form, for persisting the index (archive catalog)."""
        d: dict[str, Any] = {
            "kind": str(self.kind),
            "offsets": self.offsets.tolist(),
            "lengths": self.lengths.tolist(),
            "wrapped": self.wrapped,
        }
        if self.bit_offsets is not None:
            d["bit_offsets"] = self.bit_offsets.tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FrameIndex":
        """Inverse of :meth:`to_dict`."""
        bits = d.get("bit_offsets")
        return cls(
            kind=OffsetTableKind(d["kind"]),
            offsets=np.asarray(d["offsets"], dtype=np.int64),
            lengths=np.asarray(d["lengths"], dtype=np.int64),
            wrapped=bool(d.get("wrapped", False)),
            bit_offsets=None if bits is None else np.asarray(bits, dtype=np.int64),
        )

    def __repr__(self) -> str:
        return f"FrameIndex(kind={self.kind.value!r}, frames={len(self)}, wrapped={self.wrapped}, bytes={self.total_bytes})"
