"""Lifecycle rules: plans, verified moves, compare-and-swap, and runs killed at random points."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from dcmstream import open as dcmstream_open
from dcmstream.archive import Archive, FilesystemBlobStore
from dcmstream.archive.lifecycle import (
    LifecycleError,
    LifecycleRule,
    load_rules,
    plan,
    recover,
    rules_from_config,
    run_lifecycle,
)
from dcmstream.samples import write_multiframe, write_series

DAY = 86400.0


def make_files(folder: Path, n: int = 4) -> list[Path]:
    return [
        write_multiframe(folder / f"f{i}.dcm", frames=5 + i, syntax="jpeg-ls", kind="ct", rows=40, columns=40, seed=90 + i)
        for i in range(n)
    ]


def folder_tiers(root: Path) -> dict[str, FilesystemBlobStore]:
    return {"hot": FilesystemBlobStore(root), "cold": FilesystemBlobStore(root.parent / (root.name + "-cold"))}


@pytest.fixture
def archive(tmp_path):
    root = tmp_path / "archive"
    arc = Archive(root, tiers=folder_tiers(root), cache=False)
    for path in make_files(tmp_path):
        assert arc.ingest_file(path).status == "stored"
    yield arc
    arc.close()


def assert_consistent(arc: Archive, originals: dict[str, bytes]) -> None:
    """Every instance readable byte-identical from its tier; no blob, staging file, partial
    file, unfinished upload or journal row besides that."""
    assert arc.catalog.pending_moves() == []
    assert arc.catalog.counts()["instances"] == len(originals)
    expected: dict[str, set[str]] = {name: set() for name in arc.tiers}
    for sop, data in originals.items():
        record = arc.catalog.get(sop)
        assert b"".join(arc.iter_blob(record)) == data, sop
        expected[arc.tier_of(record)].add(record.blob_key)
    for name, store in arc.tiers.items():
        assert set(store.keys()) == expected[name], name
        assert [p for p in store.staging_path().parent.iterdir() if p.name.endswith(".move")] == []
        if isinstance(store, FilesystemBlobStore):
            assert [p for p in store.objects.rglob(".*")] == []
            assert sorted(p for p in store.objects.rglob("*") if p.is_file()) == sorted(store.objects / k for k in expected[name])


# -- rules and plans ---------------------------------------------------------------------------
def test_rules_from_toml(tmp_path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('[[lifecycle]]\nfrom = "hot"\nto = "cold"\nafter_days_without_access = 30\n'
                    '[[lifecycle]]\nfrom = "cold"\nto = "glacier"\nafter_days_since_ingest = 365\n')
    assert load_rules(path) == [LifecycleRule("hot", "cold", 30), LifecycleRule("cold", "glacier", None, 365)]
    for bad in ({"from": "hot", "to": "cold"}, {"from": "hot", "to": "hot", "after_days_since_ingest": 1},
                {"from": "hot", "to": "cold", "after_days_since_ingest": -1}, {"from": "hot", "to": "cold", "after_day": 1},
                {"to": "cold", "after_days_since_ingest": 1}):
        with pytest.raises(LifecycleError):
            rules_from_config([bad])


def test_plan_follows_access_and_ingest_times(archive: Archive) -> None:
    sops = sorted(r.sop_uid for r in archive.iter_records())
    ingested = max(archive.catalog.get(s).ingested_at for s in sops)
    archive.catalog.touch({sops[0]: ingested + 20 * DAY})  # read 20 days after ingest
    rule = [LifecycleRule("hot", "cold", after_days_without_access=30)]
    assert plan(archive, rule, ingested + 10 * DAY) == []
    assert [m.sop_uid for m in plan(archive, rule, ingested + 31 * DAY)] == sops[1:]
    assert [m.sop_uid for m in plan(archive, rule, ingested + 51 * DAY)] == sops
    by_ingest = [LifecycleRule("hot", "cold", after_days_since_ingest=30)]
    assert [m.sop_uid for m in plan(archive, by_ingest, ingested + 31 * DAY)] == sops
    both = [LifecycleRule("hot", "cold", after_days_without_access=30, after_days_since_ingest=30)]
    assert [m.sop_uid for m in plan(archive, both, ingested + 31 * DAY)] == sops[1:]
    with pytest.raises(LifecycleError, match="no storage tier 'glacier'"):
        plan(archive, [LifecycleRule("hot", "glacier", after_days_since_ingest=1)])


def test_dry_run_changes_nothing(archive: Archive) -> None:
    keys = list(archive.blobs.keys())
    report = run_lifecycle(archive, [LifecycleRule("hot", "cold", after_days_since_ingest=0)], dry_run=True, limit=3)
    assert report.dry_run and report.planned == 3 and len(report.moves) == 3 and report.moved == 0
    assert report.bytes == sum(m.size for m in report.moves)
    assert list(archive.blobs.keys()) == keys and list(archive.tiers["cold"].keys()) == []


def test_run_moves_verified_and_back(archive: Archive) -> None:
    originals = {r.sop_uid: b"".join(archive.iter_blob(r)) for r in archive.iter_records()}
    report = run_lifecycle(archive, [LifecycleRule("hot", "cold", after_days_since_ingest=0)], limit=3)
    assert (report.planned, report.moved, report.failures) == (3, 3, [])
    assert report.bytes == sum(len(originals[s]) for s in originals if archive.catalog.get(s).tier == "cold")
    assert report.seconds > 0 and report.mb_per_s > 0
    assert_consistent(archive, originals)
    report = run_lifecycle(archive, [LifecycleRule("cold", "hot", after_days_since_ingest=0)])
    assert report.moved == 3
    assert all(archive.catalog.get(s).tier is None for s in originals)  # back in the first tier: NULL again
    assert_consistent(archive, originals)


def test_a_row_changed_during_the_move_is_left_alone(archive: Archive) -> None:
    originals = {r.sop_uid: b"".join(archive.iter_blob(r)) for r in archive.iter_records()}
    target = sorted(originals)[0]

    def swap_meanwhile(stage, move):  # what a compression swap in another process would do
        if stage == "verified" and move.sop_uid == target:
            record = archive.catalog.get(target, with_dataset=True)
            new_key = archive.replacement_key(record)
            archive.blobs.put_bytes(new_key, originals[target])
            assert archive.catalog.replace_blob(target, record.blob_key, replace(record, blob_key=new_key))
            archive.blobs.delete(record.blob_key)

    report = run_lifecycle(archive, [LifecycleRule("hot", "cold", after_days_since_ingest=0)], hook=swap_meanwhile)
    assert report.moved == 3 and [sop for sop, _ in report.failures] == [target]
    assert archive.catalog.get(target).tier is None
    assert_consistent(archive, originals)


class CorruptingStore(FilesystemBlobStore):
    """Stores one byte differently from what it was given (a bad disk or a bad gateway)."""

    def put_file(self, key, path, *, move=False, exclusive=False):
        data = bytearray(Path(path).read_bytes())
        data[len(data) // 2] ^= 0xFF
        Path(path).write_bytes(bytes(data))
        return super().put_file(key, path, move=move, exclusive=exclusive)


def test_a_copy_that_reads_back_different_is_not_switched(tmp_path) -> None:
    root = tmp_path / "archive"
    with Archive(root, tiers={"hot": FilesystemBlobStore(root), "cold": CorruptingStore(tmp_path / "cold")}, cache=False) as arc:
        paths = make_files(tmp_path, 2)
        originals = {arc.ingest_file(p).sop_uid: p.read_bytes() for p in paths}
        # The staging copy is corrupted before the put, so the length matches: the checksum catches it.
        report = run_lifecycle(arc, [LifecycleRule("hot", "cold", after_days_since_ingest=0)])
        assert report.moved == 0 and len(report.failures) == 2
        assert all("reads back different bytes" in msg for _, msg in report.failures)
        assert_consistent(arc, originals)


def test_recovery_cleans_a_copy_left_before_its_switch(archive: Archive) -> None:
    originals = {r.sop_uid: b"".join(archive.iter_blob(r)) for r in archive.iter_records()}
    record = archive.catalog.get(sorted(originals)[0])
    cold: FilesystemBlobStore = archive.tiers["cold"]  # type: ignore[assignment]
    new_key = archive.replacement_key(record)
    archive.catalog.begin_move(record.sop_uid, "hot", record.blob_key, "cold", new_key)
    # what a run killed inside put_file leaves: its staging file (created locked, the lock
    # died with it) and a hidden temporary sibling; a live run's staging file stays
    killed = cold.create_staging(".move")
    killed.path.write_bytes(b"partial")
    killed.close()
    live = cold.create_staging(".move")
    (cold.objects / new_key).parent.mkdir(parents=True)
    (cold.objects / new_key).with_name(f".{Path(new_key).name}.0123456789ab.tmp").write_bytes(b"partial")
    assert recover(archive) == 1
    assert not killed.path.exists() and live.path.exists()
    live.discard()
    assert_consistent(archive, originals)


# -- killed at random points --------------------------------------------------------------------
CHILD = r"""
import json, os, random, signal, sys, time
from pathlib import Path
spec = json.loads(sys.argv[1])
from dcmstream.archive import Archive, FilesystemBlobStore, S3BlobStore
from dcmstream.archive.lifecycle import LifecycleRule, run_lifecycle
root = Path(spec["root"])
cold = (S3BlobStore(spec["bucket"], "cold", endpoint_url=spec["endpoint"], staging_dir=spec["staging"],
                    multipart_threshold=spec["multipart"], multipart_chunksize=5 << 20)
        if spec.get("bucket") else FilesystemBlobStore(spec["cold"]))
