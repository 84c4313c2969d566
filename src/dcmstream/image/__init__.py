"""Instances, series, resolution levels, rendering and dask arrays."""

from .frame_reader import FrameReader
from .frame_source import FrameSource, ImageSource
from .instance import Instance, open  # noqa: A004 - dcmstream.open is the public API, like io.open
from .series import Series, SeriesMember, open_series

__all__ = ["Instance", "open", "Series", "SeriesMember", "open_series", "FrameReader", "FrameSource", "ImageSource"]
