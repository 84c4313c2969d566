"""Accept negotiation rules and the multipart writer/parser, without a server."""

from __future__ import annotations

import os

import pytest

from dcmstream.web.media import EXPLICIT_LE, negotiate_instance, negotiate_pixels, parse_accept
from dcmstream.web.multipart import MultipartError, MultipartParser, MultipartWriter, PartData, PartEnd, PartHeaders

JLS, HTJ2K, JPEG = "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.50"


def pixels(accept: str | None, stored: str):
    choice = negotiate_pixels(parse_accept(accept), stored)
    return None if choice is None else (choice.media_type, choice.transfer_syntax, choice.decode)


@pytest.mark.parametrize(
    "accept,stored,expected",
    [
        (None, JLS, ("application/octet-stream", EXPLICIT_LE, True)),
        ("*/*", JLS, ("application/octet-stream", EXPLICIT_LE, True)),
        ('multipart/related; type="*/*"', JLS, ("application/octet-stream", EXPLICIT_LE, True)),
        ('multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1', JLS, ("application/octet-stream", EXPLICIT_LE, True)),
        ("multipart/related; type=application/octet-stream; transfer-syntax=*", JLS, ("image/jls", JLS, False)),
        ('multipart/related; type="image/jls"', JLS, ("image/jls", JLS, False)),
        ('multipart/related; type="image/x-jls"', JLS, ("image/jls", JLS, False)),
        ('multipart/related; type="image/*"', JPEG, ("image/jpeg", JPEG, False)),
        ('multipart/related; type="image/jp2"', JLS, None),
        ('multipart/related; type="image/jp2", multipart/related; type="application/octet-stream"', JLS, ("application/octet-stream", EXPLICIT_LE, True)),
        ('multipart/related; type="image/jls"; q=0.5, multipart/related; type="application/octet-stream"', JLS, ("application/octet-stream", EXPLICIT_LE, True)),
        # HTJ2K only when asked by name or by "*": dicomweb-client refuses image/jphc
        (None, HTJ2K, ("application/octet-stream", EXPLICIT_LE, True)),
        ('multipart/related; type="image/*"', HTJ2K, None),
        ('multipart/related; type="image/jphc"', HTJ2K, ("image/jphc", HTJ2K, False)),
        (f'multipart/related; type="image/jphc"; transfer-syntax={HTJ2K}', HTJ2K, ("image/jphc", HTJ2K, False)),
        ("multipart/related; type=application/octet-stream; transfer-syntax=*", HTJ2K, ("image/jphc", HTJ2K, False)),
        # native data is always sent as Explicit VR Little Endian pixels
        ("multipart/related; type=application/octet-stream; transfer-syntax=*", "1.2.840.10008.1.2", ("application/octet-stream", EXPLICIT_LE, True)),
        ('multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2', EXPLICIT_LE, None),
        ("image/png", JLS, None),
    ],
)
def test_pixel_negotiation(accept, stored, expected) -> None:
    assert pixels(accept, stored) == expected


def test_single_part_when_not_multipart() -> None:
    assert negotiate_pixels(parse_accept("application/octet-stream"), JLS).multipart is False
    assert negotiate_pixels(parse_accept('multipart/related; type="application/octet-stream"'), JLS).multipart is True


@pytest.mark.parametrize(
    "accept,stored,expected",
    [
        (None, JLS, EXPLICIT_LE),
        ('multipart/related; type="application/dicom"', JLS, EXPLICIT_LE),
        ('multipart/related; type="application/dicom"', EXPLICIT_LE, None),
        ('multipart/related; type="application/dicom"; transfer-syntax=*', JLS, None),
        (f'multipart/related; type="application/dicom"; transfer-syntax={JLS}', JLS, None),
    ],
)
def test_instance_negotiation(accept, stored, expected) -> None:
    assert negotiate_instance(parse_accept(accept), stored).transfer_syntax == expected


def test_instance_negotiation_refusals() -> None:
    assert negotiate_instance(parse_accept(f'multipart/related; type="application/dicom"; transfer-syntax={JPEG}'), JLS) is None
    assert negotiate_instance(parse_accept("application/dicom+json"), JLS) is None


def _roundtrip(parts: list[tuple[str, bytes]], chunk: int) -> list[tuple[dict, bytes]]:
    writer = MultipartWriter("XyZ-boundary")
    body = b"".join(writer.part(ct, data) for ct, data in parts) + writer.close()
    parser = MultipartParser(writer.boundary)
    out: list[tuple[dict, bytes]] = []
    current = bytearray()
    headers: dict = {}
    for i in range(0, len(body), chunk):
        for event in parser.feed(body[i : i + chunk]):
            if isinstance(event, PartHeaders):
                headers, current = event.headers, bytearray()
            elif isinstance(event, PartData):
                current += event.data
            elif isinstance(event, PartEnd):
                out.append((headers, bytes(current)))
    parser.finish()
    return out


@pytest.mark.parametrize("chunk", [1, 7, 13, 64, 1 << 20])
def test_multipart_roundtrip_any_chunking(chunk: int) -> None:
    payloads = [("application/dicom", os.urandom(3000)), ("image/jls", b""), ("application/dicom", b"\r\n--XyZ-boundar" * 20)]
    parsed = _roundtrip(payloads, chunk)
    assert [(h["content-type"], b) for h, b in parsed] == payloads


def test_multipart_parser_limits() -> None:
    with pytest.raises(MultipartError):
        MultipartParser("x" * 71)
    parser = MultipartParser("b", max_header_bytes=100)
    with pytest.raises(MultipartError, match="headers exceed"):
        parser.feed(b"--b\r\nX: " + b"a" * 200)
    parser = MultipartParser("b", max_parts=2)
    with pytest.raises(MultipartError, match="more than 2 parts"):
        parser.feed(b"--b\r\n\r\nx\r\n--b\r\n\r\ny\r\n--b\r\n\r\nz\r\n--b--")
    parser = MultipartParser("b")
    parser.feed(b"--b\r\nContent-Type: application/dicom\r\n\r\nhalf a part")
    with pytest.raises(MultipartError, match="truncated"):
        parser.finish()
    parser = MultipartParser("b")
    with pytest.raises(MultipartError, match="malformed header"):
        parser.feed(b"--b\r\nno colon here\r\n\r\n")
    with pytest.raises(MultipartError, match="no multipart boundary"):
        MultipartParser("b").feed(b"x" * 70_000)