arc = Archive(root, tiers={"hot": FilesystemBlobStore(root), "cold": cold}, cache=False)
steps = 0
def hook(stage, move):
    global steps
    steps += 1
    if steps == spec["kill_at"]:
        os.kill(os.getpid(), signal.SIGKILL)
rules = [LifecycleRule("hot", "cold", after_days_since_ingest=0), LifecycleRule("cold", "hot", after_days_since_ingest=0)]
report = run_lifecycle(arc, rules, hook=hook)
print(json.dumps(report.as_dict()))
"""


def _kill_runs(arc: Archive, spec: dict, originals: dict[str, bytes], seed: int) -> None:
    rng = random.Random(seed)
    hook_calls_per_run = 6 * len(originals)  # every run moves every instance (one way or the other)
    stages = set()
    for _ in range(10):
        spec["kill_at"] = rng.randint(1, hook_calls_per_run)
        stages.add((spec["kill_at"] - 1) % 6)  # begun, staged, copied, verified, switched, deleted
        proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert len(stages) >= 4  # the seeds are chosen so the kills hit most crash points
    spec["kill_at"] = 0
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    # Every kill came between a journal row's insert and delete: the last one is recovered here.
    assert report["recovered"] == 1
    assert report["moved"] == len(originals) and report["failures"] == []
    assert_consistent(arc, originals)


def test_killed_at_random_points_folder_to_folder(tmp_path) -> None:
    root = tmp_path / "archive"
    paths = make_files(tmp_path, 3) + sorted(write_series(tmp_path / "series", files=3, rows=32, columns=32, seed=5).iterdir())
    with Archive(root, cache=False) as arc:
        originals = {arc.ingest_file(p).sop_uid: p.read_bytes() for p in paths}
    spec = {"root": str(root), "cold": str(tmp_path / "archive-cold")}
    with Archive(root, tiers=folder_tiers(root), cache=False) as arc:
        _kill_runs(arc, spec, originals, seed=1)


def test_killed_at_random_points_folder_to_s3(tmp_path, monkeypatch) -> None:
    pytest.importorskip("moto")
    from dcmstream.archive import S3BlobStore

    from ..s3_util import moto_server

    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    root = tmp_path / "archive"
    big = write_multiframe(tmp_path / "big.dcm", frames=80, syntax="explicit", kind="ct", rows=256, columns=256, seed=3)
    paths = make_files(tmp_path, 3) + [big]  # the big one (10 MB) goes up as a multipart upload
    with Archive(root, cache=False) as arc:
        originals = {arc.ingest_file(p).sop_uid: p.read_bytes() for p in paths}
    with moto_server() as server:
        for name, value in server.env.items():
            monkeypatch.setenv(name, value)
        bucket = server.make_bucket()
        spec = {"root": str(root), "bucket": bucket, "endpoint": server.endpoint_url, "staging": str(tmp_path / "s3-staging"),
                "multipart": 6 << 20}
        cold = S3BlobStore(bucket, "cold", endpoint_url=server.endpoint_url, staging_dir=tmp_path / "s3-staging")
        with Archive(root, tiers={"hot": FilesystemBlobStore(root), "cold": cold}, cache=False) as arc:
            _kill_runs(arc, spec, originals, seed=2)
        assert server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_cli_run_and_status(tmp_path) -> None:
    from typer.testing import CliRunner

    from dcmstream.cli.main import app

    root = tmp_path / "archive"
    with Archive(root, cache=False) as arc:
        originals = {arc.ingest_file(p).sop_uid: p.read_bytes() for p in make_files(tmp_path, 2)}
    rules = tmp_path / "rules.toml"
    rules.write_text('[[lifecycle]]\nfrom = "hot"\nto = "cold"\nafter_days_without_access = 30\n')
    cold = tmp_path / "cold"
    base = ["lifecycle", "run", "--archive", str(root), "--tier", f"cold={cold}", "--rules", str(rules)]
    runner = CliRunner()
    result = runner.invoke(app, base)  # nothing is 30 days old yet
    assert result.exit_code == 0, result.output
    assert "moved 0" in result.output
    later = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 40 * DAY))
    result = runner.invoke(app, [*base, "--now", later, "--dry-run"])
    assert result.exit_code == 0 and "would move 2" in result.output, result.output
    result = runner.invoke(app, [*base, "--now", later])
    assert result.exit_code == 0 and "moved 2" in result.output, result.output
    result = runner.invoke(app, ["lifecycle", "status", "--archive", str(root), "--tier", f"cold={cold}", "--price", "cold=0.004"])
    assert result.exit_code == 0, result.output
    assert "cold" in result.output and "2" in result.output
    with Archive(root, tiers={"hot": FilesystemBlobStore(root), "cold": FilesystemBlobStore(cold)}, cache=False) as arc:
        assert_consistent(arc, originals)
        assert all(arc.catalog.get(s).tier == "cold" for s in originals)


def test_cli_with_config(tmp_path) -> None:
    """``dcmstream import`` and ``lifecycle run|status`` with one ``--config`` file: its
    catalog, its [storage.*] tiers and prices, and its [[lifecycle]] rules."""
    from typer.testing import CliRunner

    from dcmstream.cli.main import app
    from dcmstream.config import load_config, open_archive

    files = make_files(tmp_path, 3)
    config = tmp_path / "archive.toml"
    config.write_text(
        f'[archive]\nroot = "{tmp_path / "local"}"\n'
        f'[catalog]\nurl = "sqlite:///{tmp_path / "catalog.sqlite"}"\n'
        f'[storage.hot]\nurl = "file://{tmp_path / "hot"}"\nprice_per_gb_month = 0.10\n'
        f'[storage.cold]\nurl = "file://{tmp_path / "cold"}"\nprice_per_gb_month = 0.004\n'
        '[[lifecycle]]\nfrom = "hot"\nto = "cold"\nafter_days_since_ingest = 30\n'
    )
    runner = CliRunner()
    result = runner.invoke(app, ["import", *map(str, files), "--config", str(config)])
    assert result.exit_code == 0, result.output
    later = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 40 * DAY))
    result = runner.invoke(app, ["lifecycle", "run", "--config", str(config), "--now", later])
    assert result.exit_code == 0 and "moved 3" in result.output, result.output
    result = runner.invoke(app, ["lifecycle", "status", "--config", str(config)])
    assert result.exit_code == 0, result.output
    cold_line = next(line for line in result.output.splitlines() if "cold" in line)
    assert " 3 " in f" {cold_line} "  # three instances, priced from the config
    originals = {}
    for path in files:
        with dcmstream_open(path) as inst:
            originals[str(inst.dataset.SOPInstanceUID)] = path.read_bytes()
    with open_archive(load_config(config), cache=False) as arc:
        assert arc.tier_prices == {"hot": 0.10, "cold": 0.004}
        assert_consistent(arc, originals)
        assert all(arc.tier_of(arc.catalog.get(s)) == "cold" for s in originals)
    result = runner.invoke(app, ["lifecycle", "run", "--config", str(config), "--archive", str(tmp_path)])
    assert result.exit_code != 0 and "not both" in result.output
