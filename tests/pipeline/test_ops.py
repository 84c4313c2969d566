"""The ready-made operations' sinks: what they write, checked against hand computation."""

from __future__ import annotations

from pathlib import Path

import imagecodecs
import numpy as np

from dcmstream.pipeline.items import ItemInfo
from dcmstream.pipeline.ops import MipSink, operation


def _frames() -> list[np.ndarray]:
    a = np.array([[0, 800, 1000], [1200, 10, 4000]], np.uint16)
    b = np.array([[500, 700, 1100], [1300, 20, 100]], np.uint16)
    return [a, b]


def _mip_png(tmp_path: Path, name: str, window: tuple[float, float] | None) -> tuple[np.ndarray, np.ndarray]:
    sink = MipSink(tmp_path / name, window)
    for i, frame in enumerate(_frames()):
        sink.write(ItemInfo(seq=i, unit="frame", source="ct.dcm", frame=i, series_uid="1.2.3"), frame)
    sink.close()
    mip = np.load(tmp_path / name / "1.2.3.mip.npy")
    png = imagecodecs.png_decode((tmp_path / name / "1.2.3.mip.png").read_bytes())
    return mip, png


def _linear(x: np.ndarray, center: float, width: float) -> np.ndarray:
    # PS3.3 C.11.2.1.2.1, written out independently of the renderer.
    y = ((x.astype(np.float64) - (center - 0.5)) / (width - 1) + 0.5) * 255
    y[x <= center - 0.5 - (width - 1) / 2] = 0
    y[x > center - 0.5 + (width - 1) / 2] = 255
    return np.rint(y).astype(np.uint8)


def test_mip_png_uses_the_window(tmp_path: Path) -> None:
    mip, soft = _mip_png(tmp_path, "soft", (1000, 500))
    _, wide = _mip_png(tmp_path, "wide", (2000, 4000))
    assert mip.tolist() == [[500, 800, 1100], [1300, 20, 4000]]
    assert not np.array_equal(soft, wide)  # the window is not ignored
    np.testing.assert_array_equal(soft, _linear(mip, 1000, 500))
    np.testing.assert_array_equal(wide, _linear(mip, 2000, 4000))


def test_mip_png_without_window_spans_the_range(tmp_path: Path) -> None:
    mip, png = _mip_png(tmp_path, "auto", None)
    assert png[mip == mip.min()].tolist() == [0] and png[mip == mip.max()].tolist() == [255]
    lo, hi = float(mip.min()), float(mip.max())
    np.testing.assert_array_equal(png, np.rint((mip - lo) * 255 / (hi - lo)).astype(np.uint8))


def test_operation_passes_the_mip_window(tmp_path: Path) -> None:
    sink = operation("mip", mip_window=(40, 400)).make_sink(str(tmp_path))
    assert isinstance(sink, MipSink) and sink.window == (40, 400)
