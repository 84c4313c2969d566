"""UID validation: the only strings from a request that may ever reach a storage path.

PS3.5 9.1: a UID is dot-separated decimal components, at most 64 characters. We
accept leading zeros inside components (some old modalities write them) but
nothing else: no letters, no empty components, no path separators, no "..".
"""

from __future__ import annotations

import re

from ..errors import DcmstreamError

__all__ = ["UID_PATTERN", "InvalidUIDError", "is_valid_uid", "validate_uid"]

UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_MAX_LENGTH = 64


class InvalidUIDError(DcmstreamError, ValueError):
    """A string that should be a UID is not one (400 Bad Request on the web)."""


def is_valid_uid(value: object) -> bool:
    """Whether ``value`` is a syntactically valid DICOM UID string."""
    return isinstance(value, str) and 0 < len(value) <= _MAX_LENGTH and UID_PATTERN.match(value) is not None


def validate_uid(value: object, what: str = "UID") -> str:
    """Return ``value`` if it is a valid UID, else raise :class:`InvalidUIDError` naming ``what``."""
    if not is_valid_uid(value):
        shown = repr(value) if not isinstance(value, str) or len(value) <= 80 else repr(value[:80] + "...")
        raise InvalidUIDError(f"{what} {shown} is not a valid UID (digits and dots, at most 64 characters)")
    return value  # type: ignore[return-value]
