"""Deleting studies, series and instances: rows, blobs on every tier, the journal, and
deletes killed (SIGKILL) at every step, on SQLite + folders, PostgreSQL and S3."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dcmstream.archive import Archive, FilesystemBlobStore, InstanceDeletedError, InvalidUIDError
from dcmstream.archive.deletion import finish_deletions
from dcmstream.archive.lifecycle import LifecycleRule, run_lifecycle
from dcmstream.config import load_config, open_archive
from dcmstream.samples import write_multiframe, write_series


def make_files(folder: Path) -> list[Path]:
    """Three single-frame series (three studies) and two multiframe instances (two more studies)."""
    files = sorted(write_series(folder / "s1", files=3, rows=24, columns=24, seed=11).iterdir())
    files += sorted(write_series(folder / "s2", files=2, rows=24, columns=24, seed=12).iterdir())
    files += sorted(write_series(folder / "s3", files=2, rows=24, columns=24, seed=13).iterdir())
    files += [write_multiframe(folder / f"m{i}.dcm", frames=3, syntax="jpeg-ls", kind="ct", rows=24, columns=24, seed=40 + i)
              for i in range(2)]
    return files


def ingest_all(arc: Archive, files: list[Path]) -> dict[str, bytes]:
    """sop -> the bytes ingested."""
    out = {}
    for path in files:
        result = arc.ingest_file(path)
        assert result.status == "stored", result.message
        out[result.sop_uid] = path.read_bytes()
    return out


def blobs_everywhere(arc: Archive) -> set[tuple[str, str]]:
    return {(name, key) for name, store in arc.tiers.items() for key in store.keys()}  # noqa: SIM118


def assert_state(arc: Archive, expected: dict[str, bytes]) -> None:
    """Exactly ``expected`` is archived: rows, one blob each (byte-identical), no journal,
    no other blob, no staging file."""
    assert arc.catalog.pending_deletions() == []
    assert arc.catalog.counts()["instances"] == len(expected)
    want = set()
    for sop, data in expected.items():
        record = arc.catalog.get(sop)
        assert record is not None, sop
        assert b"".join(arc.iter_blob(record)) == data
        want.add((arc.tier_of(record), record.blob_key))
    assert blobs_everywhere(arc) == want
    studies = {arc.catalog.get(s).study_uid for s in expected}
    assert arc.catalog.counts()["studies"] == len(studies)


@pytest.fixture
def archive(tmp_path):
    root = tmp_path / "archive"
    tiers = {"hot": FilesystemBlobStore(root), "cold": FilesystemBlobStore(tmp_path / "cold")}
    arc = Archive(root, tiers=tiers, cache=False)
    originals = ingest_all(arc, make_files(tmp_path / "in"))
    arc.originals = originals  # type: ignore[attr-defined]
    yield arc
    arc.close()


def _by_study(arc: Archive, originals: dict[str, bytes]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for sop in originals:
        out.setdefault(arc.catalog.get(sop).study_uid, []).append(sop)
    return out


def test_delete_instance_series_study(archive: Archive) -> None:
    originals = dict(archive.originals)  # type: ignore[attr-defined]
    studies = _by_study(archive, originals)
    big = next(s for s, sops in studies.items() if len(sops) == 3)
    sops = studies[big]
    first = archive.catalog.get(sops[0])
    version = archive.catalog.version(big)
    # one instance
    result = archive.delete(big, first.series_uid, first.sop_uid)
    assert [r.sop_uid for r in result.records] == [first.sop_uid]
    assert result.blobs_deleted == 1 and result.blobs_pending == 0
    assert result.as_dict()["deleted"]["instances"] == 1
    del originals[first.sop_uid]
    assert archive.catalog.get(first.sop_uid) is None
    assert archive.record(first.sop_uid) is None
    assert archive.catalog.version(big) != version
    assert_state(archive, originals)
    # again: nothing matches
    assert not archive.delete(big, first.series_uid, first.sop_uid).found
    # the series (two instances left): the study goes with it
    result = archive.delete(big, first.series_uid)
    assert sorted(r.sop_uid for r in result.records) == sorted(sops[1:])
    for sop in sops[1:]:
        del originals[sop]
    assert archive.catalog.version(big) == (0, 0)
    from dcmstream.archive import Query

    assert archive.catalog.search(Query("study", matches=[("StudyInstanceUID", big)])).hits == []
    assert archive.catalog.search(Query("series", study_uid=big)).hits == []
    assert_state(archive, originals)
    # a whole study
    other = next(s for s in studies if s != big)
    result = archive.delete(other)
    assert {r.sop_uid for r in result.records} == set(studies[other])
    for sop in studies[other]:
        del originals[sop]
    assert_state(archive, originals)


def test_wrong_scope_and_malformed_uids(archive: Archive) -> None:
    originals = archive.originals  # type: ignore[attr-defined]
    sop = next(iter(originals))
    record = archive.catalog.get(sop)
    other_series = "1.2.3.4"
    assert not archive.delete(record.study_uid, other_series, sop).found  # an instance of another series
    assert not archive.delete("1.2.3").found
    with pytest.raises(InvalidUIDError):
        archive.delete("1.2.x")
    with pytest.raises(InvalidUIDError):
        archive.delete(record.study_uid, "../etc")
    assert_state(archive, originals)


def test_delete_in_a_cold_tier(archive: Archive) -> None:
    originals = dict(archive.originals)  # type: ignore[attr-defined]
    report = run_lifecycle(archive, [LifecycleRule("hot", "cold", after_days_since_ingest=0)])
    assert report.moved == len(originals)
    sop = next(iter(originals))
    record = archive.catalog.get(sop)
    assert record.tier == "cold"
    archive.delete(record.study_uid, record.series_uid, sop)
    del originals[sop]
    assert not any(key == record.blob_key for _, key in blobs_everywhere(archive))
    assert_state(archive, originals)


def test_readers_of_another_process_get_not_found(tmp_path, archive: Archive) -> None:
    """Another Archive on the same catalog and folder (as another process) memoised the
    record; after the delete its reads raise InstanceDeletedError (404), and a source it
    opened before the delete reads to the end."""
    sop = next(iter(archive.originals))  # type: ignore[attr-defined]
    other = Archive(archive.root, tiers=archive.tiers, cache=False)
    try:
        record = other.record(sop)
        held = other.open_blob(record)
        archive.delete(record.study_uid, record.series_uid, sop)
        assert held.read_at(0, held.size) == archive.originals[sop]  # type: ignore[attr-defined]
        held.close()
        with pytest.raises(InstanceDeletedError) as info:
            other.open_blob(record)
        assert sop in str(info.value)
        assert other.record(sop) is None
    finally:
        other.close()


def test_memoised_records_of_other_processes_are_dropped(archive: Archive) -> None:
    """An Archive that memoised a record (another process) drops it once the catalog's
    delete counter moved (looked at within its interval)."""
    sop = next(iter(archive.originals))  # type: ignore[attr-defined]
    other = Archive(archive.root, tiers=archive.tiers, cache=False, deletion_check_interval=0)
    lazy = Archive(archive.root, tiers=archive.tiers, cache=False, deletion_check_interval=3600)
    try:
        record = other.record(sop)
        assert lazy.record(sop) == record and other.deletions_due() and not lazy.deletions_due()
        epoch = archive.catalog.deletion_epoch()
        archive.delete(record.study_uid, record.series_uid, sop)
        assert archive.catalog.deletion_epoch() != epoch
        assert other.record(sop) is None
        assert lazy.record(sop) == record  # not looked yet: bounded by its interval
        lazy.deletion_check_interval = 0
        assert lazy.record(sop) is None
    finally:
        other.close()
        lazy.close()


def test_ingest_after_delete_and_while_journalled(archive: Archive, tmp_path) -> None:
    """The same instance stored again after a delete; and while a crashed delete's journal
    still lists its key, the new blob goes under a fresh key the journal never deletes."""
    originals = dict(archive.originals)  # type: ignore[attr-defined]
    files = {p.read_bytes(): p for p in make_files(tmp_path / "again")}
    sop = next(iter(originals))
    record = archive.catalog.get(sop)
    archive.delete(record.study_uid, record.series_uid, sop)
    assert archive.ingest_file(files[originals[sop]]).status == "stored"
    assert archive.catalog.get(sop).blob_key == record.blob_key  # the usual key again
    # a delete killed after its commit: rows gone, blob and journal row still there
    removed = archive.catalog.delete_instances(record.study_uid, record.series_uid, sop, first_tier="hot")
    assert len(removed) == 1 and archive.catalog.deletion_pending(record.blob_key)
    assert archive.ingest_file(files[originals[sop]]).status == "stored"
    new = archive.catalog.get(sop)
    assert new.blob_key != record.blob_key
    assert finish_deletions(archive) == (1, 0)
    assert_state(archive, originals)


# -- killed at every step ---------------------------------------------------------------------
CHILD = r"""
import json, os, signal, sys
from dcmstream.config import load_config, open_archive
spec = json.loads(sys.argv[1])
arc = open_archive(load_config(spec["config"]), cache=False)
seen = []
def hook(stage):
    seen.append(stage)
    if stage == spec["stage"] and seen.count(stage) == spec.get("nth", 1):
        os.kill(os.getpid(), signal.SIGKILL)
