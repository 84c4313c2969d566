"""The transfer syntaxes samples are written in, and how frames are encoded for each.

:data:`SYNTAXES` names every syntax; :func:`layout_for` gives the Image Pixel values of a
kind of image, :func:`codec_for` the frame encoder and the header values a syntax implies
(photometric interpretation, lossy method). The lossless JPEG-LS encoder with the precision
of Bits Stored is the compressor's (:func:`dcmstream.compress.jpegls_encode`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import imagecodecs
import numpy as np
from pydicom.uid import UID

from ..codecs.syntaxes import by_name, uid_of
from ..compress import jpegls_encode, unsigned_pattern
from ..errors import InvalidArgumentError

__all__ = ["COLOUR_PHOTOMETRICS", "LOSSY_METHODS", "OFFSET_TABLES", "SYNTAXES", "Codec", "Encoder", "Layout",
           "codec_for", "layout_for"]

#: The syntaxes samples are written in, by short name (UIDs from the one syntax table).
SYNTAXES: dict[str, UID] = {name: UID(uid_of(name)) for name in (
    "implicit", "explicit", "big-endian", "deflated", "rle", "jpeg-baseline", "jpeg-ext12", "jpeg-lossless",
    "jpeg-lossless-sv1", "jpeg-ls", "jpeg-ls-near", "j2k-lossless", "j2k", "htj2k-lossless", "htj2k-rpcl", "htj2k",
)}
OFFSET_TABLES = ("bot", "none", "eot")


@dataclass(frozen=True)
class Layout:
    """Image Pixel module values implied by the kind of image."""

    samples: int
    bits_allocated: int
    bits_stored: int
    signed: bool

    @property
    def dtype(self) -> np.dtype:
        kind = "i" if self.signed else "u"
        return np.dtype(f"{kind}{self.bits_allocated // 8}")

    def frame_bytes(self, rows: int, columns: int) -> int:
        return rows * columns * self.samples * self.bits_allocated // 8


def layout_for(kind: str, signed: bool) -> Layout:
    if kind == "us":
        return Layout(samples=3, bits_allocated=8, bits_stored=8, signed=False)
    return Layout(samples=1, bits_allocated=16, bits_stored=12, signed=signed)


Encoder = Callable[[np.ndarray], bytes]


@dataclass(frozen=True)
class Codec:
    """How frames of one syntax are encoded and what the header must say about them."""

    encode: Encoder | None  # None: native (uncompressed) Pixel Data
    photometric: str
    lossy_method: str | None = None  # LossyImageCompressionMethod, None when lossless
    one_fragment_per_frame: bool = False


_NATIVE = tuple(name for name in SYNTAXES if not by_name(name).encapsulated)
LOSSY_METHODS = {name: by_name(name).lossy_method for name in SYNTAXES if by_name(name).lossy_method}

# Photometric interpretations each syntax can produce from RGB frames; the first is the
# default. JPEG converts to YCbCr unless asked for RGB (then an Adobe marker says so);
# JPEG 2000 applies its reversible (RCT) or irreversible (ICT) colour transform unless RGB.
# The other codecs have no colour transform.
COLOUR_PHOTOMETRICS: dict[str, tuple[str, ...]] = {
    "jpeg-baseline": ("YBR_FULL_422", "YBR_FULL", "RGB"),
    "jpeg-ext12": ("YBR_FULL_422", "YBR_FULL", "RGB"),
    "j2k-lossless": ("YBR_RCT", "RGB"),
    "htj2k-lossless": ("YBR_RCT", "RGB"),
    "htj2k-rpcl": ("YBR_RCT", "RGB"),
    "j2k": ("YBR_ICT", "RGB"),
    "htj2k": ("YBR_ICT", "RGB"),
}
_GREY_PHOTOMETRICS = ("MONOCHROME2", "MONOCHROME1")
_JPEG_QUALITY = 90
_JPEG_LOSSLESS_PREDICTOR = 6  # any of 1..7 is valid for .57; .70 requires 1
_JPEG_LS_NEAR = 2

# Lossy settings for roughly 8-10x on CT with errors well below its noise (rms ~7 of 40 HU).
_J2K_PSNR_DB = 55  # relative to the full range of bits stored
_HTJ2K_STEP = 1 / 256  # quantisation step as a fraction of the bits-stored range


def codec_for(syntax: str, layout: Layout, photometric: str | None) -> Codec:
    choices = _GREY_PHOTOMETRICS if layout.samples == 1 else COLOUR_PHOTOMETRICS.get(
        syntax, ("RGB",))
    photometric = photometric or choices[0]
    if photometric not in choices:
        raise InvalidArgumentError(f"photometric {photometric!r} is not possible with syntax {syntax!r} "
                         f"for this kind of image; choose one of {choices}")
    if syntax in _NATIVE:
        return Codec(None, photometric)
    if syntax == "jpeg-baseline" and layout.bits_allocated != 8:
        raise InvalidArgumentError("jpeg-baseline holds 8-bit samples only: use kind='us' or jpeg-ext12")
    return Codec(
        encode=_encoder(syntax, layout, colour_transform=photometric.startswith("YBR"),
                        subsampling="422" if photometric == "YBR_FULL_422" else "444"),
        photometric=photometric,
        lossy_method=LOSSY_METHODS.get(syntax),
        one_fragment_per_frame=syntax == "rle",  # PS3.5 A.4.2
    )


def _encoder(syntax: str, layout: Layout, *, colour_transform: bool,
             subsampling: str) -> Encoder:
    # imagecodecs' encoders are typed bytes | bytearray (bytearray only with out=): bytes()
    # of their bytes result is that same object, no copy
    bits = layout.bits_stored
    if syntax == "rle":
        return lambda frame: _rle_encode(frame, layout)
    if syntax in ("jpeg-baseline", "jpeg-ext12"):
        # colour: YBR (libjpeg's colour transform, subsampled) or RGB kept as it is
        rgb = "RGB" if layout.samples > 1 and not colour_transform else None
        chroma = subsampling if layout.samples > 1 and colour_transform else None
        return lambda frame: bytes(imagecodecs.jpeg8_encode(
            unsigned_pattern(frame, layout.bits_stored, layout.signed), level=_JPEG_QUALITY, bitspersample=bits,
            colorspace=rgb, outcolorspace=rgb, subsampling=chroma))
    if syntax in ("jpeg-lossless", "jpeg-lossless-sv1"):
        predictor = 1 if syntax == "jpeg-lossless-sv1" else _JPEG_LOSSLESS_PREDICTOR
        return lambda frame: bytes(imagecodecs.jpeg8_encode(
            unsigned_pattern(frame, layout.bits_stored, layout.signed), lossless=True, predictor=predictor,
            bitspersample=bits))
    if syntax in ("jpeg-ls", "jpeg-ls-near"):
        near = _JPEG_LS_NEAR if syntax == "jpeg-ls-near" else 0
        return lambda frame: _jpegls_encode(frame, layout, near)
    if syntax in ("j2k-lossless", "j2k"):
        # OpenJPEG writes signed components for int16 input, so no bit-pattern trick here.
        lossy = syntax == "j2k"
        return lambda frame: bytes(imagecodecs.jpeg2k_encode(
            frame, level=_J2K_PSNR_DB if lossy else None, codecformat="J2K",
            bitspersample=bits, reversible=not lossy, mct=colour_transform))
    if syntax in ("htj2k-lossless", "htj2k-rpcl", "htj2k"):
        # OpenJPH's default progression order is already RPCL; .202 also requires TLM markers.
        # It codes the full 16-bit precision of (u)int16 input (no bits-per-sample option), and
        # its quantisation step is relative to that range.
        lossy = syntax == "htj2k"
        step = _HTJ2K_STEP * 2 ** (bits - 8 * layout.dtype.itemsize) if lossy else None
        return lambda frame: bytes(imagecodecs.htj2k_encode(
            frame, level=step, reversible=not lossy, rgb=colour_transform,
            tlm=syntax == "htj2k-rpcl"))
    raise InvalidArgumentError(f"unknown syntax {syntax!r}; expected one of {list(SYNTAXES)}")


def _jpegls_encode(frame: np.ndarray, layout: Layout, near: int) -> bytes:
    # Precision = Bits Stored (imagecodecs alone would declare 16 for uint16 input, and
    # readers could not sign-extend signed data): the compression package's encoder.
    return jpegls_encode(frame, layout.bits_stored, layout.signed, near)


def _rle_encode(frame: np.ndarray, layout: Layout) -> bytes:
    # imagecodecs.dicomrle_encode raises NotImplementedError in this build; pylibjpeg-rle
    # writes the DICOM RLE format (64-byte header of segment offsets, one segment per byte
    # plane, most significant byte first).
    from rle.utils import encode_pixel_data

    return encode_pixel_data(
        np.ascontiguousarray(frame).tobytes(), rows=frame.shape[0], columns=frame.shape[1],
        samples_per_pixel=layout.samples, bits_allocated=layout.bits_allocated,
        byteorder="<")
