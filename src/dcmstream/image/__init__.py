"""Instances (and later series, rendering, dask arrays)."""

from .instance import Instance, open

__all__ = ["Instance", "open"]
