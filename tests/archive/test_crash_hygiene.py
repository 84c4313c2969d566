"""Crash hygiene: staging files of a killed ingest are swept when an archive opens, and
only those (unlocked; those of writers that do not lock only when old); a kill never leaves half an instance in the catalog."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest

from dcmstream.archive import Archive, FilesystemBlobStore
from dcmstream.archive.blobstore import staging_lock
from dcmstream.archive.ingest import sweep_orphans
from dcmstream.samples import write_multiframe

# A writer like a STOW-RS server: stream a big file into a staging file (with a fresh SOP
# Instance UID each time), then ingest it with move=True; again and again until killed.
_WRITER = r"""
import sys
from pathlib import Path
from dcmstream.archive import Archive

root, big, placeholder, start = sys.argv[1], Path(sys.argv[2]), sys.argv[3].encode(), int(sys.argv[4])
archive = Archive(root, cache=False)
print("ready", flush=True)
i = start
while True:
    uid = placeholder[:-6] + b"%06d" % i
    staged = archive.create_staging(".part")
    path = staged.path
    with open(big, "rb") as src, staged.open_write() as out:
        out.write(src.read(1 << 20).replace(placeholder, uid))
        while chunk := src.read(1 << 20):
            out.write(chunk)
    result = archive.ingest_file(path, move=True)
    assert result.ok, result
    staged.discard()
    i += 1
