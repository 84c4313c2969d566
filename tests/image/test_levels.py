"""Reduced resolution: ``frame(i, level=k)`` against the codecs' own reduced output
and an independent reversible 5/3 wavelet computed here (the LL band)."""

from __future__ import annotations

import imagecodecs
import numpy as np
import pytest

import dcmstream
from dcmstream.cache import FrameCache
from dcmstream.codecs import j2k_levels
from dcmstream.codecs.imagecodecs_backend import _j2k_params
from dcmstream.image.levels import check_level, geometric_max_level, level_for_size, level_shape
from dcmstream.samples import write_multiframe

from .conftest import forward_rct, inverse_rct, ll_band

ROWS, COLUMNS = 101, 77  # odd sizes: every level rounds up

# The imagecodecs wheels ship libopenjp2; without one, JPEG 2000 levels are decimated.
needs_openjpeg = pytest.mark.skipif(not j2k_levels.openjpeg_available(), reason="no libopenjp2 to load")


def _ceil_shape(k: int) -> tuple[int, int]:
    return -(-ROWS // 2**k), -(-COLUMNS // 2**k)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    folder = tmp_path_factory.mktemp("levels")

    def get(syntax: str, kind: str = "ct"):
        path = folder / f"{syntax}-{kind}.dcm"
        if not path.exists():
            write_multiframe(path, frames=3, syntax=syntax, kind=kind, rows=ROWS, columns=COLUMNS)
        return path

    return get


def _reference(full: np.ndarray, k: int, precision: int) -> np.ndarray:
    """The frame at level k as the standard defines it: the LL band, clipped to the sample range."""
    if full.ndim == 3:  # lossless colour: the reversible colour transform wraps the wavelet
        ycc = forward_rct(full)
        ref = inverse_rct(np.stack([ll_band(ycc[..., c], k) for c in range(3)], axis=-1))
    else:
        ref = ll_band(full, k)
    return np.clip(ref, 0, 2**precision - 1)


@pytest.mark.parametrize("syntax", ["j2k-lossless", "htj2k-lossless", "htj2k-rpcl"])
@needs_openjpeg
def test_jpeg2000_levels_are_the_wavelet_low_band(written, syntax):
    with dcmstream.open(written(syntax), cache=False) as inst:
        assert inst.max_level == j2k_levels.decomposition_levels(inst.encoded_frame(0))
        bits = inst.pixel_spec.bits_stored
        for i in (0, 2):
            full = inst.frame(i)
            for k in range(1, inst.max_level + 1):
                reduced = inst.frame(i, level=k)
                assert reduced.shape == _ceil_shape(k)
                assert reduced.dtype == full.dtype
                np.testing.assert_array_equal(reduced, _reference(full, k, bits))


def test_htj2k_level_matches_openjph_skipres(written):
    # Same as OpenJPH's own reduced decode wherever that is in range; where the
    # low band undershoots OpenJPH wraps around (e.g. 65275 for -261) and we clip.
    with dcmstream.open(written("htj2k-lossless"), cache=False) as inst:
        for k in (1, 2, 3):
            ours = inst.frame(1, level=k)
            theirs = imagecodecs.htj2k_decode(inst.encoded_frame(1), skipres=k)
            assert ours.shape == theirs.shape
            signed = theirs.view(np.int16).astype(np.int64)
            inside = (signed >= 0) & (signed < 2**inst.pixel_spec.bits_stored)
            assert inside.mean() > 0.8
            np.testing.assert_array_equal(ours[inside], theirs[inside])
            assert (ours[signed < 0] == 0).all()


@needs_openjpeg
def test_j2k_level_matches_openjpeg_reduce_factor(written):
    with dcmstream.open(written("j2k-lossless"), cache=False) as inst:
        data = inst.encoded_frame(1)
        for k in range(1, inst.max_level + 1):
            theirs, precision, signed = j2k_levels.decode_reduced(data, k)
            assert (precision, signed) == _j2k_params(data, inst.pixel_spec)
            np.testing.assert_array_equal(inst.frame(1, level=k), theirs)


@needs_openjpeg
@pytest.mark.parametrize("name", ["MR2_J2KR.dcm", "US1_J2KR.dcm"])
def test_real_jpeg2000_files(testfile, name):
    # MR2: 1024 x 1024 12-bit grey; US1: YBR_RCT colour (OpenJPEG undoes the RCT).
    with dcmstream.open(testfile(name), cache=False) as inst:
        full = inst.frame(0)
        precision, _ = _j2k_params(inst.encoded_frame(0), inst.pixel_spec)
        for k in (1, 3):
            reduced = inst.frame(0, level=k)
            assert reduced.shape == level_shape(full.shape, k)
            np.testing.assert_array_equal(reduced, _reference(full, k, precision))


def test_jpeg2000_without_openjpeg_falls_back_to_decimation(written, monkeypatch):
    monkeypatch.setattr("dcmstream.codecs.imagecodecs_backend.openjpeg_available", lambda: False)
    with dcmstream.open(written("j2k-lossless"), cache=False) as inst:
        np.testing.assert_array_equal(inst.frame(0, level=2), inst.frame(0)[::4, ::4])


@pytest.mark.parametrize(
    ("syntax", "kind"), [("explicit", "ct"), ("jpeg-ls", "ct"), ("rle", "ct"), ("jpeg-baseline", "us"), ("big-endian", "ct")]
)
def test_other_syntaxes_decimate(written, syntax, kind):
    with dcmstream.open(written(syntax, kind), cache=FrameCache()) as inst:
        assert inst.max_level == geometric_max_level(ROWS, COLUMNS) == 7
        full = np.array(inst.frame(1))
        for k in (1, 2, 3, 7):
            reduced = inst.frame(1, level=k)
            assert reduced.shape[:2] == _ceil_shape(k)
            np.testing.assert_array_equal(reduced, full[:: 2**k, :: 2**k])
        # Decoding straight from the encoded bytes gives the same
        np.testing.assert_array_equal(inst.decode(inst.encoded_frame(1), 1, level=2), full[::4, ::4])


def test_levels_are_validated_clamped_and_cached(written):
    cache = FrameCache()
    with dcmstream.open(written("j2k-lossless"), cache=cache) as inst:
        top = inst.max_level
        with pytest.raises(ValueError):
            inst.frame(0, level=-1)
        with pytest.raises(TypeError):
            inst.frame(0, level=1.5)
        assert inst.frame(0, level=top + 10).shape == _ceil_shape(top)
        assert inst.is_cached(0, level=top + 10) and inst.is_cached(0, level=top)
        assert cache.peek((inst.cache_key, 0, f"level{top}"))
        assert not inst.is_cached(0)  # the full frame was never decoded
        inst.frame(1, level=1)
        assert cache.peek((inst.cache_key, 1, "level1")) and not cache.peek((inst.cache_key, 1, "full"))
        inst.prefetch(2, level=2)
        assert inst.is_cached(2, level=2)
        assert inst.frame(0, level=0).shape == (ROWS, COLUMNS)


def test_decimation_reuses_a_cached_full_frame_and_does_not_cache_one(written):
    cache = FrameCache()
    with dcmstream.open(written("jpeg-ls"), cache=cache) as inst:
        inst.frame(0, level=2)
        assert not cache.peek((inst.cache_key, 0, "full"))
        full = inst.frame(1)
        decodes = cache.stats().decodes
        np.testing.assert_array_equal(inst.frame(1, level=1), full[::2, ::2])
        assert cache.stats().decodes == decodes + 1  # the level entry, from the cached frame
        encoded = cache.stats().encoded
        assert (encoded.misses, encoded.hits) == (2, 0)  # frames 0 and 1 read once each, 1 not again


def test_level_helpers():
    assert level_shape((512, 512), 3) == (64, 64)
    assert level_shape((5, 3, 3), 1) == (3, 2, 3)
    assert geometric_max_level(512, 512) == 9 and geometric_max_level(513, 2) == 10
    assert geometric_max_level(1, 1) == 0
    assert level_for_size(512, 512, 128, 9) == 2
    assert level_for_size(512, 512, 100, 9) == 2  # 128 >= 100 > 64
    assert level_for_size(512, 512, 1000, 9) == 0
    assert level_for_size(4096, 4096, 64, 5) == 5  # a J2K pyramid stops at its NL
    assert check_level(99, 4) == 4
    with pytest.raises(ValueError):
        check_level(-1, 4)
    with pytest.raises(TypeError):
        check_level(True, 4)


@needs_openjpeg
def test_decomposition_levels_parses_cod_and_coc():
    arr = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    for levels in (1, 2, 3):
        data = imagecodecs.jpeg2k_encode(arr, level=0, codecformat="j2k", resolutions=levels + 1)
        assert j2k_levels.decomposition_levels(data) == levels
    # A COC segment (component 0: 2 levels) right after SIZ lowers the usable levels.
    siz_end = 4 + int.from_bytes(data[4:6], "big")  # SOC, SIZ marker, then Lsiz counts itself
    coc = b"\xff\x53\x00\x09\x00\x00" + bytes([2, 4, 4, 0, 1])
    assert j2k_levels.decomposition_levels(data[:siz_end] + coc + data[siz_end:]) == 2
    jp2 = imagecodecs.jpeg2k_encode(arr, level=0, codecformat="jp2", resolutions=3)
    assert j2k_levels.decomposition_levels(jp2) == 2
    reduced, precision, signed = j2k_levels.decode_reduced(jp2, 2)
    assert reduced.shape == (16, 16) and (precision, signed) == (16, False)
    with pytest.raises(dcmstream.DecodeError):
        j2k_levels.decomposition_levels(b"\xff\xd8\xff\xe0")
    with pytest.raises(dcmstream.DecodeError):
        j2k_levels.decode_reduced(data[:40], 1)  # truncated: a typed error, not a crash
    with pytest.raises(dcmstream.DecodeError):
        j2k_levels.decode_reduced(data, 4)  # more than the codestream has
