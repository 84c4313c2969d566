"""The Extended Offset Table (7FE0,0001) and its lengths (7FE0,0002), read from the header.

:func:`~dcmstream.index.encapsulated_frame_index` checks the table against the pixel data;
this module only gets its two values out of the dataset, refusing anything that is not
OV bytes (``bytes()`` of a corrupt integer value would allocate that many bytes).
"""

from __future__ import annotations

import warnings

from pydicom.dataset import Dataset

from .pixel_spec import dataset_value

__all__ = ["extended_offset_table"]


def extended_offset_table(ds: Dataset, name: str, stacklevel: int = 2) -> tuple[bytes, bytes] | None:
    """(offsets, lengths) as stored (little-endian 64-bit values), or None without a table.

    A table that is not OV data is ignored with a warning (``stacklevel`` as for
    :func:`warnings.warn`, counted from the caller); a value pydicom cannot convert at
    all raises DicomFormatError.
    """
    if "ExtendedOffsetTable" not in ds or "ExtendedOffsetTableLengths" not in ds:
        return None
    table = dataset_value(ds, "ExtendedOffsetTable", name)
    lengths = dataset_value(ds, "ExtendedOffsetTableLengths", name)
    if isinstance(table, (bytes, bytearray)) and isinstance(lengths, (bytes, bytearray)):
        return bytes(table), bytes(lengths)
    if table is not None or lengths is not None:
        warnings.warn(f"{name}: Extended Offset Table is not OV data; ignored", stacklevel=stacklevel + 1)
    return None
