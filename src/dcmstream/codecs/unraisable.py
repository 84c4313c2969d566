"""Catch an exception a codec's C++ code can only report as "unraisable".

imagecodecs' HTJ2K decoder copies OpenJPH's lines in a ``noexcept nogil`` Cython
function: when OpenJPH throws on a corrupt codestream (``RuntimeError: ojph error``),
Cython cannot propagate it: it prints it (``PyErr_PrintEx``, so ``sys.excepthook``),
reports it to ``sys.unraisablehook``, and the decode returns a half-filled array as if
it had succeeded. :func:`caught_unraisable` records such reports made by the current
thread inside its block (and keeps them off stderr), so the caller can raise a typed
error instead of returning those pixels.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["caught_unraisable"]

_local = threading.local()
_install_lock = threading.Lock()


class _Hook:
    """``sys.unraisablehook`` that diverts reports into the active block of the reporting
    thread (whose object's name starts with one of its prefixes) and passes every other
    report to the hook it replaced."""

    def __init__(self, previous: Callable[[Any], object]) -> None:
        self.previous = previous

    def __call__(self, unraisable: Any) -> None:
        caught: list[BaseException] | None = getattr(_local, "caught", None)
        prefixes: tuple[str, ...] = getattr(_local, "prefixes", ())
        where = str(getattr(unraisable.object, "__qualname__", unraisable.object))
        if caught is not None and unraisable.exc_value is not None and where.startswith(prefixes):
            caught.append(unraisable.exc_value)
            return
        self.previous(unraisable)


class _ExceptHook:
    """``sys.excepthook`` that swallows what the reporting thread prints inside an active
    block (only the codec call runs there; its report reaches the unraisable hook too)."""

    def __init__(self, previous: Callable[..., object]) -> None:
        self.previous = previous

    def __call__(self, exc_type: type[BaseException], value: BaseException, tb: Any) -> None:
        caught: list[BaseException] | None = getattr(_local, "caught", None)
        if caught is not None:
            return
        self.previous(exc_type, value, tb)


def _ensure_hooks() -> None:
    # Re-installed whenever someone (pytest, an application) replaced a hook since;
    # the replacement stays in the chain.
    if not isinstance(sys.unraisablehook, _Hook) or not isinstance(sys.excepthook, _ExceptHook):
        with _install_lock:
            if not isinstance(sys.unraisablehook, _Hook):
                sys.unraisablehook = _Hook(sys.unraisablehook)
            if not isinstance(sys.excepthook, _ExceptHook):
                sys.excepthook = _ExceptHook(sys.excepthook)


@contextlib.contextmanager
def caught_unraisable(*prefixes: str) -> Iterator[list[BaseException]]:
    """Collect the unraisable exceptions this thread reports inside the block from
    objects named ``prefixes...`` (e.g. ``"imagecodecs._htj2k"``); the list is filled
    when the block ends. Others go to the previous hook, as before."""
    _ensure_hooks()
    outer = getattr(_local, "caught", None), getattr(_local, "prefixes", ())
    caught: list[BaseException] = []
    _local.caught, _local.prefixes = caught, prefixes
    try:
        yield caught
    finally:
        _local.caught, _local.prefixes = outer
