"""Catalog conformance: every backend subclasses CatalogTests (the zarr StoreTests pattern)."""

from __future__ import annotations

import threading

import pytest
from pydicom.dataset import Dataset

from dcmstream.archive.attributes import column_values
from dcmstream.archive.catalog import Catalog, CatalogConflictError, InstanceRecord, Query, QueryError, SQLiteCatalog
from dcmstream.dicomjson import dataset_to_json, dumps

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

    def test_limit_and_offset(self, filled: Catalog) -> None:
        assert uids(filled.search(Query("study", limit=2)).hits, "0020000D") == [ST1, ST2]
        assert uids(filled.search(Query("study", limit=2, offset=2)).hits, "0020000D") == [ST3]
        assert filled.search(Query("study", offset=10)).hits == []

    def test_unsupported_keys_are_reported(self, filled: Catalog) -> None:
        result = filled.search(Query("study", matches=[("PatientWeight", "70")]))
        assert len(result.hits) == 3 and result.unsupported == ["PatientWeight"]

    def test_scoped_search_of_unknown_study_is_empty(self, filled: Catalog) -> None:
        assert filled.search(Query("series", study_uid="1.9.9")).hits == []


class TestSQLiteCatalog(CatalogTests):
    @pytest.fixture
    def catalog(self, tmp_path) -> Catalog:
        catalog = SQLiteCatalog(tmp_path / "catalog.sqlite")
        yield catalog
        catalog.close()

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
