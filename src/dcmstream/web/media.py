"""Media types, transfer syntaxes and Accept-header negotiation (PS3.18 8.7).

Rules implemented (and why):

* Frames and pixel bulk data: with no transfer syntax named, the answer is
  ``application/octet-stream`` in Explicit VR Little Endian, decoded when stored
  compressed (PS3.18 8.7.3.5: the default for pixel data is uncompressed).
  ``transfer-syntax=*`` means "as stored" and is answered with the stored
  syntax's media type (image/jls, image/jpeg, image/jp2, image/jphc, ...), whatever
  media type it was attached to (OHIF sends ``type=application/octet-stream;
  transfer-syntax=*`` and expects compressed frames back). A named syntax is served
  when it is the stored one or Explicit VR Little Endian; anything else is skipped,
  and when nothing in the Accept header can be served the answer is 406.
  HTJ2K (image/jphc) is therefore only sent to clients that ask for it by name or
  by ``*``: dicomweb-client, for one, refuses that media type.
* Whole instances (``application/dicom``): PS3.18 (since 2016c) makes Explicit VR
  Little Endian the default, so a request without ``transfer-syntax`` gets the
  instance transcoded to it unless it is stored that way; ``transfer-syntax=*``
  or the stored UID get the stored bytes untouched.
* Implicit VR and Big Endian are never *produced* (PS3.18 8.7.3.5.2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydicom.uid import ExplicitVRLittleEndian

from ..codecs.syntaxes import ENCAPSULATED_UNCOMPRESSED, NATIVE_SYNTAXES, media_type

__all__ = [
    "MediaRange",
    "parse_accept",
    "parse_content_type",
    "media_type_for_syntax",
    "PixelChoice",
    "negotiate_pixels",
    "negotiate_instance",
    "accepts",
    "NATIVE",
]

EXPLICIT_LE = str(ExplicitVRLittleEndian)
NATIVE = NATIVE_SYNTAXES
_ALIASES = {"image/x-jls": "image/jls", "image/x-dicom-rle": "image/dicom-rle"}


def media_type_for_syntax(ts: str) -> str:
    """The single-frame media type of pixel data in transfer syntax ``ts``."""
    return media_type(ts)


@dataclass(frozen=True)
class MediaRange:
    """One entry of an Accept header: ``type/subtype`` plus parameters."""

    media_type: str
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    @property
    def is_multipart(self) -> bool:
        return self.media_type == "multipart/related"

    @property
    def inner(self) -> str:
        """The part media type: the ``type`` parameter of multipart/related, else itself."""
        if self.is_multipart:
            return _ALIASES.get(self.params.get("type", "").lower(), self.params.get("type", "").lower())
        return self.media_type

    @property
    def transfer_syntax(self) -> str | None:
        ts = self.params.get("transfer-syntax")
        return ts.strip() if ts else None


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes."""
    out: list[str] = []
    buf: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            out.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    out.append("".join(buf))
    return out


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """(lower-case media type, parameters with unquoted values) of a Content-Type."""
    pieces = _split(value, ";")
    media = pieces[0].strip().lower()
    params: dict[str, str] = {}
    for piece in pieces[1:]:
        name, sep, val = piece.partition("=")
        if not sep:
            continue
        params[name.strip().lower()] = val.strip().strip('"')
    return media, params


def parse_accept(value: str | None) -> list[MediaRange]:
    """Media ranges of an Accept header, best first (q descending, then order)."""
    if not value or not value.strip():
        return [MediaRange("*/*")]
    ranges = []
    for n, item in enumerate(_split(value, ",")):
        if not item.strip():
            continue
        media, params = parse_content_type(item)
        media = _ALIASES.get(media, media)
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 1.0
        if "type" in params:
            params["type"] = params["type"].lower()
        ranges.append((-q, n, MediaRange(media, params, q)))
    ranges.sort(key=lambda t: (t[0], t[1]))
    return [r for _, _, r in ranges if r.q > 0]


def _matches(pattern: str, media: str) -> bool:
    if pattern in ("", "*/*", "*"):
        return True
    if pattern.endswith("/*"):
        return media.split("/")[0] == pattern[:-2]
    return pattern == media


def accepts(ranges: list[MediaRange], *offered: str) -> str | None:
    """The first of ``offered`` (single-part media types) the Accept ranges allow."""
    for r in ranges:
        inner = r.inner if r.is_multipart else r.media_type
        for media in offered:
            if _matches(inner, media):
                return media
    return None


@dataclass(frozen=True)
class PixelChoice:
    """How to answer a pixel request: media type, transfer syntax, decode or not."""

    media_type: str
    transfer_syntax: str
    decode: bool  # True: decode and send Explicit VR Little Endian pixels
    multipart: bool = True

    @property
    def part_content_type(self) -> str:
        return f"{self.media_type}; transfer-syntax={self.transfer_syntax}"


def negotiate_pixels(ranges: list[MediaRange], stored_ts: str) -> PixelChoice | None:
    """Pick the representation of frames/pixel bulk data (rules in the module docstring)."""
    stored_media = media_type_for_syntax(stored_ts)
    uncompressed_ok = stored_ts in NATIVE or stored_ts == ENCAPSULATED_UNCOMPRESSED
    for r in ranges:
        inner = r.inner if r.is_multipart else r.media_type
        if r.is_multipart and not inner:
            inner = "application/octet-stream"  # PS3.18: the default part type for pixel data
        multipart = r.is_multipart or r.media_type == "*/*"
        ts = r.transfer_syntax
        if ts == "*":
            if inner in ("*/*", "*", "application/octet-stream") or _matches(inner, stored_media):
                if uncompressed_ok:
                    # Native data goes out as Explicit VR Little Endian pixels (byte for
                    # byte when stored little endian; big endian is swapped).
                    return PixelChoice("application/octet-stream", EXPLICIT_LE, True, multipart)
                return PixelChoice(stored_media, stored_ts, False, multipart)
            continue
        if ts is None or ts == EXPLICIT_LE:
            if _matches(inner, "application/octet-stream"):
                return PixelChoice("application/octet-stream", EXPLICIT_LE, True, multipart)
            if (
                ts is None
                and not uncompressed_ok
                and _matches(inner, stored_media)
                and inner != "*/*"
                and (inner == stored_media or stored_media != "image/jphc")  # HTJ2K only when named
            ):
                return PixelChoice(stored_media, stored_ts, False, multipart)
            continue
        if ts == stored_ts and not uncompressed_ok and _matches(inner, stored_media):
            return PixelChoice(stored_media, stored_ts, False, multipart)
    return None


@dataclass(frozen=True)
class InstanceChoice:
    """How to answer an application/dicom request: as stored or transcoded."""

    transfer_syntax: str | None  # None: as stored
    multipart: bool = True


def negotiate_instance(ranges: list[MediaRange], stored_ts: str) -> InstanceChoice | None:
    """Pick the transfer syntax of a whole-instance response (rules in the module docstring)."""
    for r in ranges:
        inner = r.inner if r.is_multipart else r.media_type
        if r.is_multipart and not inner:
            inner = "application/dicom"
        if not _matches(inner, "application/dicom"):
            continue
        ts = r.transfer_syntax
        if ts == "*" or ts == stored_ts:
            return InstanceChoice(None)
        if ts is None or ts == EXPLICIT_LE:
            return InstanceChoice(None if stored_ts == EXPLICIT_LE else EXPLICIT_LE)
    return None
