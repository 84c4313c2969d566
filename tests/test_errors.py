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


# Not errors of the project: "cannot happen" markers and the alembic command line's exit.
_ALLOWED_BUILTINS = {"AssertionError", "SystemExit", "StopIteration", "KeyboardInterrupt"}
# A framework's own protocol with its user, allowed in the package that speaks it only: in cli,
# typer.Exit (an exit code), typer.BadParameter and the other click exceptions are how typer/click
# end a command and print a usage error; in web, HTTPException is how FastAPI answers a status.
_PROTOCOL_MODULES = {"dcmstream.cli": ("click.", "typer."), "dcmstream.web": ("fastapi.", "starlette.")}


def _resolve(module: object, target: object) -> object:
    """The object a raised name or dotted name refers to in ``module``, or None when it is a
    local (``raise exc`` of a caught exception, ``raise self._failed(...)``)."""
    import ast
    import builtins

    if isinstance(target, ast.Name):
        if target.id in vars(module):
            return vars(module)[target.id]
        return getattr(builtins, target.id, None)
    if isinstance(target, ast.Attribute):
        base = _resolve(module, target.value)
        return None if base is None else getattr(base, target.attr, None)
    return None


def test_the_package_raises_only_typed_errors() -> None:
    import ast

    plain = []
    for name in _modules():
        module = importlib.import_module(name)
        tree = ast.parse(inspect.getsource(module))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Raise) or node.exc is None:
                continue  # a bare ``raise`` re-raises
            target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            cls = _resolve(module, target)
            if not (isinstance(cls, type) and issubclass(cls, BaseException)) or issubclass(cls, dcmstream.DcmstreamError):
                continue
            if cls.__name__ in _ALLOWED_BUILTINS and cls.__module__ == "builtins":
                continue
            package = ".".join(name.split(".")[:2])
            if cls.__module__.startswith(_PROTOCOL_MODULES.get(package, ())):
                continue
            scope = parents.get(node)
            while scope is not None and not isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
                scope = parents.get(scope)
            if cls is AttributeError and scope is not None and scope.name == "__getattr__":
                continue  # a module's or class's __getattr__ must raise AttributeError
            if cls is NotImplementedError and not isinstance(node.exc, ast.Call):
                continue  # a bare ``raise NotImplementedError``: a base class's method to override
            plain.append(f"{name}:{node.lineno} raise {ast.unparse(target)}")
    assert plain == []


def test_typed_errors_keep_their_builtin_bases(tmp_path) -> None:
    from dcmstream.archive import Archive, FilesystemBlobStore
    from dcmstream.archive.archive import MissingBlobError, UnknownTierError
    from dcmstream.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError) as info:
        Archive(tmp_path / "a", blobs=FilesystemBlobStore(tmp_path / "x"), tiers={"hot": FilesystemBlobStore(tmp_path / "y")})
    assert isinstance(info.value, ValueError) and isinstance(info.value, dcmstream.DcmstreamError)
    assert issubclass(UnknownTierError, KeyError) and issubclass(MissingBlobError, BlobNotFoundError)
    assert str(UnknownTierError("no storage tier 'x'")) == "no storage tier 'x'"