"""


def _staged(root: Path) -> list[Path]:
    return [p for p in (root / FilesystemBlobStore.STAGING).iterdir() if p.is_file()]


@pytest.mark.slow
def test_killed_ingests_leave_nothing_after_the_next_start(tmp_path: Path) -> None:
    big = write_multiframe(tmp_path / "big.dcm", frames=60, syntax="explicit", kind="ct", rows=512, columns=512, seed=3)
    uid = str(pydicom.dcmread(big, stop_before_pixels=True).SOPInstanceUID)  # its last 6 digits become a counter
    root = tmp_path / "archive"
    rng = random.Random(5)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(Path(__file__).parents[2] / "src"),
                                                                    os.environ.get("PYTHONPATH", "")) if p))
    for kill in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(root), str(big), uid, str(kill * 1000)],
            stdout=subprocess.PIPE, env=env,
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.3, 1.5))  # somewhere in the middle of an ingest
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        proc.stdout.close()
    leftovers = _staged(root)
    print(f"\n5 kills left {len(leftovers)} staging files, {sum(p.stat().st_size for p in leftovers) / 1e6:.0f} MB")
    with Archive(root, cache=False, staging_max_age=0) as archive:
        assert _staged(root) == []
        # nothing half: every row's blob is there, whole
        keys = set(archive.blobs.keys())
        records = [archive.catalog.get(Path(k).stem) for k in keys]
        rows = [r for r in records if r is not None]
        assert rows, "no ingest finished before the kills"
        for record in rows:
            assert record.blob_key in keys and archive.blobs.size(record.blob_key) == record.size
        assert archive.catalog.counts()["instances"] == len({r.sop_uid for r in rows})
        # a kill between the put and the catalog add leaves a blob no row points at
        orphans = sweep_orphans(archive, older_than=0)  # nothing else runs
        assert set(archive.blobs.keys()) == {r.blob_key for r in rows}
        print(f"{len(rows)} instances stored whole; {len(orphans)} unreferenced blobs swept")


def test_the_sweep_keeps_young_and_locked_files(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    old, young, locked = store.staging_path(), store.staging_path(), store.staging_path()
    for p in (old, young, locked):
        p.write_bytes(b"x" * 100)
    hours_ago = time.time() - 7200
    os.utime(old, (hours_ago, hours_ago))
    os.utime(locked, (hours_ago, hours_ago))
    with staging_lock(locked):  # a live writer's file, however old its mtime
        assert store.clean_staging(older_than=3600) == 1
        assert not old.exists() and young.exists() and locked.exists()
    assert store.clean_staging(older_than=3600) == 1 and not locked.exists()
    # an archive opening sweeps with its age limit, whatever the store
    os.utime(young, (hours_ago, hours_ago))
    with Archive(tmp_path / "a", blobs=store, cache=False, staging_max_age=3600):
        assert not young.exists()


def test_orphan_sweep_spares_pinned_young_and_referenced_blobs(tmp_path: Path, testfile) -> None:
    with Archive(tmp_path, cache=False) as archive:
        stored = archive.ingest_file(testfile("CT_small.dcm"))
        record = archive.record(stored.sop_uid)
        assert record is not None
        prefix = f"{record.study_uid}/{record.series_uid}"
        orphan = f"{prefix}/i0123456789abcdef/{record.sop_uid}.dcm"
        swap = f"{prefix}/c0123456789abcdef/{record.sop_uid}.dcm"
        archive.blobs.put_bytes(orphan, b"half an ingest")  # a kill before the catalog add
        archive.blobs.put_bytes(swap, b"half a compression swap")  # a kill before the switch
        # an ingest's or a swap's blob pinned by a live writer (its lock) stays, however old
        with staging_lock(archive.blobs.objects / orphan), staging_lock(archive.blobs.objects / swap):
            assert sweep_orphans(archive) == []
        # unpinned, both are a killed writer's at any age (both writers pin until their row)
        assert sorted(sweep_orphans(archive, dry_run=True)) == sorted([orphan, swap]) and archive.blobs.exists(orphan)
        assert sorted(sweep_orphans(archive)) == sorted([orphan, swap])
        assert list(archive.blobs.keys()) == [record.blob_key]
        # a key of another shape (no writer of this package pins it) goes only when old
        other = f"{prefix}/x0123456789abcdef/{record.sop_uid}.dcm"
        archive.blobs.put_bytes(other, b"someone else's")
        assert sweep_orphans(archive) == []
        hours_ago = time.time() - 7200
        os.utime(archive.blobs.objects / other, (hours_ago, hours_ago))
        os.utime(archive.blobs.objects / record.blob_key, (hours_ago, hours_ago))
        assert sweep_orphans(archive) == [other]
        assert list(archive.blobs.keys()) == [record.blob_key]


def test_orphan_sweep_checks_every_tier_and_spares_journalled_moves(tmp_path: Path, testfile) -> None:
    from dcmstream.archive.lifecycle import LifecycleRule, recover, run_lifecycle

    hot, cold = FilesystemBlobStore(tmp_path / "hot"), FilesystemBlobStore(tmp_path / "cold")
    with Archive(tmp_path / "archive", tiers={"hot": hot, "cold": cold}, cache=False) as archive:
        sops = [archive.ingest_file(testfile(name)).sop_uid for name in ("CT_small.dcm", "MR_small.dcm", "rtdose.dcm")]
        assert run_lifecycle(archive, [LifecycleRule("hot", "cold", after_days_since_ingest=0)], now=time.time() + 60,
                             limit=1).moved == 1
        records = {sop: archive.catalog.get(sop) for sop in sops}
        moved = next(r for r in records.values() if r.tier == "cold")
        in_hot = next(r for r in records.values() if r.tier is None)
        prefix = f"{in_hot.study_uid}/{in_hot.series_uid}"
        orphans = {
            ("hot", f"{prefix}/i00000000000000aa/{in_hot.sop_uid}.dcm"),  # an ingest killed before its add
            ("cold", f"{moved.study_uid}/{moved.series_uid}/c00000000000000bb/{moved.sop_uid}.dcm"),  # a killed swap
            ("cold", in_hot.blob_key),  # the key of a row that points at the hot tier
        }
        for tier, key in orphans:
            archive.store(tier).put_bytes(key, b"left behind")
        # a lifecycle move killed while copying: its journal row names its new copy
        target = f"{prefix}/c00000000000000cc/{in_hot.sop_uid}.dcm"
        archive.catalog.begin_move(in_hot.sop_uid, "hot", in_hot.blob_key, "cold", target)
        cold.put_bytes(target, hot.read_range(in_hot.blob_key))
        # an ingest in flight (its writer holds the file it moved into the store): kept
        old_file = tmp_path / "incoming.dcm"
        old_file.write_bytes(b"in flight")
        in_flight = f"{prefix}/i00000000000000dd/{in_hot.sop_uid}.dcm"
        hours_ago = time.time() - 7200
        for store in (hot, cold):
            for key in store.keys():  # noqa: SIM118 - BlobStore.keys() lists blobs; the store is not a mapping
                os.utime(store.objects / key, (hours_ago, hours_ago))
        with staging_lock(old_file):
            hot.put_file(in_flight, old_file, move=True, exclusive=True)
            assert sorted(sweep_orphans(archive)) == sorted(key for _, key in orphans)
        assert sorted(hot.keys()) == sorted(
            [r.blob_key for r in records.values() if r.tier is None] + [in_flight])
        assert sorted(cold.keys()) == sorted([moved.blob_key, target])
        # the journalled copy is the recovery's to remove, and every instance still reads
        assert recover(archive) == 1 and not cold.exists(target)
        assert [m.id for m in archive.catalog.pending_moves()] == []
        for sop in sops:
            record = archive.catalog.get(sop)
            with archive.open_instance(record) as inst:
                assert str(inst.dataset.SOPInstanceUID) == sop
