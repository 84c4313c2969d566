"""dcmstream.units: one parser/formatter for sizes and display windows."""

from __future__ import annotations

import pytest

import dcmstream
from dcmstream.units import InvalidValueError, check_window, format_bytes, parse_size, parse_window


@pytest.mark.parametrize(("text", "expected"), [
    ("2GB", 2 * 10**9), ("512MiB", 512 << 20), ("1.5G", 1_500_000_000), ("64mb", 64 * 10**6),
    (" 3 kib ", 3072), ("1000000", 1_000_000), (4096, 4096), (1.5e3, 1500), ("2TiB", 2 << 40),
])
def test_parse_size(text, expected) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["lots", "", "2 XB", "-1GB", "0", 0, -5, True, "1e3", "GB", float("nan"), float("inf")])
def test_parse_size_refuses_bad_input_with_a_dcmstream_error(bad) -> None:
    with pytest.raises(InvalidValueError) as info:
        parse_size(bad)
    assert isinstance(info.value, dcmstream.DcmstreamError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize(("n", "text"), [
    (0, "0 B"), (1023, "1,023 B"), (1024, "1.0 KiB"), (1.2 * (1 << 30), "1.2 GiB"),
    (1000 * (1 << 20), "1,000.0 MiB"), (5 << 40, "5.0 TiB"), (5000 << 40, "5,000.0 TiB"), (-2048, "-2.0 KiB"),
])
def test_format_bytes(n, text) -> None:
    assert format_bytes(n) == text


def test_format_then_parse_round_trips_binary_units() -> None:
    for n in (3 << 10, 7 << 20, 9 << 30):
        assert parse_size(format_bytes(n).replace(" ", "")) == n


def test_parse_window() -> None:
    assert parse_window("40,400") == (40.0, 400.0)
    assert parse_window(" -600 , 1500.5 ") == (-600.0, 1500.5)
    assert check_window((40, 400)) == (40.0, 400.0)


@pytest.mark.parametrize("bad", ["40", "40,400,1", "a,b", "40,0", "40,-5", "nan,400", "40,inf", "", ","])
def test_parse_window_refuses_bad_input(bad) -> None:
    with pytest.raises(InvalidValueError) as info:
        parse_window(bad)
    assert isinstance(info.value, dcmstream.DcmstreamError)


@pytest.mark.parametrize("bad", [None, 40, (40,), (40, 0), ("a", 1), (1, 2, 3)])
def test_check_window_refuses_bad_pairs(bad) -> None:
    with pytest.raises(InvalidValueError):
        check_window(bad)
