"""Last-access tracking: frame reads are batched into a few catalog writes (AccessTracker)."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import event

from dcmstream.archive import Archive, SQLiteCatalog
from dcmstream.archive.access import AccessTracker
from dcmstream.samples import write_multiframe


class UpdateCounter:
    """Counts UPDATE statements on the instances table and write transactions (commits)."""

    def __init__(self, catalog: SQLiteCatalog) -> None:
        self.updates = 0
        self.commits = 0
        event.listen(catalog.engine, "before_cursor_execute", self._statement)
        event.listen(catalog.engine, "commit", self._commit)

    def _statement(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith("UPDATE INSTANCES"):
            self.updates += 1

    def _commit(self, conn) -> None:
        self.commits += 1


@pytest.fixture
def archive(tmp_path):
    files = [
        write_multiframe(tmp_path / f"in{i}.dcm", frames=25, syntax="jpeg-ls", kind="ct", rows=32, columns=32, seed=40 + i)
        for i in range(4)
    ]
    arc = Archive(tmp_path / "archive", cache=False, access_interval=3600)  # only explicit flushes here
    for path in files:
        assert arc.ingest_file(path).status == "stored"
    yield arc
    arc.close()


def test_ten_thousand_frame_reads_make_a_handful_of_writes(archive: Archive) -> None:
    counter = UpdateCounter(archive.catalog)  # type: ignore[arg-type]
    sops = [r.sop_uid for r in archive.iter_records()]
    started = time.time()
    last_read: dict[str, float] = {}
    for n in range(10_000):
        sop = sops[n % len(sops)]
        record = archive.record(sop)
        stored = archive.stored(record)  # what a frame request does (then reads one frame)
        assert stored is not None
        stored.encoded_frame(n % len(stored))
        last_read[sop] = time.time()
    assert counter.updates == 0  # nothing written per request
    assert archive.access is not None and archive.access.pending == len(sops)
    archive.access.flush()
    assert counter.updates <= 5 and counter.commits <= 2
    for sop in sops:
        stored_at = archive.catalog.get(sop).last_access
        # rounded up to whole seconds: never before the last read, at most a second after it
        assert last_read[sop] <= stored_at <= last_read[sop] + 1.0
        assert stored_at >= started


def test_reads_of_every_kind_are_noted(archive: Archive) -> None:
    records = list(archive.iter_records())
    assert archive.access is not None
    archive.open_instance(records[0]).close()
    b"".join(archive.iter_blob(records[1], 0, 100))
    archive.stored(records[2])
    assert archive.access.pending == 3
    archive.close()  # flushed at close
    with SQLiteCatalog(archive.root / "catalog.sqlite") as catalog:
        times = [catalog.get(r.sop_uid).last_access for r in records]
    assert all(t is not None for t in times[:3]) and times[3] is None


def test_tracker_keeps_the_latest_time_and_never_goes_back(tmp_path) -> None:
    catalog = SQLiteCatalog(":memory:")
    from .test_catalog import make_record

    catalog.add(make_record("1.2", "1.2.1", "1.2.1.1"))
    tracker = AccessTracker(catalog, interval=3600, resolution=0)
    tracker.record("1.2.1.1", at=200.0)
    tracker.record("1.2.1.1", at=100.0)
    tracker.flush()
    assert catalog.get("1.2.1.1").last_access == 200.0
    tracker.record("1.2.1.1", at=150.0)  # another process wrote a newer time meanwhile: max wins
    tracker.flush()
    assert catalog.get("1.2.1.1").last_access == 200.0
    tracker.close()


def test_tracker_flushes_in_the_background_when_enough_are_pending(tmp_path) -> None:
    catalog = SQLiteCatalog(":memory:")
    from .test_catalog import make_record

    for i in range(5):
        catalog.add(make_record("1.2", "1.2.1", f"1.2.1.{i}"))
    flushed = threading.Event()
    original = catalog.touch

    def touch(accesses):
        result = original(accesses)
        flushed.set()
        return result

    catalog.touch = touch  # type: ignore[method-assign]
    tracker = AccessTracker(catalog, interval=3600, max_pending=5)
    for i in range(5):
        tracker.record(f"1.2.1.{i}")
    assert flushed.wait(10)
    tracker.close()
    assert tracker.flushes == 1 and all(catalog.get(f"1.2.1.{i}").last_access for i in range(5))


def test_a_catalog_without_access_times_is_left_alone() -> None:
    from dcmstream.archive.catalog import Catalog

    class Minimal(SQLiteCatalog):
        touch = Catalog.touch  # the base class: not implemented

    catalog = Minimal(":memory:")
    tracker = AccessTracker(catalog, interval=3600)
    tracker.record("1.2.3")
    assert tracker.flush() == 0
    tracker.record("1.2.4")  # ignored from now on
    assert tracker.pending == 0
    tracker.close()
