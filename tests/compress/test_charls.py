"""JPEG-LS through CharLS' C API (ctypes): the precision is Bits Stored, the codestream is the
one pyjpegls writes, signed data round-trips, and bad input gets a typed error."""

from __future__ import annotations

import struct

import imagecodecs
import numpy as np
import pytest

from dcmstream.codecs import charls
from dcmstream.compress import encoders

pytestmark = pytest.mark.skipif(not charls.charls_available(), reason="CharLS C API not loadable")


def _sof55(codestream: bytes) -> tuple[int, int, int, int]:
    """(precision, rows, columns, components) from the JPEG-LS frame header."""
    at = codestream.index(b"\xff\xf7")
    precision, rows, columns, components = struct.unpack_from(">BHHB", codestream, at + 4)
    return precision, rows, columns, components


def test_twelve_bit_codestream_declares_bits_stored_and_matches_pyjpegls() -> None:
    from jpeg_ls import encode_buffer

    rng = np.random.default_rng(3)
    frame = rng.normal(1000, 80, (64, 48)).clip(0, 4095).astype(np.uint16)
    ours = charls.encode(frame, 12)
    assert _sof55(ours) == (12, 64, 48, 1)
    assert ours == bytes(encode_buffer(frame.tobytes(), 64, 48, 1, 12, lossy_error=0, interleave_mode=0))
    np.testing.assert_array_equal(imagecodecs.jpegls_decode(ours), frame)


def test_colour_is_coded_by_pixel_and_near_lossless_keeps_its_bound() -> None:
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)
    coded = charls.encode(rgb, 8)
    assert _sof55(coded) == (8, 30, 20, 3)
    np.testing.assert_array_equal(imagecodecs.jpegls_decode(coded), rgb)
    smooth = np.add.outer(np.arange(64), np.arange(64)).astype(np.uint16) * 16
    near = imagecodecs.jpegls_decode(charls.encode(smooth, 12, near=3)).astype(int)
    assert 0 < np.abs(near - smooth).max() <= 3


def test_noise_larger_than_the_size_estimate_is_still_coded() -> None:
    # Uniform noise codes larger than the raw samples; the first buffer is refused and
    # the encode is redone with room for the worst case.
    rng = np.random.default_rng(5)
    noise = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    coded = charls.encode(noise, 8)
    assert len(coded) > noise.nbytes
    np.testing.assert_array_equal(imagecodecs.jpegls_decode(coded), noise)


def test_signed_samples_round_trip_through_their_bit_pattern() -> None:
    rng = np.random.default_rng(6)
    signed = rng.integers(-2048, 2048, (40, 40)).astype(np.int16)
    coded = encoders.jpegls_encode(signed, 12, True)
    assert _sof55(coded)[0] == 12
    pattern = imagecodecs.jpegls_decode(coded).astype(np.int16)
    restored = (pattern << 4) >> 4  # sign-extend from Bits Stored, as readers do
    np.testing.assert_array_equal(restored, signed)


def test_the_encoder_releases_the_gil_at_any_precision() -> None:
    enc = encoders.JpegLsEncoder(bits_stored=12, bits_allocated=16, signed=True, samples=1)
    assert enc.releases_gil  # so --jobs N runs threads, not processes


def test_pyjpegls_fallback_writes_the_same_codestream(monkeypatch) -> None:
    frame = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 4096
    direct = encoders.jpegls_encode(frame, 12, False)
    monkeypatch.setattr(charls, "charls_available", lambda: False)
    assert encoders.jpegls_encode(frame, 12, False) == direct
    assert not encoders.JpegLsEncoder(bits_stored=12, bits_allocated=16, signed=False, samples=1).releases_gil


@pytest.mark.parametrize("frame, bits", [
    (np.zeros((8, 8), np.float32), 12),  # not integer samples
    (np.zeros((8, 8), np.uint16), 17),  # precision beyond the container
    (np.zeros((8, 8), np.uint8), 1),  # JPEG-LS needs at least 2 bits
    (np.zeros((2, 8, 8, 3), np.uint8), 8),  # not one frame
])
def test_bad_input_is_a_typed_error(frame: np.ndarray, bits: int) -> None:
    with pytest.raises(charls.CharlsError):
        charls.encode(frame, bits)
