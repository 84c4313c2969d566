"""Rendering to 8 bits against references computed here from the formulas of PS3.3 C.11,
with pydicom's apply_modality_lut / apply_voi_lut / apply_color_lut as oracles for
the lookup-table sequences, SIGMOID and palettes."""

from __future__ import annotations

import copy

import numpy as np
import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut
from pydicom.sequence import Sequence
from pydicom.tag import Tag

import dcmstream
from dcmstream.cache import FrameCache
from dcmstream.image.render import Renderer, display_params, resize_area, target_shape, window_to_uint8
from dcmstream.samples import write_multiframe


# -- the reference: plain float64 formulas of the standard ----------------------------------
def ref_linear(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """C.11.2.1.2.1, output range 0..255."""
    x = x.astype(np.float64)
    y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255
    y[x <= c - 0.5 - (w - 1) / 2] = 0
    y[x > c - 0.5 + (w - 1) / 2] = 255
    return np.rint(y).astype(np.uint8)


def ref_linear_exact(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """C.11.2.1.3.2."""
    x = x.astype(np.float64)
    y = ((x - c) / w + 0.5) * 255
    y[x <= c - w / 2] = 0
    y[x > c + w / 2] = 255
    return np.rint(y).astype(np.uint8)


def assert_close(ours: np.ndarray, ref: np.ndarray) -> None:
    """Equal, allowing one grey level where float rounding lands on .5 differently."""
    assert ours.dtype == np.uint8 and ours.shape == ref.shape
    diff = np.abs(ours.astype(int) - ref.astype(int))
    assert diff.max() <= 1
    assert (diff == 0).mean() > 0.999


def _ds(arr: np.ndarray, **attrs: object) -> Dataset:
    ds = Dataset()
    ds.Rows, ds.Columns = arr.shape[:2]
    ds.SamplesPerPixel = 1 if arr.ndim == 2 else arr.shape[2]
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8 * arr.dtype.itemsize
    ds.PixelRepresentation = int(arr.dtype.kind == "i")
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


# -- grey windows -----------------------------------------------------------------------
def test_ct_small_window_and_rescale(testfile):
    path = testfile("CT_small.dcm")  # int16, intercept -1024, no window in the file
    with dcmstream.open(path, cache=False) as inst:
        stored = inst.frame(0)
        hu = stored.astype(np.float64) * 1 - 1024
        assert_close(inst.render(0, window=(40, 400)), ref_linear(hu, 40, 400))
        assert_close(inst.render(0, window=(-600, 1500)), ref_linear(hu, -600, 1500))
        # No window in the file: the frame's own range maps to 0..255
        lo, hi = hu.min(), hu.max()
        full = inst.render(0)
        assert full.min() == 0 and full.max() == 255
        assert_close(full, ref_linear(hu, (lo + hi + 1) / 2, hi - lo + 1))


def test_file_window_first_value_and_monochrome1(testfile):
    ds = pydicom.dcmread(testfile("MR_small.dcm"))  # window 600/1600
    arr = ds.pixel_array
    assert_close(Renderer(ds).render(arr), ref_linear(arr, 600, 1600))
    ds.WindowCenter, ds.WindowWidth = [300, 600], [500, 1600]  # several: the first counts
    assert_close(Renderer(ds).render(arr), ref_linear(arr, 300, 500))
    ds.PhotometricInterpretation = "MONOCHROME1"
    assert_close(Renderer(ds).render(arr), 255 - ref_linear(arr, 300, 500))
    assert_close(Renderer(ds).render(arr, window=(100, 50)), 255 - ref_linear(arr, 100, 50))


def test_linear_exact_and_sigmoid(testfile):
    ds = pydicom.dcmread(testfile("CT_small.dcm"))
    ds.WindowCenter, ds.WindowWidth = 40, 400
    arr = ds.pixel_array
    hu = arr.astype(np.float64) - 1024
    ds.VOILUTFunction = "LINEAR_EXACT"
    assert_close(Renderer(ds).render(arr), ref_linear_exact(hu, 40, 400))
    ds.VOILUTFunction = "SIGMOID"
    ours = Renderer(ds).render(arr)
    # pydicom's SIGMOID spans the rescaled stored range; bring it to 0..255
    oracle = apply_voi_lut(apply_modality_lut(arr, ds), ds)
    y_min = -(2**15) - 1024.0
    y_max = 2**15 - 1 - 1024.0
    assert_close(ours, np.rint((oracle - y_min) / (y_max - y_min) * 255).astype(np.uint8))
    # an explicit window keeps the file's function
    assert_close(Renderer(ds).render(arr, window=(0, 100)), np.rint(255 / (1 + np.exp(-4 * (hu - 0) / 100))).astype(np.uint8))


def test_lut_path_equals_float_path_for_every_stored_value():
    # 16-bit signed: every value the type holds, through the table and through floats
    values = np.arange(-(2**15), 2**15, dtype=np.int32).astype(np.int16).reshape(256, 256)
    ds = _ds(values, RescaleSlope=0.5, RescaleIntercept=-100, WindowCenter=50, WindowWidth=350)
    ours = Renderer(ds).render(values)
    assert_close(ours, ref_linear(values * 0.5 - 100, 50, 350))
    floats = Renderer(ds).render(values.astype(np.int32))  # 32-bit data: the float path
    np.testing.assert_array_equal(ours, floats)


def test_modality_lut_sequence(testfile):
    ds = pydicom.dcmread(testfile("mlut_18.dcm"))  # Modality LUT [4096, -2048, 16], no window
    arr = ds.pixel_array
    modality = apply_modality_lut(arr, ds).astype(np.float64)  # oracle
    window = (float(modality.mean()), 1000.0)
    assert_close(Renderer(ds).render(arr, window=window), ref_linear(modality, *window))
    lo, hi = modality.min(), modality.max()
    assert_close(Renderer(ds).render(arr), ref_linear(modality, (lo + hi + 1) / 2, hi - lo + 1))


def test_voi_lut_sequence(testfile):
    ds = pydicom.dcmread(testfile("vlut_04.dcm"))  # VOI LUT [256, 0, 16]
    arr = ds.pixel_array
    oracle = apply_voi_lut(arr, ds).astype(np.float64)
    assert_close(Renderer(ds).render(arr), np.rint(oracle * 255 / 65535).astype(np.uint8))
    # an explicit window wins over the LUT
    assert_close(Renderer(ds).render(arr, window=(128, 64)), ref_linear(arr, 128, 64))


def test_voi_lut_sequence_after_rescale():
    arr = np.arange(0, 4096, dtype=np.uint16).reshape(64, 64)
    item = Dataset()
    item.LUTDescriptor = [2048, -1024, 12]
    item.LUTData = [int(v) for v in np.linspace(0, 4095, 2048).astype(int)]
    ds = _ds(arr, BitsStored=12, RescaleSlope=1, RescaleIntercept=-1024, VOILUTSequence=Sequence([item]))
    with pytest.warns(UserWarning, match="VOI LUT on a float input"):  # pydicom's caveat: the oracle's input is rescaled
        oracle = apply_voi_lut(apply_modality_lut(arr, ds), ds).astype(np.float64)
    assert_close(Renderer(ds).render(arr), np.rint(oracle * 255 / 4095).astype(np.uint8))


def test_enhanced_functional_groups_per_frame(tmp_path):
    path = write_multiframe(tmp_path / "ct.dcm", frames=3, syntax="explicit", kind="ct", rows=64, columns=48)
    with dcmstream.open(path, cache=False) as inst:
        hu = inst.frame(1).astype(np.float64) - 1024
        shared = inst.dataset.SharedFunctionalGroupsSequence[0].FrameVOILUTSequence[0]
        c, w = float(shared.WindowCenter), float(shared.WindowWidth)
        assert_close(inst.render(1), ref_linear(hu, c, w))
    ds = copy.deepcopy(inst.dataset)
    frames = []
    for k in range(3):
        group = Dataset()
        voi = Dataset()
        voi.WindowCenter, voi.WindowWidth = 100 * k, 200 + 100 * k
        group.FrameVOILUTSequence = Sequence([voi])
        frames.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    renderer = Renderer(ds)
    stored = hu + 1024
    for k in range(3):
        assert_close(renderer.render(stored.astype(np.uint16), frame=k), ref_linear(hu, 100 * k, 200 + 100 * k))


# -- colour ---------------------------------------------------------------------------------
def test_rgb_passes_through_and_16_bit_rgb_is_scaled(testfile):
    with dcmstream.open(testfile("SC_rgb.dcm"), cache=False) as inst:
        np.testing.assert_array_equal(inst.render(0), inst.frame(0))
    with dcmstream.open(testfile("SC_rgb_16bit.dcm"), cache=False) as inst:
        arr = inst.frame(0)
        np.testing.assert_array_equal(inst.render(0), np.rint(arr * (255 / 65535)).astype(np.uint8))


def test_palette_colour(testfile):
    path = testfile("OBXXXX1A.dcm")
    ds = pydicom.dcmread(path)
    oracle = apply_color_lut(ds.pixel_array, ds)  # 16-bit palette entries
    with dcmstream.open(path, cache=False) as inst:
        ours = inst.render(0)
    assert ours.shape == (600, 800, 3)
    np.testing.assert_array_equal(ours, np.rint(oracle * (255 / 65535)).astype(np.uint8))


def test_ybr_jpeg_renders_as_rgb(tmp_path):
    path = write_multiframe(tmp_path / "us.dcm", frames=2, syntax="jpeg-baseline", kind="us", rows=64, columns=80)
    with dcmstream.open(path, cache=False) as inst:
        np.testing.assert_array_equal(inst.render(1), inst.frame(1))


# -- size and thumbnails ----------------------------------------------------------------------
def test_resize_area_is_a_box_average():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (64, 48), dtype=np.uint8)
    blocks = img.reshape(16, 4, 12, 4).mean(axis=(1, 3))
    np.testing.assert_array_equal(resize_area(img, 16, 12), np.rint(blocks).astype(np.uint8))
    # non-integer factor: the mean is kept, the shape is the target
    out = resize_area(img, 10, 7)
    assert out.shape == (10, 7) and abs(out.mean() - img.mean()) < 1.5
    rgb = rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)
    assert resize_area(rgb, 15, 10).shape == (15, 10, 3)
    assert target_shape(300, 257, 64) == (64, 55) and target_shape(10, 2000, 128) == (1, 128)


