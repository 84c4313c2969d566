"""Catalog conformance: every backend subclasses CatalogTests (the zarr StoreTests pattern)."""

from __future__ import annotations

import multiprocessing
import shutil
import sqlite3
import threading
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from dcmstream.archive import migrations
from dcmstream.archive.attributes import column_values
from dcmstream.archive.catalog import (
    Catalog,
    CatalogConflictError,
    InstanceRecord,
    Query,
    QueryError,
    SQLCatalog,
    SQLiteCatalog,
    normalize_url,
    schema_metadata,
)
from dcmstream.dicomjson import dataset_to_json, dumps

# Made by the catalog code from before alembic (tables created by create_all, no
# alembic_version): 2 studies, 2 series, 3 instances.
BEFORE_ALEMBIC = Path(__file__).parent / "data" / "catalog-before-alembic.sqlite"

ST1, ST2, ST3 = "1.2.3.1", "1.2.3.2", "1.2.3.3"


def make_record(study: str, series: str, sop: str, **attrs: object) -> InstanceRecord:
    ds = Dataset()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, sop
    ds.SOPClassUID = attrs.pop("SOPClassUID", "1.2.840.10008.5.1.4.1.1.2")
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    return InstanceRecord(
        study_uid=study,
        series_uid=series,
        sop_uid=sop,
        sop_class_uid=str(ds.SOPClassUID),
        transfer_syntax="1.2.840.10008.1.2.1",
        blob_key=f"{study}/{series}/{sop}.dcm",
        size=100,
        columns=column_values(ds),
        dataset_json=dumps(dataset_to_json(ds)),
        frame_index={"kind": "native", "offsets": [10], "lengths": [20], "wrapped": False},
        pixel={"tag": 0x7FE00010},
    )


def uids(hits: list[dict], tag: str) -> list[str]:
    return [h[tag]["Value"][0] for h in hits]


