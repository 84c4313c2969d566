"""Storage tiers: new instances go to the first tier, reads are transparent from any tier,
status and cost per tier, and /metrics gauges."""

from __future__ import annotations

import time

import numpy as np
import pytest
from starlette.testclient import TestClient

import dcmstream
from dcmstream.archive import Archive, FilesystemBlobStore
from dcmstream.archive.archive import UnknownTierError
from dcmstream.archive.lifecycle import LifecycleRule, run_lifecycle, tier_status
from dcmstream.samples import write_multiframe
from dcmstream.web import create_app

ALL_TO_COLD = [LifecycleRule("hot", "cold", after_days_since_ingest=0)]


@pytest.fixture
def files(tmp_path):
    return {
        "jls": write_multiframe(tmp_path / "jls.dcm", frames=12, syntax="jpeg-ls", kind="ct", rows=48, columns=48, seed=71),
        "native": write_multiframe(tmp_path / "native.dcm", frames=6, syntax="explicit", kind="ct", rows=48, columns=48, seed=72),
    }


@pytest.fixture
def tiered(tmp_path, files):
    root = tmp_path / "archive"
    arc = Archive(root, tiers={"hot": FilesystemBlobStore(root), "cold": FilesystemBlobStore(tmp_path / "cold")}, cache=False,
                  tier_prices={"hot": 0.023, "cold": 0.004})
    sops = {name: arc.ingest_file(path).sop_uid for name, path in files.items()}
    yield arc, sops
    arc.close()


def test_without_tiers_there_is_one_named_hot(tmp_path) -> None:
    with Archive(tmp_path) as arc:
        assert arc.tiers == {"hot": arc.blobs} and arc.hot_tier == "hot"
    with pytest.raises(ValueError):
        Archive(tmp_path / "b", blobs=FilesystemBlobStore(tmp_path / "x"), tiers={"hot": FilesystemBlobStore(tmp_path / "y")})


def test_new_instances_go_to_the_first_tier(tiered) -> None:
    arc, sops = tiered
    assert arc.blobs is arc.tiers["hot"]
    for sop in sops.values():
        record = arc.record(sop)
        assert record.tier is None and arc.tier_of(record) == "hot"
        assert arc.blobs.exists(record.blob_key)
    assert list(arc.tiers["cold"].keys()) == []


def test_reads_are_transparent_from_any_tier(tiered, files) -> None:
    arc, sops = tiered
    before = {name: [arc.stored(arc.record(sop)).frame(i) for i in (0, 3, 5)] for name, sop in sops.items()}
    report = run_lifecycle(arc, ALL_TO_COLD)
    assert (report.moved, report.failures) == (2, [])
    assert list(arc.tiers["hot"].keys()) == []
    for name, sop in sops.items():
        record = arc.record(sop)
        assert record.tier == "cold" and arc.store_of(record) is arc.tiers["cold"]
        assert b"".join(arc.iter_blob(record)) == files[name].read_bytes()
        stored = arc.stored(record)
        for i, expected in zip((0, 3, 5), before[name], strict=True):
            np.testing.assert_array_equal(stored.frame(i), expected)
        with arc.open_instance(record) as inst, dcmstream.open(files[name]) as original:
            np.testing.assert_array_equal(inst.frame(1), original.frame(1))
    assert [r.sop_uid for r in arc.iter_records()] == sorted(sops.values(), key=lambda s: arc.record(s).blob_key)


def test_a_row_naming_an_unknown_tier_is_an_error(tiered) -> None:
    arc, sops = tiered
    run_lifecycle(arc, ALL_TO_COLD)
    with Archive(arc.root, cache=False) as only_hot:
        record = only_hot.record(sops["jls"])
        with pytest.raises(UnknownTierError):
            only_hot.store_of(record)


def test_tier_status_and_cost(tiered, files) -> None:
    arc, sops = tiered
    sizes = {name: path.stat().st_size for name, path in files.items()}
    status = tier_status(arc)
    assert [(s.name, s.instances, s.bytes) for s in status] == [("hot", 2, sum(sizes.values())), ("cold", 0, 0)]
    assert status[0].est_monthly_cost == pytest.approx(sum(sizes.values()) / 1e9 * 0.023)
    run_lifecycle(arc, [LifecycleRule("hot", "cold", after_days_since_ingest=0)], limit=1)
    status = {s.name: s for s in tier_status(arc, {"cold": 0.001})}
    assert status["hot"].instances == 1 and status["cold"].instances == 1
    assert status["hot"].bytes + status["cold"].bytes == sum(sizes.values())
    assert status["hot"].est_monthly_cost is None  # no price given for it
    assert status["cold"].est_monthly_cost == pytest.approx(status["cold"].bytes / 1e9 * 0.001)


def test_web_reads_and_metrics_from_a_cold_tier(tiered, files) -> None:
    arc, sops = tiered
    run_lifecycle(arc, [LifecycleRule("hot", "cold", after_days_since_ingest=0)], limit=1)
    cold = next(s for s in sops.values() if arc.record(s).tier == "cold")
    record = arc.record(cold)
    name = next(n for n, s in sops.items() if s == cold)
    url = f"/dicomweb/studies/{record.study_uid}/series/{record.series_uid}/instances/{cold}"
    with TestClient(create_app(arc)) as client:
        whole = client.get(url, headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
        assert whole.status_code == 200 and files[name].read_bytes() in whole.content
        frame = client.get(f"{url}/frames/2", headers={"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'})
        assert frame.status_code == 200
        with dcmstream.open(files[name]) as original:
            assert original.encoded_frame(1) in frame.content
        text = client.get("/metrics").text
    sizes = {n: p.stat().st_size for n, p in files.items()}
    assert 'dcmstream_tier_instances{tier="cold"} 1.0' in text
    assert 'dcmstream_tier_instances{tier="hot"} 1.0' in text
    assert f'dcmstream_tier_bytes{{tier="cold"}} {float(sizes[name])}' in text
    assert 'dcmstream_tier_monthly_cost_estimate{tier="hot"}' in text


def test_tier_totals_are_cached_for_scrapes(tiered) -> None:
    arc, _ = tiered
    calls = []
    original = arc.catalog.tier_totals

    def counted():
        calls.append(time.monotonic())
        return original()

    arc.catalog.tier_totals = counted  # type: ignore[method-assign]
    for _ in range(5):
        tier_status(arc, max_age=60)
    assert len(calls) == 1
    tier_status(arc)  # max_age 0: fresh
    assert len(calls) == 2
