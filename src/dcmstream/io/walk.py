"""The one folder walk: which files "a folder of DICOM files" means.

Used by ``dcmstream import`` (:func:`dcmstream.archive.ingest.iter_files`), ``dcmstream
compress`` (:func:`dcmstream.compress.batch.iter_inputs`), the pipeline's inputs and
:func:`dcmstream.open_series`, so they all see the same files.

The rule: regular files, in sorted order (folders walked depth first, names sorted, so
runs are reproducible), **skipping**

* hidden entries - any file or folder whose name starts with ``.`` (editor and OS
  litter, and our own in-flight temporaries ``.NAME.XXXX.tmp`` of
  :mod:`dcmstream.io.atomic`);
* an archive's staging folder - ``tmp/`` beside a ``catalog.sqlite`` (half-received
  STOW-RS uploads of a running server).

Symbolic links to files are followed, links to folders are not (no cycles).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import PathNotFoundError

__all__ = ["iter_paths", "skipped_name", "walk_files"]


def skipped_name(name: str) -> bool:
    """Whether a file or folder name is hidden (and so skipped by :func:`walk_files`)."""
    return name.startswith(".")


def _is_archive_staging(folder: str, name: str) -> bool:
    return name == "tmp" and os.path.isfile(os.path.join(folder, "catalog.sqlite"))


def walk_files(root: str | os.PathLike[str], *, recursive: bool = True) -> Iterator[Path]:
    """Regular files under the folder ``root`` by the rule above (``recursive=False``: only
    its direct children)."""
    root = os.fspath(root)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames
                             if not skipped_name(d) and not _is_archive_staging(dirpath, d)) if recursive else []
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if not skipped_name(name) and os.path.isfile(path):
                yield Path(path)


def iter_paths(paths: Iterable[str | os.PathLike[str]], *, recursive: bool = True,
               missing_ok: bool = True) -> Iterator[tuple[Path, Path]]:
    """(file, path relative to its input) for each of ``paths``: a file is itself (relative
    path: its name), a folder is walked with :func:`walk_files`. A path that is neither is
    skipped, or raises :class:`FileNotFoundError` with ``missing_ok=False``."""
    for item in paths:
        path = Path(item)
        if path.is_dir():
            for found in walk_files(path, recursive=recursive):
                yield found, found.relative_to(path)
        elif path.is_file():
            yield path, Path(path.name)
        elif not missing_ok:
            raise PathNotFoundError(f"{path}: no such file or folder")
