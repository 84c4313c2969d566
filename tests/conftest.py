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


@pytest.fixture(scope="session")
def postgres_server():
    """One real PostgreSQL server for the whole session (tests/postgres_util.py).

    Skipped with the reason when PostgreSQL is not installed, except in CI (``CI`` set),
    where that is a failure. Tests take a fresh database each with ``server.database()``.
    """
    from .postgres_util import postgres_server as start
    from .postgres_util import unavailable_reason

    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the PostgreSQL tests: {reason}")
        pytest.skip(reason)
    with start() as server:
        yield server
