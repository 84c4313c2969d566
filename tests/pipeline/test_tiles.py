"""Tiles (with overlap, of frames and of TILED_FULL slides), regions of interest from
low-resolution levels, and the Zarr sink."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import dcmstream
from dcmstream import pipeline
from dcmstream.image.frame_reader import FrameReader
from dcmstream.pipeline import ItemOptions, RunOptions
from dcmstream.pipeline.tiles import SlideGeometry, read_region, tile_grid
from dcmstream.samples import write_multiframe

from .conftest import write_wsi

zarr = pytest.importorskip("zarr")


@pytest.mark.parametrize("h,w,t,o", [(100, 130, 32, 5), (64, 64, 64, 0), (10, 7, 32, 3), (1000, 999, 256, 40)])
def test_tile_cores_cover_the_image_exactly_once(h: int, w: int, t: int, o: int) -> None:
    hits = np.zeros((h, w), np.int32)
    for spec in tile_grid(h, w, t, o):
        cy, cx, ch, cw = spec.core
        hits[cy : cy + ch, cx : cx + cw] += 1
        assert cy % t == 0 and cx % t == 0 and ch <= t and cw <= t
        # region = core grown by the overlap, clipped to the image
        assert spec.y == max(0, cy - o) and spec.x == max(0, cx - o)
        assert spec.y + spec.height == min(h, cy + ch + o) and spec.x + spec.width == min(w, cx + cw + o)
        assert spec.grid == (cy // t, cx // t)
    assert (hits == 1).all()


def slide_image(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(180, 255, (rows, cols, 3)).astype(np.uint8)  # pale background
    return img


def test_read_region_of_a_slide() -> None:
    img = np.arange(300 * 500).reshape(300, 500)
    geo = SlideGeometry(300, 500, 64, 64)
    padded = np.zeros((geo.tiles_down * 64, geo.tiles_across * 64), img.dtype)
    padded[:300, :500] = img

    def tile(f: int) -> np.ndarray:
        r, c = divmod(f, geo.tiles_across)
        return padded[r * 64 : (r + 1) * 64, c * 64 : (c + 1) * 64]

    for y, x, h, w in [(0, 0, 64, 64), (10, 20, 100, 200), (250, 450, 50, 50), (0, 0, 300, 500), (63, 63, 2, 2)]:
        np.testing.assert_array_equal(read_region(geo, tile, y, x, h, w), img[y : y + h, x : x + w])
    with pytest.raises(ValueError):
        read_region(geo, tile, 290, 0, 20, 10)


def test_tiles_of_frames_with_overlap_rebuild_the_frames(tmp_path: Path) -> None:
    path = write_multiframe(tmp_path / "ct.dcm", frames=3, syntax="jpeg-ls", kind="ct", rows=100, columns=130)
    sink = pipeline.ListSink()
    report = pipeline.run(path, lambda t: t, unit="tile", sink=sink, workers=2, options=RunOptions(items=ItemOptions(tile_size=32, overlap=5)))
    assert report.items == 3 * 4 * 5
    with dcmstream.open(path, cache=False) as inst:
        frames = [inst.frame(i) for i in range(3)]
    rebuilt = np.zeros((3, 100, 130), np.uint16)
    for tile in sink.results:
        assert isinstance(tile, pipeline.Tile)
        f = frames[tile.frame]
        np.testing.assert_array_equal(tile.array, f[tile.y : tile.y + tile.height, tile.x : tile.x + tile.width])
        cy, cx, ch, cw = tile.core
        rebuilt[tile.frame, cy : cy + ch, cx : cx + cw] = tile.core_array
        assert tile.array.flags.writeable
    np.testing.assert_array_equal(rebuilt, np.stack(frames))


def test_tiles_of_a_tiled_full_slide(tmp_path: Path) -> None:
    img = slide_image(300, 500)
    path = write_wsi(tmp_path / "slide.dcm", img, tile=64)
    with dcmstream.open(path, cache=False) as inst:
        assert len(inst) == 5 * 8
    sink = pipeline.ListSink()
    report = pipeline.run(path, lambda t: t, unit="tile", sink=sink, options=RunOptions(items=ItemOptions(tile_size=100, overlap=7)))
    assert report.items == 3 * 5
    covered = np.zeros(img.shape[:2], np.int32)
    for tile in sink.results:
        assert tile.frame == 0 and tile.array.shape[2] == 3
        np.testing.assert_array_equal(tile.array, img[tile.y : tile.y + tile.height, tile.x : tile.x + tile.width])
        cy, cx, ch, cw = tile.core
        covered[cy : cy + ch, cx : cx + cw] += 1
    assert (covered == 1).all()
    # unit="frame" gives the stored tiles themselves
    frames = pipeline.ListSink()
    pipeline.run(path, lambda f: f.array.shape, sink=frames)
    assert len(frames.results) == 40 and set(frames.results) == {(64, 64, 3)}


def tissue(low: np.ndarray) -> np.ndarray:
    """Dark pixels are tissue (the background is pale)."""
    grey = low.mean(axis=-1) if low.ndim == 3 else low
    return grey < 120


def test_region_of_interest_from_a_pyramid_level(tmp_path: Path) -> None:
    img = slide_image(512, 512, seed=3)
    img[300:360, 100:180] = 40  # the tissue
    uid = "1.2.3.4.77"
    base = write_wsi(tmp_path / "level0.dcm", img, tile=64, series_uid=uid)
    low = write_wsi(tmp_path / "level2.dcm", np.ascontiguousarray(img[::4, ::4]), tile=64, series_uid=uid)
    seen: list[tuple[int, int]] = []
    report = pipeline.run([base, low], lambda t: seen.append(t.grid) or t.core, unit="tile", options=RunOptions(items=ItemOptions(tile_size=64, roi=tissue, roi_level=2)))
    # tiles whose core touches rows 300..359 and columns 100..179 at full resolution
    expected = {(r, c) for r in range(300 // 64, 359 // 64 + 1) for c in range(100 // 64, 179 // 64 + 1)}
    assert set(seen) == expected and report.items == len(expected)
    assert report.selected_out == 64 - len(expected)
    # the smaller level is not processed as a slide of its own
    assert report.planned == len(expected)


def test_region_of_interest_from_jpeg2000_resolution_levels(tmp_path: Path) -> None:
    img = slide_image(256, 384, seed=4)
    img[10:40, 300:330] = 30
    path = write_wsi(tmp_path / "j2k.dcm", img, tile=128, j2k=True)  # one slide, no pyramid
    decoded_levels = []
    orig = FrameReader.decode  # where every frame of an Instance is decoded

    def spy(self, data, i=0, level=0, **kwargs):  # every actual decode (cache hits do not decode)
        decoded_levels.append(level)
        return orig(self, data, i, level, **kwargs)

    FrameReader.decode = spy
    try:
        sink = pipeline.ListSink()
        report = pipeline.run(path, lambda t: t, unit="tile", sink=sink, options=RunOptions(items=ItemOptions(tile_size=64, roi=tissue, roi_level=2)))
    finally:
        FrameReader.decode = orig
    assert {t.grid for t in sink.results} == {(0, 4), (0, 5)}
    assert report.items == 2
    for t in sink.results:
        np.testing.assert_array_equal(t.array, img[t.y : t.y + t.height, t.x : t.x + t.width])
    # the ROI look decoded every stored tile at level 2 only; full resolution only the one
    # stored tile (columns 256..383 of the first row) that holds the selected tiles
    assert decoded_levels.count(2) == 2 * 3
    assert decoded_levels.count(0) == 1


def test_region_of_interest_on_frames(tmp_path: Path) -> None:
    path = write_multiframe(tmp_path / "ct.dcm", frames=6, syntax="htj2k-lossless", kind="ct", rows=64, columns=64)
    with dcmstream.open(path, cache=False) as inst:
        bright = {i for i in range(6) if inst.frame(i, level=2).max() > 0}
        assert bright  # sanity
        sink = pipeline.ListSink()
        report = pipeline.run(path, lambda f: f.frame, sink=sink, options=RunOptions(items=ItemOptions(roi=lambda low: low.mean() > 400, roi_level=2)))
        expected = [i for i in range(6) if inst.frame(i, level=2).mean() > 400]
    assert sink.results == expected and report.selected_out == 6 - len(expected)


def test_zarr_sink_frames_equal_the_direct_computation(tmp_path: Path) -> None:
    a = write_multiframe(tmp_path / "a.dcm", frames=5, syntax="jpeg-ls", kind="ct", rows=40, columns=30)
    b = write_multiframe(tmp_path / "b.dcm", frames=3, syntax="explicit", kind="mr", rows=20, columns=24)
    out = tmp_path / "out.zarr"
    report = pipeline.run([a, b], lambda f: (f.array // 2).astype(np.uint16), sink=out, memory_budget="16MB")
    assert report.items == 8
    group = zarr.open_group(str(out), mode="r")
    assert sorted(group.array_keys()) == ["a", "b"]
    for name, path in (("a", a), ("b", b)):
        arr = group[name]
        with dcmstream.open(path, cache=False) as inst:
            direct = np.stack([inst.frame(i) // 2 for i in range(len(inst))])
        assert arr.chunks == (1, *direct.shape[1:]) and arr.attrs["source"] == str(path)
        np.testing.assert_array_equal(arr[:], direct)


def test_zarr_sink_places_tile_cores(tmp_path: Path) -> None:
    img = slide_image(300, 500)
    path = write_wsi(tmp_path / "slide.dcm", img, tile=64)
    out = tmp_path / "tiles.zarr"

    def darker(tile):  # per pixel, so the overlap is computed and dropped
        return (tile.array // 2).astype(np.uint8)

    pipeline.run(path, darker, unit="tile", sink=out, options=RunOptions(items=ItemOptions(tile_size=128, overlap=9)))
    arr = zarr.open_group(str(out), mode="r")["slide"]
    assert arr.shape == (300, 500, 3) and arr.chunks == (128, 128, 3)
    np.testing.assert_array_equal(arr[:], img // 2)
    # a result of another shape goes to the tile's grid cell
    pipeline.run(path, lambda t: t.array.mean(axis=(0, 1)), unit="tile", sink=tmp_path / "grid.zarr", options=RunOptions(items=ItemOptions(tile_size=128)))
    grid = zarr.open_group(str(tmp_path / "grid.zarr"), mode="r")["slide"]
    assert grid.shape == (3, 4, 3)
    np.testing.assert_allclose(grid[1, 2], img[128:256, 256:384].mean(axis=(0, 1)))
