"""The sweep of killed writers' leftovers (dcmstream.archive.sweep), with real processes:
a file or blob a live process holds is kept, the same one after that process is SIGKILLed
is swept at once (no age limit: the lock died with the writer)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from dcmstream.archive import Archive, FilesystemBlobStore
from dcmstream.archive.ingest import sweep_orphans
from dcmstream.archive.sweep import Sweeper, sweep
from dcmstream.cli.main import app
from dcmstream.web import create_app

_ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(
    p for p in (str(Path(__file__).parents[2] / "src"), os.environ.get("PYTHONPATH", "")) if p))

# A writer holding a staging file (as STOW-RS does while a body arrives), until killed.
_STAGER = r"""
import sys, time
from dcmstream.archive import FilesystemBlobStore
staged = FilesystemBlobStore(sys.argv[1]).create_staging(".part")
with staged.open_write() as fh:
    fh.write(b"half a STOW-RS body")
print(staged.path, flush=True)
time.sleep(120)
"""

# An ingest stopped between its put and its catalog add (the add never returns), until killed.
_INGESTER = r"""
import shutil, sys, time
from dcmstream.archive import Archive
archive = Archive(sys.argv[1], cache=False)
def add(record):
    print(record.blob_key, flush=True)
    time.sleep(120)
archive.catalog.add = add
if sys.argv[3] == "move":  # a spooled file moved into the store (STOW-RS)
    staged = archive.create_staging(".part")
    shutil.copyfile(sys.argv[2], staged.path)
    archive.ingest_file(staged.path, move=True)
else:  # a file copied in (dcmstream import)
    archive.ingest_file(sys.argv[2])
"""

# A compression swap stopped between its blob put and its catalog switch (the switch never
# returns), until killed.
_SWAPPER = r"""
import sys, time
from dcmstream.archive import Archive
from dcmstream.policy import CompressionPolicy, CompressionRule, PolicyWorker
archive = Archive(sys.argv[1], cache=False)
def replace_blob(sop, old_key, new_record):
    print(new_record.blob_key, flush=True)
    time.sleep(120)
archive.catalog.replace_blob = replace_blob
PolicyWorker(archive, CompressionPolicy([CompressionRule("jpeg-ls")])).process(sys.argv[2])
"""


@contextmanager
def _child(script: str, *args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A Python child running ``script``; (the process, its first line of output). Killed at the end."""
    proc = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True, env=_ENV)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line, f"the child said nothing (exit {proc.poll()})"
        yield proc, line
    finally:
        proc.kill()
        proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)