def test_render_size_uses_the_coarsest_sufficient_level(tmp_path):
    path = write_multiframe(tmp_path / "ct.dcm", frames=2, syntax="htj2k-lossless", kind="ct", rows=256, columns=192)
    cache = FrameCache()
    with dcmstream.open(path, cache=cache) as inst:
        # longest 256 -> 64 is level 2 exactly: no resampling at all
        np.testing.assert_array_equal(inst.render(1, size=64), inst.render(1, level=2))
        assert cache.peek((inst.cache_key, 1, "level2")) and not cache.peek((inst.cache_key, 1, "full"))
        # 100 px: level 1 (128 px) area-averaged down to 100 x 75
        expected = resize_area(inst.render(1, level=1), 100, 75)
        np.testing.assert_array_equal(inst.render(1, size=100), expected)
        thumb = inst.thumbnail(1, size=100)
        np.testing.assert_array_equal(thumb, expected)
        assert cache.peek((inst.cache_key, 1, "thumb100")) and not thumb.flags.writeable
        assert inst.thumbnail(0).shape == (128, 96)
        with pytest.raises(ValueError):
            inst.render(0, size=0)
        with pytest.raises(ValueError):
            inst.render(0, window=(40, 0))


def test_window_to_uint8_keeps_its_signature(testfile):
    ds = pydicom.dcmread(testfile("CT_small.dcm"))
    arr = ds.pixel_array
    assert_close(window_to_uint8(arr, ds, (40, 400)), ref_linear(arr - 1024.0, 40, 400))
    assert_close(window_to_uint8(arr, ds, (40, 400), photometric="MONOCHROME1"), 255 - ref_linear(arr - 1024.0, 40, 400))


def test_display_params_tolerates_corrupt_values():
    ds = _ds(np.zeros((4, 4), np.uint16))
    for tag, vr, value in ((0x00281050, "DS", b"abc "), (0x00281051, "DS", b"\x00\x01"), (0x00281053, "DS", b"x "),
                           (0x00283010, "SQ", b"\x01\x02\x03")):
        ds[tag] = RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)
    p = display_params(ds)
    assert p.window is None and p.slope == 1.0 and p.voi_lut is None
    out = Renderer(ds).render(np.arange(16, dtype=np.uint16).reshape(4, 4))
    assert out.min() == 0 and out.max() == 255
