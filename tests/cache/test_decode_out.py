"""Decoding into ``out=`` gives the same frames as decoding into fresh memory.

Every transfer syntax of the generated samples (grey CT, signed CT, RGB ultrasound) and
every pixel-data file of the real corpora: the frame decoded into a buffer of the
frame's shape and dataset type - pre-filled with garbage, so stale pixels would show -
equals ``Instance.frame`` (the reference path, no ``out``) in values and dtype. The
decode is the frame reader's (``FrameReader.decode(..., out=)``), the one a cache's
recycled buffers go through.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import dcmstream
from dcmstream.codecs import decoders
from dcmstream.codecs.base import out_view
from dcmstream.samples import SYNTAXES, write_multiframe

from ..conftest import corpus_files

FILES = corpus_files()
CASES = [(syntax, kind, False) for syntax in SYNTAXES for kind in ("ct", "us")] + [
    (syntax, "ct", True) for syntax in SYNTAXES
]


def garbage(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    out = np.empty(shape, dtype)
    out.view(np.uint8)[...] = 0xA5
    return out


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    folder = tmp_path_factory.mktemp("out-samples")
    made: dict[tuple[str, str, bool], object] = {}

    def get(syntax: str, kind: str, signed: bool):
        key = (syntax, kind, signed)
        if key not in made:
            path = folder / f"{syntax}-{kind}-{signed}.dcm"
            try:
                made[key] = write_multiframe(path, frames=3, syntax=syntax, kind=kind, rows=48, columns=40, signed=signed)
            except ValueError as exc:  # a combination the writer refuses (e.g. 16-bit baseline JPEG)
                made[key] = exc
        value = made[key]
        if isinstance(value, Exception):
            pytest.skip(str(value))
        return value

    return get


@pytest.mark.parametrize("syntax, kind, signed", CASES, ids=[f"{s}-{k}{'-signed' if g else ''}" for s, k, g in CASES])
def test_generated_frames_decode_into_out_identically(samples, syntax: str, kind: str, signed: bool) -> None:
    path = samples(syntax, kind, signed)
    with dcmstream.open(path, cache=False) as inst:
        spec = inst.pixel_spec
        for j in range(len(inst)):
            out = garbage(spec.shape, spec.dtype)
            mine = inst.reader.decode(inst.encoded_frame(j), j, out=out)
            ref = inst.frame(j)
            assert mine.dtype == ref.dtype and mine.shape == ref.shape
            np.testing.assert_array_equal(mine, ref)
            if spec.photometric_interpretation not in ("YBR_FULL", "YBR_FULL_422"):
                # Only a colour conversion after decoding needs memory of its own.
                assert np.may_share_memory(mine, out), f"{syntax}: the decoder did not use out="


@pytest.mark.parametrize("path", FILES, ids=[os.path.relpath(p, os.path.dirname(os.path.dirname(p))) for p in FILES])
def test_corpus_frames_decode_into_out_identically(path: str) -> None:
    try:
        inst = dcmstream.open(path, cache=False)
    except dcmstream.DcmstreamError:
        pytest.skip("not opened (covered by the conformance tests)")
    with inst:
        if not inst.has_pixels or not len(inst):
            pytest.skip("no pixel data")
        spec = inst.pixel_spec
        n = len(inst)
        for j in sorted({0, n // 2, n - 1}):
            try:
                ref = inst.frame(j)
            except dcmstream.DcmstreamError:
                pytest.skip("frame not decodable (covered by the conformance tests)")
            out = garbage(spec.shape, spec.dtype)
            mine = inst.reader.decode(inst.encoded_frame(j), j, out=out)
            assert mine.dtype == ref.dtype and mine.shape == ref.shape
            np.testing.assert_array_equal(mine, ref)


def test_every_imagecodecs_decoder_takes_out() -> None:
    assert {d.name for d in decoders() if d.takes_out} >= {
        "imagecodecs.jpeg8",
        "imagecodecs.jpegls",
        "imagecodecs.jpeg2k",
        "imagecodecs.htj2k",
        "imagecodecs.dicomrle",
    }


def test_out_view_takes_same_width_integers_only() -> None:
    out = np.empty((4, 4), np.int16)
    assert out_view(out, np.uint16).dtype == np.uint16
    assert np.shares_memory(out_view(out, np.uint16), out)
    assert out_view(out, np.uint8) is None  # other width
    assert out_view(out.T, np.int16) is None  # not C-contiguous
    assert out_view(np.empty(4, np.float32), np.int32) is None  # floats only as themselves
    assert out_view(np.empty(4, np.float32), np.float32) is not None
    readonly = np.empty(4, np.uint8)
    readonly.flags.writeable = False
    assert out_view(readonly, np.uint8) is None
    assert out_view(None, np.uint8) is None


def test_an_out_that_does_not_fit_is_ignored(testfile) -> None:
    with dcmstream.open(testfile("emri_small_jpeg_ls_lossless.dcm"), cache=False) as inst:
        spec = inst.pixel_spec
        wrong = np.empty((spec.rows + 1, spec.columns), spec.dtype)
        mine = inst.reader.decode(inst.encoded_frame(0), 0, out=wrong)
        assert not np.may_share_memory(mine, wrong)
        np.testing.assert_array_equal(mine, inst.frame(0))
