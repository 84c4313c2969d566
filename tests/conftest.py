"""Shared fixtures: the real test corpora (pydicom's files and pydicom-data)."""

from __future__ import annotations

import os

import pytest
from pydicom.data import get_testdata_file, get_testdata_files


def corpus_files() -> list[str]:
    """Every regular file in pydicom's test files and the pydicom-data package."""
    return sorted(p for p in get_testdata_files() if os.path.isfile(p))


@pytest.fixture
def testfile():
    """Path of a named file from the corpora."""

    def get(name: str) -> str:
        path = get_testdata_file(name)
        if path is None:
            pytest.skip(f"{name} is not in this pydicom/pydicom-data version")
        return str(path)

    return get
