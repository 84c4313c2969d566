"""Which decoder handles which transfer syntax.

Decoders are tried in registration order (fastest first, see bench/); the first
whose package is importable wins. A syntax nothing can decode raises
:class:`UnsupportedTransferSyntaxError` naming the package that would add it.
"""

from __future__ import annotations

from pydicom.uid import UID

from ..errors import UnsupportedTransferSyntaxError
from .base import FrameDecoder
from .imagecodecs_backend import IMAGECODECS_DECODERS
from .syntaxes import ENCAPSULATED_UNCOMPRESSED, NATIVE_SYNTAXES

__all__ = ["NATIVE_SYNTAXES", "ENCAPSULATED_UNCOMPRESSED", "register_decoder", "decoder_for", "decoders"]

# NATIVE_SYNTAXES and ENCAPSULATED_UNCOMPRESSED come from the one syntax table (.syntaxes).

_DECODERS: list[FrameDecoder] = list(IMAGECODECS_DECODERS)

# Known syntaxes no backend handles here, with the hint users need.
_HINTS = {
    "1.2.840.10008.1.2.4.100": "MPEG2 video; decode with a video library (e.g. PyAV)",
    "1.2.840.10008.1.2.4.102": "MPEG-4 AVC/H.264 video; decode with a video library (e.g. PyAV)",
    "1.2.840.10008.1.2.4.110": "JPEG XL; install imagecodecs with JPEG XL support",
}


def register_decoder(decoder: FrameDecoder, *, first: bool = False) -> None:
    """Add a decoder; ``first=True`` makes it preferred over existing ones."""
    if first:
        _DECODERS.insert(0, decoder)
    else:
        _DECODERS.append(decoder)


def decoders() -> list[FrameDecoder]:
    """All registered decoders in preference order."""
    return list(_DECODERS)


def decoder_for(uid: str) -> FrameDecoder:
    """The preferred available decoder for an encapsulated transfer syntax."""
    candidates = [d for d in _DECODERS if uid in d.syntaxes]
    for decoder in candidates:
        if decoder.available():
            return decoder
    name = UID(uid).name if UID(uid).is_valid else ""
    if candidates:
        hint = f"install {candidates[0].package}"
    else:
        hint = _HINTS.get(uid, "no decoder is registered for it")
    raise UnsupportedTransferSyntaxError(uid, name if name != uid else "", hint)
