"""The reference Python client, dicomweb-client 0.61, against the running server."""

from __future__ import annotations

import pydicom
import pytest

import dcmstream

from .conftest import Server

dicomweb_client = pytest.importorskip("dicomweb_client")
from dicomweb_client.api import DICOMwebClient  # noqa: E402


@pytest.fixture(scope="module")
def client(server: Server) -> DICOMwebClient:
    return DICOMwebClient(url=server.root)


def test_search(server: Server, client: DICOMwebClient) -> None:
    st, se, sop = server.sops["jls"]
    studies = client.search_for_studies(search_filters={"StudyInstanceUID": st})
    assert [s["0020000D"]["Value"][0] for s in studies] == [st]
    assert len(client.search_for_studies(limit=2)) == 2
    assert len(client.search_for_studies(fields=["PatientAge"], get_remaining=True)) >= len(server.sops) - 2
    series = client.search_for_series(study_instance_uid=st)
    assert {s["0020000E"]["Value"][0] for s in series} == {se, server.sops["native"][1]}
    assert client.search_for_series(search_filters={"Modality": "CT", "SeriesInstanceUID": se})[0]["0020000E"]["Value"] == [se]
    instances = client.search_for_instances(study_instance_uid=st, series_instance_uid=se)
    assert [i["00080018"]["Value"][0] for i in instances] == [sop]
    assert client.search_for_instances(search_filters={"SOPInstanceUID": sop})[0]["00280008"]["Value"] == [50]
    assert client.search_for_studies(search_filters={"PatientID": "nobody"}) == []


def test_metadata(server: Server, client: DICOMwebClient) -> None:
    st, se, sop = server.sops["jls"]
    study = client.retrieve_study_metadata(st)
    assert len(study) == 2
    (series,) = client.retrieve_series_metadata(st, se)
    ds = pydicom.Dataset.from_json(series, bulk_data_uri_handler=lambda tag, vr, uri: None)
    assert ds.SOPInstanceUID == sop and ds.NumberOfFrames == 50
    assert series["7FE00010"]["BulkDataURI"].startswith(server.root)
    inst = client.retrieve_instance_metadata(st, se, sop)  # the client unwraps the one-item array
    assert inst["00080018"]["Value"] == [sop]


@pytest.mark.parametrize("name", ["jls", "native", "rgb", "htj2k"])
def test_retrieve_instance_frames_default_syntax(server: Server, client: DICOMwebClient, name: str) -> None:
    st, se, sop = server.sops[name]
    frames = client.retrieve_instance_frames(st, se, sop, frame_numbers=[1, 4])
    with dcmstream.open(server.files[name], cache=False) as inst:
        spec = inst.pixel_spec
        for data, number in zip(frames, (1, 4), strict=True):
            import numpy as np

            arr = np.frombuffer(data, dtype=spec.dtype.newbyteorder("<")).reshape(spec.shape)
            np.testing.assert_array_equal(arr, inst.frame(number - 1))


def test_retrieve_instance_frames_as_stored(server: Server, client: DICOMwebClient) -> None:
    st, se, sop = server.sops["jls"]
    (frame,) = client.retrieve_instance_frames(st, se, sop, frame_numbers=[9], media_types=(("image/jls", "1.2.840.10008.1.2.4.80"),))
    with dcmstream.open(server.files["jls"], cache=False) as inst:
        assert frame == inst.encoded_frame(8)
    (octets,) = client.retrieve_instance_frames(st, se, sop, frame_numbers=[2], media_types=(("application/octet-stream", "1.2.840.10008.1.2.1"),))
    assert len(octets) == 128 * 128 * 2


def test_retrieve_instance_and_series(server: Server, client: DICOMwebClient) -> None:
    st, se, sop = server.sops["jls"]
    stored = client.retrieve_instance(st, se, sop)  # the client asks transfer-syntax=* by default
    assert stored.SOPInstanceUID == sop and stored.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.80"
    ds = client.retrieve_instance(st, se, sop, media_types=(("application/dicom", "1.2.840.10008.1.2.1"),))
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    with dcmstream.open(server.files["jls"], cache=False) as inst:
        import numpy as np

        np.testing.assert_array_equal(ds.pixel_array[20], inst.frame(20))
    series = list(client.retrieve_series(*server.sops["CT_small.dcm"][:2]))
    assert [d.SOPInstanceUID for d in series][:1] == [server.sops["CT_small.dcm"][2]]


def test_retrieve_bulkdata_and_rendered(server: Server, client: DICOMwebClient) -> None:
    st, se, sop = server.sops["native"]
    meta = client.retrieve_instance_metadata(st, se, sop)
    uri = meta["7FE00010"]["BulkDataURI"]
    (data,) = client.retrieve_bulkdata(uri)
    assert len(data) == 50 * 128 * 128 * 2
    (part,) = client.retrieve_bulkdata(uri, byte_range=(0, 99))
    assert part == data[:100]
    jpeg = client.retrieve_instance_rendered(st, se, sop, params={"quality": 80})
    assert jpeg[:2] == b"\xff\xd8"
    png = client.retrieve_instance_frames_rendered(st, se, sop, frame_numbers=[3], media_types=("image/png",))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_store_instances(server: Server, client: DICOMwebClient) -> None:
    ds = pydicom.dcmread(server.files["CT_small.dcm"])
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    result = client.store_instances([ds])
    refs = result.ReferencedSOPSequence
    assert [r.ReferencedSOPInstanceUID for r in refs] == [ds.SOPInstanceUID]
    assert "FailedSOPSequence" not in result
    found = client.search_for_instances(search_filters={"SOPInstanceUID": ds.SOPInstanceUID})
    assert len(found) == 1
    back = client.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert back.PatientName == ds.PatientName
