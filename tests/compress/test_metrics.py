"""QA metrics against straightforward reference implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydicom.dataset import Dataset

from dcmstream.compress.metrics import (
    Window,
    frame_metrics,
    max_abs_error,
    psnr,
    ssim,
    window_from_dataset,
    window_psnr,
)


def _ssim_reference(x: np.ndarray, y: np.ndarray, data_range: float, win: int = 7) -> float:
    """Window by window, as scikit-image defines it (uniform window, sample covariance)."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for r in range(x.shape[0] - win + 1):
        for c in range(x.shape[1] - win + 1):
            a, b = x[r:r + win, c:c + win].ravel(), y[r:r + win, c:c + win].ravel()
            ua, ub = a.mean(), b.mean()
            va, vb = a.var(ddof=1), b.var(ddof=1)
            cov = ((a - ua) * (b - ub)).sum() / (a.size - 1)
            values.append((2 * ua * ub + c1) * (2 * cov + c2)
                          / ((ua * ua + ub * ub + c1) * (va + vb + c2)))
    return float(np.mean(values))


def test_psnr_and_max_error() -> None:
    a = np.zeros((10, 10), np.uint16)
    b = a.copy()
    assert psnr(a, b, 4095) == math.inf and max_abs_error(a, b) == 0
    b[0, 0] = 10
    mse = 100 / 100
    assert psnr(a, b, 4095) == pytest.approx(10 * math.log10(4095**2 / mse))
    assert max_abs_error(a, b) == 10
    s = np.array([[-5, 3]], np.int16)
    assert max_abs_error(s, np.array([[5, -3]], np.int16)) == 10


@pytest.mark.parametrize("shape", [(20, 23), (140, 9), (9, 9)])
def test_ssim_matches_the_definition(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 4096, shape).astype(np.uint16)
    y = np.clip(x.astype(int) + rng.integers(-80, 80, shape), 0, 4095).astype(np.uint16)
    assert ssim(x, y, 4095) == pytest.approx(_ssim_reference(x, y, 4095), rel=1e-9)
    assert ssim(x, x, 4095) == pytest.approx(1.0)


def test_ssim_colour_is_mean_of_channels() -> None:
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (16, 16, 3)).astype(np.uint8)
    y = np.clip(x.astype(int) + rng.integers(-20, 20, x.shape), 0, 255).astype(np.uint8)
    expected = np.mean([_ssim_reference(x[..., k], y[..., k], 255) for k in range(3)])
    assert ssim(x, y, 255) == pytest.approx(expected, rel=1e-9)


def test_window_psnr_sees_only_the_window() -> None:
    # Errors far outside a soft-tissue window (air at -1000 HU) are invisible in it.
    ref = np.full((32, 32), 24, np.uint16)  # -1000 HU with intercept -1024
    ref[8:24, 8:24] = 1064  # +40 HU
    noisy = ref.copy()
    noisy[:4] += 50  # big error in air
    window = Window(center=40, width=400, slope=1, intercept=-1024)
    assert window_psnr(ref, noisy, window) == math.inf
    assert psnr(ref, noisy, 4095) < 50
    noisy[10, 10] += 20
    assert window_psnr(ref, noisy, window) < 60


def test_window_from_dataset_top_level_and_functional_groups() -> None:
    ds = Dataset()
    ds.WindowCenter, ds.WindowWidth = [40, 300], [400, 1500]
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    assert window_from_dataset(ds) == Window(40, 400, 1, -1024)
    enhanced = Dataset()
    voi, transform, shared = Dataset(), Dataset(), Dataset()
    voi.WindowCenter, voi.WindowWidth = 50, 350
    transform.RescaleSlope, transform.RescaleIntercept = 1, -1024
    shared.FrameVOILUTSequence = [voi]
    shared.PixelValueTransformationSequence = [transform]
    enhanced.SharedFunctionalGroupsSequence = [shared]
    assert window_from_dataset(enhanced) == Window(50, 350, 1, -1024)
    assert window_from_dataset(Dataset()) is None


def test_frame_metrics() -> None:
    a = np.arange(64, dtype=np.uint16).reshape(8, 8)
    m = frame_metrics(a, a, bits_stored=12, window=Window(30, 60))
    assert (m.psnr, m.ssim, m.max_error, m.window_psnr) == (math.inf, 1.0, 0, math.inf)
