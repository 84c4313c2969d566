"""Instances, series, resolution levels, rendering and dask arrays."""

from .instance import Instance, open
from .series import Series, SeriesMember, open_series

__all__ = ["Instance", "open", "Series", "SeriesMember", "open_series"]
