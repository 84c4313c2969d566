"""The C library of this process, for the few glibc calls dcmstream makes: malloc tuning and
trimming (:mod:`dcmstream.cache.governor`), write-behind of output files
(:mod:`dcmstream.compress.writer`)."""

from __future__ import annotations

import ctypes
import functools
import sys

__all__ = ["libc"]


@functools.cache
def libc() -> ctypes.CDLL | None:
    """The loaded C library (Linux), or None. Its symbols come from the process itself:
    ``ctypes.util.find_library`` would start an ``ldconfig`` subprocess to find a file that
    is already mapped. Callers look functions up with ``getattr`` and handle their absence
    (``AttributeError``: musl has no ``malloc_trim``)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - a static interpreter without dlopen
        return None