result = arc.delete(spec["study"], spec.get("series"), spec.get("instance"), hook=hook)
print(json.dumps({"deleted": len(result.records), "stages": seen}))
"""

#: (stage, nth time): inside the transaction, after the second blob, after the first blob,
#: committed, after every blob (journal rows still there), after the journal rows went.
KILL_POINTS = [("transaction", 1), ("blob", 2), ("blob", 1), ("journalled", 1), ("blobs", 1), ("done", 1)]


def _kill_at_every_step(tmp_path: Path, config: Path, originals: dict[str, bytes]) -> None:
    """Kill a delete of a study at each point (the largest study left each time), then
    open the archive again: the old state (killed before the commit) or the delete done."""
    with open_archive(load_config(config), cache=False) as arc:
        assert_state(arc, originals)
    for stage, nth in KILL_POINTS:
        with open_archive(load_config(config), cache=False) as arc:
            studies = _by_study(arc, originals)
        study = max(studies, key=lambda s: (len(studies[s]), s))
        assert len(studies[study]) >= nth
        spec = {"config": str(config), "study": study, "stage": stage, "nth": nth}
        proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == -signal.SIGKILL, (stage, proc.stdout, proc.stderr[-3000:])
        if stage != "transaction":
            originals = {s: data for s, data in originals.items() if s not in studies[study]}
        # The next opening finishes what the killed delete owed (or finds the old state).
        with open_archive(load_config(config), cache=False) as arc:
            assert_state(arc, originals)


def _config(tmp_path: Path, catalog: str, storage: str) -> Path:
    config = tmp_path / "archive.toml"
    config.write_text(f'[archive]\nroot = "{tmp_path / "local"}"\n[catalog]\nurl = "{catalog}"\n{storage}')
    return config


def test_killed_at_every_step_sqlite_folders(tmp_path) -> None:
    config = _config(tmp_path, f"sqlite:///{tmp_path / 'catalog.sqlite'}",
                     f'[storage.hot]\nurl = "file://{tmp_path / "hot"}"\n[storage.cold]\nurl = "file://{tmp_path / "cold"}"\n')
    with open_archive(load_config(config), cache=False) as arc:
        originals = ingest_all(arc, make_files(tmp_path / "in"))
        # one instance of each study in the cold tier: a delete spans both tiers
        for study_sops in _by_study(arc, originals).values():
            record = arc.catalog.get(study_sops[0])
            from dcmstream.archive.lifecycle import Move, move_instance

            move_instance(arc, Move(record, "hot", "cold", 0))
    _kill_at_every_step(tmp_path, config, originals)


def test_killed_at_every_step_postgres_s3(tmp_path, postgres_server, monkeypatch) -> None:
    pytest.importorskip("moto")
    from ..s3_util import moto_server

    with postgres_server.database() as url, moto_server() as s3:
        for name, value in s3.env.items():
            monkeypatch.setenv(name, value)  # the killed children inherit them
        bucket = s3.make_bucket()
        config = _config(tmp_path, url, f'[storage.hot]\nurl = "s3://{bucket}/objects"\nendpoint_url = "{s3.endpoint_url}"\n'
                                        f'[storage.cold]\nurl = "file://{tmp_path / "cold"}"\n')
        with open_archive(load_config(config), cache=False) as arc:
            originals = ingest_all(arc, make_files(tmp_path / "in"))
        _kill_at_every_step(tmp_path, config, originals)


def test_finish_leaves_rows_of_an_unknown_tier(tmp_path, archive: Archive) -> None:
    """A journal row naming a tier this archive is not configured with stays (logged)."""
    sop = next(iter(archive.originals))  # type: ignore[attr-defined]
    record = archive.catalog.get(sop)
    archive.catalog.delete_instances(record.study_uid, record.series_uid, sop, first_tier="elsewhere")
    assert finish_deletions(archive) == (0, 1)
    assert [d.tier for d in archive.catalog.pending_deletions()] == ["elsewhere"]
    assert os.path.exists(archive.tiers["hot"].local_path(record.blob_key))


def test_cli_delete(tmp_path) -> None:
    from typer.testing import CliRunner

    from dcmstream.cli.main import app

    root = tmp_path / "archive"
    with Archive(root, cache=False) as arc:
        originals = ingest_all(arc, make_files(tmp_path / "in"))
        studies = _by_study(arc, originals)
    study = max(studies, key=lambda s: len(studies[s]))
    runner = CliRunner()
    result = runner.invoke(app, ["delete", str(root), "--study", study], input="n\n")  # asked, declined
    assert result.exit_code == 1 and "delete 3 instance(s)" in result.output, result.output
    result = runner.invoke(app, ["delete", str(root), "--study", "1.2.x", "--yes"])
    assert result.exit_code != 0 and "1.2.x" in result.output
    result = runner.invoke(app, ["delete", str(root), "--study", "1.2.3", "--yes"])
    assert result.exit_code == 1 and "nothing to delete" in result.output
    with Archive(root, cache=False) as arc:
        sop = studies[study][0]
        series = arc.catalog.get(sop).series_uid
    result = runner.invoke(app, ["delete", str(root), "--study", study, "--series", series, "--instance", sop, "--yes"])
    assert result.exit_code == 0 and "deleted 1 instance(s)" in result.output, result.output
    result = runner.invoke(app, ["delete", str(root), "--study", study], input="y\n")
    assert result.exit_code == 0 and "deleted 2 instance(s)" in result.output, result.output
    remaining = {s: d for s, d in originals.items() if s not in studies[study]}
    with Archive(root, cache=False) as arc:
        assert_state(arc, remaining)
    # with --config
    other = next(s for s in studies if s != study)
    config = _config(tmp_path, f"sqlite:///{root / 'catalog.sqlite'}", f'[storage.hot]\nurl = "file://{root}"\n')
    result = runner.invoke(app, ["delete", "--config", str(config), "--study", other, "--yes"])
    assert result.exit_code == 0 and f"deleted {len(studies[other])} instance(s)" in result.output, result.output
    with Archive(root, cache=False) as arc:
        assert_state(arc, {s: d for s, d in remaining.items() if s not in studies[other]})