def test_a_staging_file_stays_while_its_writer_lives_and_goes_once_it_is_killed(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    with _child(_STAGER, str(tmp_path)) as (proc, line):
        path = Path(line)
        assert path.parent == store.tmp and path.is_file()
        assert store.clean_staging(older_than=3600) == 0 and path.is_file()  # in flight
        assert store.clean_staging(older_than=0) == 0 and path.is_file()  # whatever the age limit
        _kill(proc)
        # the writer's lock died with it: a leftover now, young as it is
        assert store.staging_leftovers(3600, delete=False) == [path] and path.is_file()
        assert store.clean_staging(older_than=3600) == 1 and not path.exists()


def test_a_staging_file_of_a_writer_that_does_not_lock_goes_only_when_old(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    unlocked = store.staging_path(".dcm")
    unlocked.write_bytes(b"a transcoder's output in progress")
    assert store.clean_staging(older_than=3600) == 0 and unlocked.exists()
    os.utime(unlocked, (0, 0))
    assert store.clean_staging(older_than=3600) == 1 and not unlocked.exists()


@pytest.mark.parametrize("how", ["move", "copy"])
def test_an_orphan_blob_stays_while_its_ingest_lives_and_goes_once_it_is_killed(
        tmp_path: Path, testfile, how: str) -> None:
    root = tmp_path / "archive"
    Archive(root, cache=False).close()
    with _child(_INGESTER, str(root), testfile("CT_small.dcm"), how) as (proc, key), \
            Archive(root, cache=False) as archive:  # another process opening the archive meanwhile
        assert archive.blobs.exists(key)  # put, no row yet
        assert archive.catalog.get(Path(key).stem) is None
        assert sweep_orphans(archive, older_than=0) == [] and archive.blobs.exists(key)  # in flight
        assert sweep(archive).orphans == []
        _kill(proc)
        # young, but its writer is dead: an orphan (no age guess needed)
        result = sweep(archive)
        assert result.orphans == [key] and not archive.blobs.exists(key)
        assert result.staging == []  # the killed ingest's locked staging files went at the open
        assert list(archive.blobs.keys()) == []
        assert [p for p in archive.blobs.tmp.iterdir()] == []


def test_a_compression_swap_blob_stays_while_its_worker_lives_and_goes_once_it_is_killed(
        tmp_path: Path, testfile) -> None:
    root = tmp_path / "archive"
    with Archive(root, cache=False) as archive:
        stored = archive.ingest_file(testfile("CT_small.dcm"))
        assert stored.ok and stored.sop_uid is not None
        record = archive.catalog.get(stored.sop_uid)
        assert record is not None
    with _child(_SWAPPER, str(root), stored.sop_uid) as (proc, key), Archive(root, cache=False) as archive:
        assert archive.is_replacement_key(key) and archive.blobs.exists(key)  # put, row not switched
        staged = sorted(p.name for p in archive.blobs.tmp.iterdir())
        assert staged and all(name.startswith("lk-") for name in staged)  # the swap's own, locked
        assert sweep_orphans(archive, older_than=0) == [] and archive.blobs.exists(key)  # in flight
        result = sweep(archive, older_than=0)
        assert result.orphans == [] and result.staging == []
        assert sorted(p.name for p in archive.blobs.tmp.iterdir()) == staged
        _kill(proc)
        # young, but its worker is dead: an orphan at once, its staging files too
        result = sweep(archive)
        assert result.orphans == [key] and not archive.blobs.exists(key)
        assert sorted(p.name for p in result.staging) == staged
        assert list(archive.blobs.keys()) == [record.blob_key]  # the original, untouched
        assert archive.catalog.get(stored.sop_uid) == record
        assert list(archive.blobs.tmp.iterdir()) == []


def test_files_named_after_a_locked_staging_file_share_its_lock(tmp_path: Path) -> None:
    """A writer lets another function write beside its staging file by temp file and
    rename (a transcoder, the sample writer): neither name is ever unprotected."""
    from dcmstream.io.atomic import AtomicFile

    store = FilesystemBlobStore(tmp_path)
    held = store.create_staging(".swap")
    out = held.sibling(".dcm")
    with AtomicFile(out) as atomic:
        atomic.fh.write(b"a transcode in progress")
        assert atomic.path.name.startswith(".lk-")
        assert store.clean_staging(older_than=0) == 0 and atomic.path.exists()
        atomic.commit()
    assert store.clean_staging(older_than=0) == 0 and out.exists() and held.path.exists()
    held.close()  # as if its writer died: the whole group goes, young as it is
    assert sorted(store.staging_leftovers(3600)) == sorted([held.path, out])
    assert list(store.tmp.iterdir()) == []


def _leftovers(root: Path, testfile) -> tuple[Path, str, str]:
    """An archive with a killed writer's staging file, an orphan blob and a row whose blob
    is missing: (staging file, orphan key, SOP Instance UID of the row)."""
    with Archive(root, cache=False) as archive:
        kept = archive.ingest_file(testfile("CT_small.dcm"))
        lost = archive.ingest_file(testfile("MR_small.dcm"))
        assert kept.ok and lost.ok and lost.sop_uid is not None
        record = archive.catalog.get(lost.sop_uid)
        assert record is not None
        archive.blobs.delete(record.blob_key)  # a store that lost a file
        orphan = f"{kept.study_uid}/{kept.series_uid}/i00000000000000aa/{kept.sop_uid}.dcm"
        archive.blobs.put_bytes(orphan, b"an ingest killed before its row")
        staged = archive.create_staging(".part")
        staged.close()  # as if its writer died: unlocked, still there
        return staged.path, orphan, lost.sop_uid


def test_cli_sweep_dry_run_lists_without_deleting_then_sweeps(tmp_path: Path, testfile) -> None:
    root = tmp_path / "archive"
    staged, orphan, missing = _leftovers(root, testfile)
    runner = CliRunner()
    dry = runner.invoke(app, ["sweep", str(root), "--dry-run"], terminal_width=200)
    assert dry.exit_code == 1, dry.output  # a row lacks its blob
    assert f"would remove staging file {staged}" in dry.output
    assert f"would remove orphan blob {orphan}" in dry.output
    assert "1 catalog row(s) whose blob is missing" in dry.output and missing in dry.output
    assert staged.exists() and FilesystemBlobStore(root).exists(orphan)

    done = runner.invoke(app, ["sweep", str(root)], terminal_width=200)
    assert done.exit_code == 1, done.output
    assert f"removed orphan blob {orphan}" in done.output
    assert not staged.exists() and not FilesystemBlobStore(root).exists(orphan)
    with Archive(root, cache=False) as archive:
        assert archive.catalog.get(missing) is not None  # reported, never deleted
        assert sweep(archive, check_rows=True).missing == [missing]


def test_cli_sweep_of_a_clean_archive_exits_0(tmp_path: Path, testfile) -> None:
    root = tmp_path / "archive"
    with Archive(root, cache=False) as archive:
        assert archive.ingest_file(testfile("CT_small.dcm")).ok
    result = CliRunner().invoke(app, ["sweep", str(root), "--older-than", "0"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "removed 0 staging file(s) and 0 orphan blob(s)" in result.output


def test_the_sweeper_counts_what_it_removed(tmp_path: Path, testfile) -> None:
    root = tmp_path / "archive"
    staged, orphan, _ = _leftovers(root, testfile)
    with Archive(root, cache=False, sweep_on_open=False) as archive:
        sweeper = Sweeper(archive, interval=0).start()
        sweeper.stop()
        assert archive.sweeper is sweeper
        metrics = sweeper.metrics()
    assert metrics["dcmstream_sweep_runs_total"] == 1 and metrics["dcmstream_sweep_errors_total"] == 0
    assert metrics["dcmstream_sweep_staging_files_removed_total"] == 1
    assert metrics["dcmstream_sweep_orphan_blobs_removed_total"] == 1
    assert not staged.exists()


def test_metrics_show_the_sweepers_counters(tmp_path: Path, testfile) -> None:
    root = tmp_path / "archive"
    _leftovers(root, testfile)
    with Archive(root, cache=False) as archive:  # the open removes the unlocked staging file
        Sweeper(archive, interval=0).start().stop()
        with TestClient(create_app(archive)) as client:
            text = client.get("/metrics").text
    lines = dict(line.split() for line in text.splitlines() if line.startswith("dcmstream_sweep_"))
    assert lines["dcmstream_sweep_runs_total"] == "1.0"
    assert lines["dcmstream_sweep_staging_files_removed_total"] == "1.0"  # at the open, counted
    assert lines["dcmstream_sweep_orphan_blobs_removed_total"] == "1.0"