class CatalogTests:
    """What any Catalog must do. Subclasses provide the ``catalog`` fixture."""

    @pytest.fixture
    def catalog(self, tmp_path) -> Catalog:  # pragma: no cover - overridden
        raise NotImplementedError

    @pytest.fixture
    def filled(self, catalog: Catalog) -> Catalog:
        rows = [
            (ST1, "1.2.3.1.1", "1.2.3.1.1.1", dict(PatientName="Doe^John", PatientID="P1", StudyDate="20200115", StudyTime="101500",
                                                  Modality="CT", SeriesNumber=1, InstanceNumber=2, AccessionNumber="A1", StudyDescription="Chest")),
            (ST1, "1.2.3.1.1", "1.2.3.1.1.2", dict(PatientName="Doe^John", PatientID="P1", StudyDate="20200115", Modality="CT",
                                                  SeriesNumber=1, InstanceNumber=1, NumberOfFrames=50)),
            (ST1, "1.2.3.1.2", "1.2.3.1.2.1", dict(PatientName="Doe^John", PatientID="P1", StudyDate="20200115", Modality="SR",
                                                  SeriesNumber=2, SOPClassUID="1.2.840.10008.5.1.4.1.1.88.11")),
            (ST2, "1.2.3.2.1", "1.2.3.2.1.1", dict(PatientName="Roe^Jane", PatientID="P2", StudyDate="20211231", StudyTime="235959",
                                                  Modality="MR", SeriesNumber=7, AccessionNumber="A2")),
            (ST3, "1.2.3.3.1", "1.2.3.3.1.1", dict(PatientName="O'Brien^Pat", PatientID="P_3%", StudyDate="20190601", Modality="US",
                                                  SeriesNumber=1, SeriesDescription="cine loop")),
        ]
        for study, series, sop, attrs in rows:
            assert catalog.add(make_record(study, series, sop, **attrs)) is True
        return catalog

    # -- add / get -----------------------------------------------------------------------------
    def test_add_and_get(self, catalog: Catalog) -> None:
        record = make_record(ST1, "1.2.3.1.1", "9.9", PatientName="A^B", Modality="CT", NumberOfFrames=3)
        assert catalog.add(record)
        got = catalog.get("9.9")
        assert got is not None
        assert (got.study_uid, got.series_uid, got.sop_uid, got.blob_key) == (ST1, "1.2.3.1.1", "9.9", record.blob_key)
        assert got.frame_index == record.frame_index and got.pixel == record.pixel
        assert got.dataset_json is None
        assert catalog.get("9.9", with_dataset=True).dataset_json == record.dataset_json
        assert catalog.get("9.10") is None

    def test_duplicate_sop_is_not_added(self, catalog: Catalog) -> None:
        assert catalog.add(make_record(ST1, "1.1", "5.5", PatientName="First"))
        assert catalog.add(make_record(ST1, "1.1", "5.5", PatientName="Second")) is False
        assert catalog.counts() == {"studies": 1, "series": 1, "instances": 1}
        assert "First" in catalog.get("5.5", with_dataset=True).dataset_json

    def test_series_in_two_studies_is_a_conflict(self, catalog: Catalog) -> None:
        catalog.add(make_record(ST1, "1.1", "5.5"))
        with pytest.raises(CatalogConflictError):
            catalog.add(make_record(ST2, "1.1", "5.6"))
        assert catalog.get("5.6") is None
        assert catalog.counts()["studies"] == 1

    def test_concurrent_adds_of_one_instance(self, catalog: Catalog) -> None:
        results: list[bool] = []
        threads = [threading.Thread(target=lambda: results.append(catalog.add(make_record(ST1, "1.1", "7.7")))) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == [False] * 7 + [True]

    def test_instances_metadata_version(self, filled: Catalog) -> None:
        records = filled.instances(ST1)
        assert [r.sop_uid for r in records] == ["1.2.3.1.1.2", "1.2.3.1.1.1", "1.2.3.1.2.1"]  # series, then InstanceNumber
        assert [r.sop_uid for r in filled.instances(ST1, "1.2.3.1.2")] == ["1.2.3.1.2.1"]
        texts = filled.metadata(ST1, "1.2.3.1.1")
        assert len(texts) == 2 and '"1.2.3.1.1.2"' in texts[0]
        assert len(filled.metadata(ST1, "1.2.3.1.1", "1.2.3.1.1.1")) == 1
        count, last = filled.version(ST1)
        assert count == 3
        filled.add(make_record(ST1, "1.2.3.1.1", "1.2.3.1.1.3"))
        assert filled.version(ST1)[0] == 4 and filled.version(ST1)[1] > last
        assert filled.version("1.9.9") == (0, 0)

    def test_version_changes_on_every_change_of_a_row(self, filled: Catalog) -> None:
        from dataclasses import replace

        seen = {filled.version(ST1, "1.2.3.1.1")}

        def changed() -> None:
            now = filled.version(ST1, "1.2.3.1.1")
            assert now not in seen, now
            seen.add(now)

        # a blob swap (compression policy): same count, same rows, new transfer syntax
        full = filled.get("1.2.3.1.1.1", with_dataset=True)
        swapped = replace(full, blob_key="1.2.3.1/1.2.3.1.1/cA/1.2.3.1.1.1.dcm", transfer_syntax="1.2.840.10008.1.2.4.80")
        assert filled.replace_blob(full.sop_uid, full.blob_key, swapped)
        changed()
        assert not filled.replace_blob(full.sop_uid, full.blob_key, swapped)  # no longer the old key: nothing changes
        assert filled.version(ST1, "1.2.3.1.1") in seen
        # a tier move (lifecycle)
        move_id = filled.begin_move(full.sop_uid, "hot", swapped.blob_key, "cold", "1.2.3.1/1.2.3.1.1/cB/1.2.3.1.1.1.dcm")
        assert filled.switch_move(move_id, full.sop_uid, swapped.blob_key, "cold", "1.2.3.1/1.2.3.1.1/cB/1.2.3.1.1.1.dcm")
        changed()
        # access times are no change
        filled.touch({"1.2.3.1.1.1": 1e9, "1.2.3.1.1.2": 1e9})
        assert filled.version(ST1, "1.2.3.1.1") in seen
        # the newest row removed and another added: same count, yet a new version
        before_add = filled.version(ST1, "1.2.3.1.1")
        filled.add(make_record(ST1, "1.2.3.1.1", "1.2.3.1.1.7"))
        changed()
        assert filled.remove("1.2.3.1.1.7") is not None
        assert filled.version(ST1, "1.2.3.1.1") == before_add  # the same rows as then: the same answer
        filled.add(make_record(ST1, "1.2.3.1.1", "1.2.3.1.1.8"))
        changed()
        assert filled.remove("1.2.3.1.1.2") is not None  # an older row: the count says it
        changed()
        # the study's version follows its series'
        before = filled.version(ST1)
        other = filled.get("1.2.3.1.2.1", with_dataset=True)
        assert filled.replace_blob(other.sop_uid, other.blob_key, replace(other, blob_key="x/y/cC/z.dcm"))
        assert filled.version(ST1) != before and filled.version(ST1, "1.2.3.1.1") in seen

    def test_remove(self, filled: Catalog) -> None:
        assert filled.remove("1.2.3.2.1.1") is not None
        assert filled.get("1.2.3.2.1.1") is None
        assert filled.counts() == {"studies": 2, "series": 3, "instances": 4}
        assert filled.remove("1.2.3.2.1.1") is None

    # -- search --------------------------------------------------------------------------------
    def test_all_studies_with_counts(self, filled: Catalog) -> None:
        hits = filled.search(Query("study")).hits
        assert uids(hits, "0020000D") == [ST1, ST2, ST3]
        first = hits[0]
        assert first["00201206"]["Value"] == [2]  # NumberOfStudyRelatedSeries
        assert first["00201208"]["Value"] == [3]  # NumberOfStudyRelatedInstances
        assert first["00080061"]["Value"] == ["CT", "SR"]  # ModalitiesInStudy
        assert "0020000E" not in first and "00080018" not in first

    def test_exact_and_list_matching(self, filled: Catalog) -> None:
        assert uids(filled.search(Query("study", matches=[("PatientID", "P2")])).hits, "0020000D") == [ST2]
        hits = filled.search(Query("study", matches=[("StudyInstanceUID", f"{ST1},{ST3}")])).hits
        assert uids(hits, "0020000D") == [ST1, ST3]
        hits = filled.search(Query("study", matches=[("StudyInstanceUID", f"{ST2}\\{ST3}")])).hits
        assert uids(hits, "0020000D") == [ST2, ST3]
        assert filled.search(Query("study", matches=[("PatientID", "p2")])).hits == []  # LO is case-sensitive

    def test_wildcards(self, filled: Catalog) -> None:
        assert uids(filled.search(Query("study", matches=[("PatientID", "P?")])).hits, "0020000D") == [ST1, ST2]
        assert uids(filled.search(Query("study", matches=[("AccessionNumber", "A*")])).hits, "0020000D") == [ST1, ST2]
        # SQL LIKE metacharacters in values are literal
        assert uids(filled.search(Query("study", matches=[("PatientID", "P_3%")])).hits, "0020000D") == [ST3]
        assert filled.search(Query("study", matches=[("PatientID", "P_")])).hits == []
        assert uids(filled.search(Query("series", matches=[("SeriesDescription", "*loop")])).hits, "0020000E") == ["1.2.3.3.1"]

    def test_person_name_case_insensitive_and_fuzzy(self, filled: Catalog) -> None:
        assert uids(filled.search(Query("study", matches=[("PatientName", "doe^john")])).hits, "0020000D") == [ST1]
        assert uids(filled.search(Query("study", matches=[("PatientName", "ROE*")])).hits, "0020000D") == [ST2]
        assert uids(filled.search(Query("study", matches=[("PatientName", "o'brien*")])).hits, "0020000D") == [ST3]
        assert filled.search(Query("study", matches=[("PatientName", "john")])).hits == []
        assert uids(filled.search(Query("study", matches=[("PatientName", "john")], fuzzy=True)).hits, "0020000D") == [ST1]

    def test_date_and_time_ranges(self, filled: Catalog) -> None:
        def study_date(value: str) -> list[str]:
            return uids(filled.search(Query("study", matches=[("StudyDate", value)])).hits, "0020000D")

        assert study_date("20200101-20201231") == [ST1]
        assert study_date("20200101-") == [ST1, ST2]
        assert study_date("-20200115") == [ST1, ST3]
        assert study_date("20211231") == [ST2]
        assert uids(filled.search(Query("study", matches=[("StudyTime", "1000-1100")])).hits, "0020000D") == [ST1]
        assert uids(filled.search(Query("study", matches=[("StudyTime", "2300-2359")])).hits, "0020000D") == [ST2]
        with pytest.raises(QueryError):
            filled.search(Query("study", matches=[("StudyDate", "2020-abc")]))

    def test_universal_matching(self, filled: Catalog) -> None:
        assert len(filled.search(Query("study", matches=[("PatientName", "")])).hits) == 3
        assert len(filled.search(Query("study", matches=[("PatientName", "*")])).hits) == 3

    def test_deeper_level_keys_filter_parents(self, filled: Catalog) -> None:
        assert uids(filled.search(Query("study", matches=[("ModalitiesInStudy", "MR")])).hits, "0020000D") == [ST2]
        assert uids(filled.search(Query("study", matches=[("ModalitiesInStudy", "US,MR")])).hits, "0020000D") == [ST2, ST3]
        assert uids(filled.search(Query("study", matches=[("Modality", "SR")])).hits, "0020000D") == [ST1]
        hits = filled.search(Query("series", matches=[("SOPClassUID", "1.2.840.10008.5.1.4.1.1.88.11")])).hits
        assert uids(hits, "0020000E") == ["1.2.3.1.2"]

    def test_series_and_instance_levels(self, filled: Catalog) -> None:
        hits = filled.search(Query("series", study_uid=ST1)).hits
        assert uids(hits, "0020000E") == ["1.2.3.1.1", "1.2.3.1.2"]
        assert hits[0]["00201209"]["Value"] == [2]  # NumberOfSeriesRelatedInstances
        assert hits[0]["00100010"]["Value"][0]["Alphabetic"] == "Doe^John"  # study attributes merged in
        assert uids(filled.search(Query("series", matches=[("Modality", "MR")])).hits, "0020000E") == ["1.2.3.2.1"]
        assert uids(filled.search(Query("series", matches=[("SeriesNumber", "7")])).hits, "0020000E") == ["1.2.3.2.1"]
        inst = filled.search(Query("instance", study_uid=ST1, series_uid="1.2.3.1.1")).hits
        assert uids(inst, "00080018") == ["1.2.3.1.1.2", "1.2.3.1.1.1"]
        assert inst[0]["00280008"]["Value"] == [50]
        assert uids(filled.search(Query("instance", matches=[("PatientID", "P2")])).hits, "00080018") == ["1.2.3.2.1.1"]
        with pytest.raises(QueryError):
            filled.search(Query("series", matches=[("SeriesNumber", "seven")]))
        # A UID key of separators only is no UID at all: a QueryError, not an IndexError.
        with pytest.raises(QueryError, match="SOPInstanceUID"):
            filled.search(Query("instance", matches=[("SOPInstanceUID", " , \n")]))

    def test_limit_and_offset(self, filled: Catalog) -> None:
        assert uids(filled.search(Query("study", limit=2)).hits, "0020000D") == [ST1, ST2]
        assert uids(filled.search(Query("study", limit=2, offset=2)).hits, "0020000D") == [ST3]
        assert filled.search(Query("study", offset=10)).hits == []

    def test_unsupported_keys_are_reported(self, filled: Catalog) -> None:
        result = filled.search(Query("study", matches=[("PatientWeight", "70")]))
        assert len(result.hits) == 3 and result.unsupported == ["PatientWeight"]

    def test_scoped_search_of_unknown_study_is_empty(self, filled: Catalog) -> None:
        assert filled.search(Query("series", study_uid="1.9.9")).hits == []

    # -- storage tiers: access times, per-tier totals and candidates, the move journal ------------
    def test_touch_keeps_the_latest_time(self, filled: Catalog) -> None:
        assert filled.get("1.2.3.1.1.1").last_access is None
        assert filled.touch({"1.2.3.1.1.1": 2000.0, "1.2.3.1.1.2": 2000.0, "1.2.3.2.1.1": 3000.0}) == 2
        assert filled.touch({"1.2.3.1.1.1": 1500.0, "1.2.3.2.1.1": 3500.0, "9.9.9": 3500.0}) == 2  # older, newer, unknown
        assert filled.get("1.2.3.1.1.1").last_access == 2000.0
        assert filled.get("1.2.3.1.1.2").last_access == 2000.0
        assert filled.get("1.2.3.2.1.1").last_access == 3500.0
        assert filled.get("1.2.3.3.1.1").last_access is None
        assert filled.touch({}) == 0

    def test_tier_totals_and_candidates(self, filled: Catalog) -> None:
        assert filled.tier_totals() == {None: (5, 500)}
        old = {r.sop_uid: r.ingested_at for r in (filled.get(s) for s in ("1.2.3.1.1.1", "1.2.3.2.1.1"))}
        moved = filled.get("1.2.3.2.1.1")
        move_id = filled.begin_move(moved.sop_uid, "hot", moved.blob_key, "cold", "1.2.3.2/1.2.3.2.1/cX/1.2.3.2.1.1.dcm")
        assert filled.switch_move(move_id, moved.sop_uid, moved.blob_key, "cold", "1.2.3.2/1.2.3.2.1/cX/1.2.3.2.1.1.dcm")
        filled.end_move(move_id)
        assert filled.get("1.2.3.2.1.1").tier == "cold"
        assert filled.tier_totals() == {None: (4, 400), "cold": (1, 100)}
        hot = filled.tier_candidates(None, ingested_before=max(old.values()) + 1)
        assert [r.sop_uid for r in hot] == ["1.2.3.1.1.1", "1.2.3.1.1.2", "1.2.3.1.2.1", "1.2.3.3.1.1"]
        assert [r.sop_uid for r in filled.tier_candidates(None, after_sop="1.2.3.1.1.2", limit=1)] == ["1.2.3.1.2.1"]
        assert [r.sop_uid for r in filled.tier_candidates("cold", accessed_before=1e12)] == ["1.2.3.2.1.1"]
        assert filled.tier_candidates("cold", ingested_before=0.0) == []
        filled.touch({"1.2.3.1.1.1": 5e11})  # read recently: not a candidate for "without access"
        assert "1.2.3.1.1.1" not in [r.sop_uid for r in filled.tier_candidates(None, accessed_before=1e11)]

    def test_move_switch_is_a_compare_and_swap(self, filled: Catalog) -> None:
        record = filled.get("1.2.3.1.1.1")
        first = filled.begin_move(record.sop_uid, "hot", record.blob_key, "cold", "a/b/c1/x.dcm")
        second = filled.begin_move(record.sop_uid, "hot", record.blob_key, "cold", "a/b/c2/x.dcm")
        assert [(m.id, m.state, m.target_key) for m in filled.pending_moves()] == [
            (first, "copying", "a/b/c1/x.dcm"), (second, "copying", "a/b/c2/x.dcm")]
        assert filled.abandon_move(second) and not filled.abandon_move(second)
        assert not filled.switch_move(second, record.sop_uid, record.blob_key, "cold", "a/b/c2/x.dcm")  # abandoned
        assert filled.switch_move(first, record.sop_uid, record.blob_key, "cold", "a/b/c1/x.dcm")
        assert not filled.abandon_move(first)  # switched: too late to abandon
        third = filled.begin_move(record.sop_uid, "hot", record.blob_key, "cold", "a/b/c3/x.dcm")
        assert not filled.switch_move(third, record.sop_uid, record.blob_key, "cold", "a/b/c3/x.dcm")  # row moved on
        assert [m.state for m in filled.pending_moves()] == ["switched", "abandoned", "copying"]
        got = filled.get(record.sop_uid)
        assert (got.blob_key, got.tier) == ("a/b/c1/x.dcm", "cold")
        for move in filled.pending_moves():
            filled.end_move(move.id)
        assert filled.pending_moves() == []


# -- SQL backends: schema migrations and writers in several processes ------------------------


def _writer(url: str, k: int, barrier, results) -> None:
    """One of the processes of test_concurrent_writers: open the catalog (the
    migration races too), then 50 adds, overlapping with the other processes'."""
    try:
        barrier.wait(timeout=120)
        catalog = SQLCatalog(url)
    except BaseException as exc:
        results.put((k, "open", f"{type(exc).__name__}: {exc}"))
        return
    for j in range(50):
        if j < 20:  # the same instance from every process
            record = make_record(f"2.9.{j % 4}", f"2.8.{j % 8}", f"2.1.{j}")
        elif j < 49:  # this process's own instance, in the shared studies and series
            record = make_record(f"2.9.{j % 4}", f"2.8.{j % 8}", f"2.2.{k}.{j}")
        else:  # one series claimed for a different study by every process
            record = make_record(f"2.6.{k}", "2.7.1", f"2.2.{k}.{j}")
        try:
            outcome = catalog.add(record)
        except CatalogConflictError:
            outcome = "conflict"
        except BaseException as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        results.put((k, record.sop_uid, outcome))
    catalog.close()


def run_concurrent_writers(url: str, processes: int = 4) -> dict[str, list[object]]:
    """SOP Instance UID -> the outcomes of its adds, from ``processes`` spawned writers."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    workers = [ctx.Process(target=_writer, args=(url, k, barrier, results)) for k in range(processes)]
    for w in workers:
        w.start()
    outcomes: dict[str, list[object]] = {}
    for _ in range(processes * 50):
        _k, sop, outcome = results.get(timeout=300)
        assert sop != "open", outcome
        outcomes.setdefault(sop, []).append(outcome)
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    return outcomes


class SQLCatalogChecks:
    """What an SQL catalog must do beyond CatalogTests. Subclasses provide ``url``."""

    @pytest.fixture
    def url(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def test_schema_is_at_head_and_matches_the_tables(self, url: str) -> None:
        from alembic.autogenerate import compare_metadata
        from alembic.runtime.migration import MigrationContext

        with SQLCatalog(url) as catalog, catalog.engine.connect() as conn:
            assert migrations.current(conn) == migrations.head()
            sqlite = conn.dialect.name == "sqlite"  # SQLite column types are only affinities
            context = MigrationContext.configure(conn, opts={"compare_type": not sqlite})
            assert compare_metadata(context, schema_metadata()) == []

    @pytest.mark.slow
    def test_concurrent_writers(self, url: str) -> None:
        outcomes = run_concurrent_writers(url)
        shared = {sop: got for sop, got in outcomes.items() if sop.startswith("2.1.")}
        own = {sop: got for sop, got in outcomes.items() if sop.startswith("2.2.") and not sop.endswith(".49")}
        claims = [got[0] for sop, got in outcomes.items() if sop.endswith(".49")]
        assert len(shared) == 20 and all(sorted(got, key=str) == [False, False, False, True] for got in shared.values()), shared
        assert len(own) == 4 * 29 and all(got == [True] for got in own.values()), own
        assert sorted(claims, key=str) == [True, "conflict", "conflict", "conflict"]
        with SQLCatalog(url) as catalog:
            assert catalog.counts() == {"studies": 4 + 1, "series": 8 + 1, "instances": 20 + 4 * 29 + 1}
            assert all(catalog.get(sop) is not None for sop in [*shared, *own])


class TestSQLiteCatalog(CatalogTests, SQLCatalogChecks):
    @pytest.fixture
    def catalog(self, tmp_path) -> Catalog:
        catalog = SQLiteCatalog(tmp_path / "catalog.sqlite")
        yield catalog
        catalog.close()

    @pytest.fixture
    def url(self, tmp_path) -> str:
        return f"sqlite:///{tmp_path / 'catalog.sqlite'}"

    def test_catalog_from_before_alembic_is_stamped_not_recreated(self, tmp_path) -> None:
        path = tmp_path / "old.sqlite"
        shutil.copy(BEFORE_ALEMBIC, path)
        with SQLiteCatalog(path) as catalog:
            assert catalog.counts() == {"studies": 2, "series": 2, "instances": 3}
            assert [r.sop_uid for r in catalog.instances("1.2.3.1")] == ["1.2.3.1.1.1", "1.2.3.1.1.2"]
            hits = catalog.search(Query("study", matches=[("PatientName", "old*")])).hits
            assert uids(hits, "0020000D") == ["1.2.3.2"]
            assert catalog.add(make_record("1.2.3.2", "1.2.3.2.1", "1.2.3.2.1.2", PatientName="Old^Olga"))
        con = sqlite3.connect(path)
        try:
            assert con.execute("SELECT version_num FROM alembic_version").fetchall() == [(migrations.head(),)]
        finally:
            con.close()
        with SQLiteCatalog(path) as again:  # at head: opened without migrating
            assert again.counts()["instances"] == 4

    def test_persists_across_reopen(self, tmp_path) -> None:
        path = tmp_path / "c.sqlite"
        with SQLiteCatalog(path) as first:
            first.add(make_record(ST1, "1.1", "5.5", PatientName="Persisted"))
        with SQLiteCatalog(path) as second:
            assert second.get("5.5") is not None
            assert second.counts()["instances"] == 1


class TestSQLiteInMemoryCatalog(CatalogTests):
    @pytest.fixture
    def catalog(self) -> Catalog:
        return SQLiteCatalog(":memory:")


class TestPostgresCatalog(CatalogTests, SQLCatalogChecks):
    """The same conformance on a real PostgreSQL server (tests/postgres_util.py)."""

    @pytest.fixture
    def url(self, postgres_server) -> str:
        with postgres_server.database() as url:
            yield url

    @pytest.fixture
    def catalog(self, url: str) -> Catalog:
        catalog = SQLCatalog(url)
        yield catalog
        catalog.close()

    def test_plain_url_means_psycopg_with_a_pool(self, catalog: SQLCatalog) -> None:
        from sqlalchemy.pool import QueuePool

        assert catalog.engine.dialect.name == "postgresql" and catalog.engine.dialect.driver == "psycopg"
        assert isinstance(catalog.engine.pool, QueuePool) and catalog.engine.pool._pre_ping
        assert "psycopg" in catalog.url

    def test_database_from_before_alembic_is_stamped_and_upgraded(self, url: str) -> None:
        from alembic import command
        from sqlalchemy import create_engine, text

        engine = create_engine(normalize_url(url))
        try:
            with engine.begin() as conn:  # the tables of revision 0001, without alembic_version
                command.upgrade(migrations.alembic_config(conn), migrations.BASELINE)
                conn.execute(text("DROP TABLE alembic_version"))
            with SQLCatalog(url) as catalog:
                assert catalog.add(make_record(ST1, "1.1", "5.5", PatientName="Doe^John"))
            with engine.connect() as conn:
                assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == migrations.head()
                size_type = conn.execute(text(
                    "SELECT data_type FROM information_schema.columns WHERE table_name='instances' AND column_name='size'"
                )).scalar_one()
                collation = conn.execute(text(
                    "SELECT collation_name FROM information_schema.columns WHERE table_name='studies' AND column_name='patient_id'"
                )).scalar_one()
            assert (size_type, collation) == ("bigint", "C")
        finally:
            engine.dispose()

    def test_sizes_beyond_32_bits(self, catalog: Catalog) -> None:
        record = make_record(ST1, "1.1", "5.5")
        big = InstanceRecord(**{**record.__dict__, "size": 5 * 2**30})
        assert catalog.add(big)
        assert catalog.get("5.5").size == 5 * 2**30
