"""Per-transfer-syntax frame decoders (a registry; imagecodecs backends by default)."""

from .base import Decoded, FrameDecoder
from .native import decode_native
from .registry import ENCAPSULATED_UNCOMPRESSED, NATIVE_SYNTAXES, decoder_for, decoders, register_decoder

__all__ = [
    "Decoded",
    "FrameDecoder",
    "decode_native",
    "decoder_for",
    "decoders",
    "register_decoder",
    "NATIVE_SYNTAXES",
    "ENCAPSULATED_UNCOMPRESSED",
]
