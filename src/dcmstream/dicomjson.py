"""DICOM JSON (PS3.18 Annex F) for metadata and QIDO responses.

Top-level binary values larger than a threshold become ``BulkDataURI`` references;
binary values inside sequences stay inline (``InlineBinary``) so that every
BulkDataURI names a top-level tag the server can fetch with one header parse.

BulkDataURIs are stored in the catalog *relative* to the DICOMweb root behind the
marker :data:`BULK_MARKER` and made absolute when served (:func:`resolve_bulk_uris`),
so the archive does not depend on the host name it was reached by.

Why here, at the bottom of the package (beside ``errors`` and ``libc``): the archive
converts a header at ingest and the web serves and resolves the result, and archive must
not import web. The module needs pydicom only, so every layer may use it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from pydicom.dataset import Dataset

__all__ = [
    "BULK_MARKER",
    "dataset_to_json",
    "dumps",
    "resolve_bulk_uris",
    "element",
    "tag_key",
]

log = logging.getLogger(__name__)

#: Prefix of stored, not yet resolved, BulkDataURIs.
BULK_MARKER = "dcmstream-bulk:"
_STORED_PATTERN = f'"BulkDataURI":"{BULK_MARKER}'

#: Binary values larger than this many bytes become BulkDataURIs (top level only).
DEFAULT_BULK_THRESHOLD = 1024

_BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW", "US or SS or OW"}


def tag_key(tag: int) -> str:
    """The JSON key of a tag: eight upper-case hex digits."""
    return f"{tag:08X}"


def dumps(obj: Any) -> str:
    """Compact JSON, the one spelling the stored-URI marker relies on."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def element(vr: str, *values: Any) -> dict[str, Any]:
    """A DICOM JSON element; no values gives an empty (present but null) element."""
    if not values:
        return {"vr": vr}
    if vr == "PN":
        return {"vr": vr, "Value": [{"Alphabetic": str(v)} for v in values]}
    return {"vr": vr, "Value": list(values)}


def dataset_to_json(
    ds: Dataset,
    bulk_uri: Callable[[int], str] | None = None,
    *,
    bulk_threshold: int = DEFAULT_BULK_THRESHOLD,
) -> dict[str, Any]:
    """DICOM JSON of ``ds`` (file meta and group lengths excluded).

    ``bulk_uri(tag)`` gives the URI of a top-level binary value larger than
    ``bulk_threshold`` bytes. An element pydicom cannot convert (a corrupt value) is
    left out with a log message rather than failing the whole dataset.
    """
    out: dict[str, Any] = {}
    for elem in ds:  # top level only; pydicom recurses into sequences itself
        tag = int(elem.tag)
        if tag >> 16 == 0x0002 or tag & 0xFFFF == 0:
            continue
        try:
            if bulk_uri is not None and elem.VR in _BINARY_VRS and _byte_length(elem) > bulk_threshold:
                out[tag_key(tag)] = {"vr": _binary_vr(elem.VR), "BulkDataURI": bulk_uri(tag)}
                continue
            value = elem.to_json_dict(None, bulk_threshold)
            if value.get("vr") in ("OB or OW", "US or SS or OW", "US or OW"):
                value["vr"] = "OW"
            elif value.get("vr") == "US or SS":
                value["vr"] = "US"
            out[tag_key(tag)] = value
        except Exception as exc:  # noqa: BLE001 - one bad element must not hide the others
            log.info("element (%04X,%04X) left out of DICOM JSON: %s", tag >> 16, tag & 0xFFFF, exc)
    return out


def _byte_length(elem: Any) -> int:
    value = elem.value
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    try:
        return len(value) * 2
    except TypeError:
        return 0


def _binary_vr(vr: str) -> str:
    return "OW" if " or " in vr else vr


def resolve_bulk_uris(text: str, base: str) -> str:
    """Make the stored relative BulkDataURIs in a JSON text absolute under ``base``."""
    if BULK_MARKER not in text:
        return text
    return text.replace(_STORED_PATTERN, f'"BulkDataURI":"{base.rstrip("/")}/')
