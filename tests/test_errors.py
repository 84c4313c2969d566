"""One error tree: every exception class dcmstream defines derives from DcmstreamError."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import dcmstream
from dcmstream import errors
from dcmstream.archive.blobstore import BlobNotFoundError


def _modules() -> list[str]:
    names = [dcmstream.__name__]
    for info in pkgutil.walk_packages(dcmstream.__path__, prefix="dcmstream."):
        if info.name.rsplit(".", 1)[-1] != "__main__":  # importing it would run the CLI
            names.append(info.name)
    return names


def _exception_classes() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for name in _modules():
        module = importlib.import_module(name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__.startswith("dcmstream"):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return list(found.values())


def test_walk_finds_the_known_classes() -> None:
    names = {cls.__name__ for cls in _exception_classes()}
    # A walk that silently found nothing would make the next test vacuous.
    assert {"BlobNotFoundError", "UnsupportedTarget", "MultipartError", "QueryError", "QaFailure"} <= names


@pytest.mark.parametrize("cls", _exception_classes(), ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_every_exception_derives_from_dcmstream_error(cls: type[BaseException]) -> None:
    assert issubclass(cls, dcmstream.DcmstreamError)
    # errors.py draws the whole tree: a new class must be added to the drawing.
    assert f" {cls.__name__} " in errors.__doc__ or f" {cls.__name__}\n" in errors.__doc__


def test_builtin_bases_are_kept() -> None:
    from dcmstream.archive.catalog import QueryError
    from dcmstream.compress.encoders import UnsupportedTarget

    assert issubclass(BlobNotFoundError, KeyError)
    assert issubclass(QueryError, ValueError) and issubclass(UnsupportedTarget, ValueError)


def test_key_error_message_is_readable() -> None:
    # KeyError's own str() would be the quoted key alone.
    exc = BlobNotFoundError("ab/cd.dcm")
    assert str(exc) == "no blob under key 'ab/cd.dcm'" and exc.key == "ab/cd.dcm"
