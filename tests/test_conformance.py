"""Every pixel-data file of the real corpora: dcmstream == pydicom, frame by frame.

The reference is ``pydicom.pixels.pixel_array(ds)`` with default options. Files
pydicom cannot read or decode must give dcmstream's typed errors (or decode where
our codecs can, e.g. 12-bit JPEG). Lossy JPEG may differ by the usual +-1 rounding
between libjpeg-turbo and the reference decoders.
"""

from __future__ import annotations

import os

import numpy as np
import pydicom
import pytest
from pydicom.pixels import pixel_array
from pydicom.uid import JPEGBaseline8Bit, JPEGExtended12Bit

import dcmstream

from .conftest import corpus_files

FILES = corpus_files()
LOSSY_JPEG = {JPEGBaseline8Bit, JPEGExtended12Bit}
PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def _reference(path: str):
    """(dataset or None, pixel array or None, error text or None) from pydicom."""
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # noqa: BLE001 - any pydicom failure defines "rejects"
        return None, None, f"read: {exc}"
    if not any(t in ds for t in PIXEL_TAGS):
        return ds, None, None
    try:
        return ds, pixel_array(ds), None
    except Exception as exc:  # noqa: BLE001
        return ds, None, f"decode: {exc}"


def test_corpus_is_present():
    # pydicom ships ~100 files and pydicom-data ~80 more; a broken install
    # must not let this suite pass on nothing.
    assert len(FILES) > 150


@pytest.mark.parametrize("path", FILES, ids=[os.path.relpath(p, os.path.dirname(os.path.dirname(p))) for p in FILES])
def test_frames_match_pydicom(path: str) -> None:
    ds, ref, ref_error = _reference(path)
    try:
        inst = dcmstream.open(path)
    except (dcmstream.DicomFormatError, dcmstream.UnsupportedTransferSyntaxError) as exc:
        # Only acceptable when pydicom also cannot produce pixels.
        assert ref is None, f"dcmstream refused a file pydicom decodes: {exc}"
        return
    with inst:
        if ds is not None and ref_error is None and ref is None and not inst.has_pixels:
            assert len(inst) == 0
            return
        frames = []
        try:
            frames = [inst.frame(i) for i in range(len(inst))]
        except dcmstream.DcmstreamError as exc:
            assert ref is None, f"dcmstream failed on a frame pydicom decodes: {exc}"
            return
        if ref is None:
            # We decode what pydicom cannot: at least the shapes must be right.
            assert all(f.shape == inst.pixel_spec.shape for f in frames)
            return
        spec = inst.pixel_spec
        multi = ref.ndim == len(spec.shape) + 1
        expected_frames = ref.shape[0] if multi else 1
        assert len(inst) == expected_frames
        tolerance = 1 if inst.transfer_syntax in LOSSY_JPEG else 0
        for i, mine in enumerate(frames):
            theirs = ref[i] if multi else ref
            assert mine.shape == theirs.shape
            # pydicom keeps big-endian byte order; we return native order.
            assert mine.dtype == theirs.dtype.newbyteorder("=")
            diff = np.abs(mine.astype(np.float64) - theirs.astype(np.float64)).max()
            assert diff <= tolerance, f"frame {i}: max difference {diff}"


def test_conformance_covers_every_index_kind_and_many_syntaxes() -> None:
    kinds: set[str] = set()
    syntaxes: set[str] = set()
    for path in FILES:
        try:
            with dcmstream.open(path) as inst:
                if inst.has_pixels:
                    kinds.add(inst.frame_index.kind.value)
                    syntaxes.add(str(inst.transfer_syntax))
        except dcmstream.DcmstreamError:
            continue
    # EOT is exercised by generated fixtures (no corpus file carries one).
    assert {"native", "bot", "fragments"} <= kinds
    assert len(syntaxes) >= 12, sorted(syntaxes)


@pytest.mark.parametrize("path", FILES, ids=[os.path.relpath(p, os.path.dirname(os.path.dirname(p))) for p in FILES])
def test_header_matches_pydicom(path: str) -> None:
    # Opening reads the file meta (usually by our own plain-meta reader) and the dataset
    # up to the pixel data: both must equal what pydicom reads.
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - files pydicom rejects are covered above
        return
    try:
        inst = dcmstream.open(path, cache=False)
    except dcmstream.DcmstreamError:
        return  # a typed refusal; test_frames_match_pydicom checks it is justified
    with inst:
        mine = inst.dataset
        assert mine.file_meta == ds.file_meta
        assert mine.preamble == ds.preamble
        theirs = {e.tag: e for e in ds if e.tag not in (0x7FE00008, 0x7FE00009, 0x7FE00010)}
        ours = {e.tag: e for e in mine}
        assert set(ours) == set(theirs)
        for tag, elem in theirs.items():
            assert ours[tag].value == elem.value, f"{elem.keyword or tag}"
