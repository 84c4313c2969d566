"""The ingest race: two processes store the same SOP Instance UID with different bytes at
the same moment, 100 times, on (a) SQLite + a folder and (b) PostgreSQL + S3 (moto).

After every round the catalog row must describe the blob it points at (size, content,
the attribute that tells the two versions apart), exactly one of the two writers has
stored the instance, the other reports the conflict (0x0111), and no blob is left that
no row points at. (Before exclusive puts and per-attempt keys the row and the blob
disagreed in most rounds: the second writer's rename replaced the first one's blob.)
"""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Any

import pydicom
import pytest

from dcmstream.archive.ingest import FAILURE_DUPLICATE_SOP
from dcmstream.config import load_config, open_archive

ROUNDS = 100
_ROOT = "1.2.826.0.1.3680043.10.1011"


def _variants(source: str, folder: Path, rounds: int) -> list[tuple[Path, Path]]:
    """Per round, two files of one SOP Instance that differ in PatientName: of the same
    size in even rounds (only the bytes tell them apart), of different sizes in odd ones."""
    ds = pydicom.dcmread(source)
    pairs = []
    for r in range(rounds):
        ds.StudyInstanceUID = f"{_ROOT}.1.{r}"
        ds.SeriesInstanceUID = f"{_ROOT}.2.{r}"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{_ROOT}.3.{r}"
        paths = []
        for name in ("RACE^A", "RACE^B" if r % 2 == 0 else "RACE^BBBBBB"):
            ds.PatientName = name
            path = folder / f"{r}-{name[5:]}.dcm"
            ds.save_as(path)
            paths.append(path)
        pairs.append((paths[0], paths[1]))
    return pairs


def _writer(config: str, files: list[str], barrier: Any, out: Any) -> None:
    """One racing process: its own archive from the configuration, one file per round,
    each round started together with the other process."""
    archive = open_archive(load_config(config), cache=False)
    try:
        results = []
        for path in files:
            barrier.wait(timeout=60)
            r = archive.ingest_file(path)
            results.append((r.status, r.failure_reason, r.message))
        out.put(results)
    finally:
        archive.close()


Outcome = tuple[str, "int | None", str]


def _race(config: Path, pairs: list[tuple[Path, Path]]) -> list[list[Outcome]]:
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_writer, args=(str(config), [str(p[i]) for p in pairs], barrier, out)) for i in (0, 1)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    return results


def _check(config: Path, pairs: list[tuple[Path, Path]], results: list[list[Outcome]]) -> dict[str, int]:
    archive = open_archive(load_config(config), cache=False)
    try:
        referenced = set()
        tally = {"rounds": len(pairs), "first_won": 0, "second_won": 0, "raced": 0, "winner_on_attempt_key": 0}
        for r, (a, b) in enumerate(pairs):
            record = archive.catalog.get(f"{_ROOT}.3.{r}", with_dataset=True)
            assert record is not None, f"round {r}: no row"
            blob = archive.blobs.read_range(record.blob_key)
            # the row describes the bytes under its key
            assert record.size == len(blob), f"round {r}: row size {record.size} != blob {len(blob)}"
            candidates = {a.read_bytes(): "RACE^A", b.read_bytes(): "RACE^B" if r % 2 == 0 else "RACE^BBBBBB"}
            assert blob in candidates, f"round {r}: the blob is neither version"
            assert record.dataset_json is not None
            name = json.loads(record.dataset_json)["00100010"]["Value"][0]["Alphabetic"]
            assert name == candidates[blob], f"round {r}: row ({name}) and blob ({candidates[blob]}) disagree"
            referenced.add(record.blob_key)
            # exactly one writer stored it; the other saw the conflict (both got past the
            # catalog look-up: a real race), or, when it came late, found it archived
            statuses = sorted((results[0][r], results[1][r]), key=lambda s: s[0] != "stored")
            assert statuses[0][0] == "stored", f"round {r}: {statuses}"
            raced = statuses[1][:2] == ("failed", FAILURE_DUPLICATE_SOP)
            assert raced or statuses[1] == ("duplicate", None, "already archived"), f"round {r}: {statuses}"
            tally["raced"] += raced
            tally["first_won" if results[0][r][0] == "stored" else "second_won"] += 1
            tally["winner_on_attempt_key"] += "/i" in record.blob_key
        assert set(archive.blobs.keys()) == referenced, "orphan blobs left"
        assert archive.catalog.counts()["instances"] == len(pairs)
        return tally
    finally:
        archive.close()


@pytest.mark.slow
def test_race_on_sqlite_and_folder(tmp_path: Path, testfile) -> None:
    pairs = _variants(testfile("CT_small.dcm"), tmp_path, ROUNDS)
    config = tmp_path / "archive.toml"
    config.write_text(
        f'[catalog]\nurl = "sqlite:///{tmp_path}/archive/catalog.sqlite"\n'
        f'[storage.hot]\nurl = "file://{tmp_path}/archive"\nfsync = false\n'
    )
    tally = _check(config, pairs, _race(config, pairs))
    print("sqlite+folder", tally)


@pytest.mark.slow
def test_race_on_postgres_and_s3(tmp_path: Path, testfile, postgres_server, monkeypatch) -> None:
    from ..s3_util import moto_server

    pairs = _variants(testfile("CT_small.dcm"), tmp_path, ROUNDS)
    with postgres_server.database() as url, moto_server() as s3:
        for name, value in s3.env.items():
            monkeypatch.setenv(name, value)  # the spawned writers inherit them
        bucket = s3.make_bucket()
        config = tmp_path / "archive.toml"
        config.write_text(
            f'[archive]\nroot = "{tmp_path}/local"\n[catalog]\nurl = "{url}"\n'
            f'[storage.hot]\nurl = "s3://{bucket}/objects"\nendpoint_url = "{s3.endpoint_url}"\n'
        )
        tally = _check(config, pairs, _race(config, pairs))
        print("postgresql+s3", tally)
