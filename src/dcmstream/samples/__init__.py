"""Synthetic but realistic DICOM multi-frame files for the demo, the tests and the benchmarks.

Two layers:

* :func:`synthetic_frames` returns a cheap ``frame_number -> ndarray`` function producing
  anatomy-like CT/MR slices or ultrasound cine frames (:mod:`.pixels`).
* :func:`write_multiframe` writes a DICOM Part 10 file in any transfer syntax of
  :data:`SYNTAXES` (:mod:`.syntaxes`), streaming frames one at a time (:mod:`.multiframe`);
  :func:`write_series` writes single-frame CT slices of one series (:mod:`.series`).

The headers are valid for their IODs (Enhanced CT, :mod:`.enhanced_ct`; Multi-frame
Grayscale Word Secondary Capture and Ultrasound Multi-frame, :mod:`.mr_us`; CT Image for
:func:`write_series`): dicom3tools' ``dciodvfy`` reports no error in any syntax it knows.

UIDs are derived deterministically: Patient and Study from ``seed`` (files written with the
same seed form one study), Series and SOP Instance from all parameters (two different files
never share a SOP Instance UID, the same call always produces the same UIDs).

The package sits above :mod:`dcmstream.compress` (it writes through the compressor's
streaming writer and JPEG-LS encoder, public names only) and below the CLI's ``demo``.
"""

from __future__ import annotations

from .multiframe import ensure_sample, write_multiframe
from .pixels import KINDS, FrameSource, synthetic_frames
from .series import write_series
from .syntaxes import OFFSET_TABLES, SYNTAXES

__all__ = [
    "KINDS",
    "OFFSET_TABLES",
    "SYNTAXES",
    "FrameSource",
    "ensure_sample",
    "synthetic_frames",
    "write_multiframe",
    "write_series",
]
