"""Header parsing up to the pixel data, and the frame index builders."""

from .encapsulated import encapsulated_frame_index, unwrap_items
from .eot import extended_offset_table
from .frame_index import FrameIndex, OffsetTableKind
from .header import Header, PixelElement, parse_header
from .native import native_frame_index
from .pixel_spec import PixelSpec, pixel_spec_from_dataset

__all__ = [
    "FrameIndex",
    "OffsetTableKind",
    "Header",
    "PixelElement",
    "PixelSpec",
    "parse_header",
    "pixel_spec_from_dataset",
    "native_frame_index",
    "encapsulated_frame_index",
    "unwrap_items",
    "extended_offset_table",
]
