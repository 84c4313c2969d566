"""/metrics through prometheus_client: a valid exposition, per-app registries, bounded labels."""

from __future__ import annotations

import random
import string

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from dcmstream.archive import Archive
from dcmstream.web import create_app
from dcmstream.web.metrics import METHODS, Metrics


def _families(text: str) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text)}


@pytest.fixture
def client(tmp_path, testfile):
    with Archive(tmp_path / "a", cache=False) as archive:
        assert archive.ingest_file(testfile("CT_small.dcm")).ok
        with TestClient(create_app(archive)) as c:
            yield c


def test_exposition_parses_and_keeps_the_documented_names(client) -> None:
    client.get("/dicomweb/studies")
    text = client.get("/metrics").text
    families = _families(text)
    for name in ("dcmstream_http_requests", "dcmstream_http_request_duration_seconds", "dcmstream_http_response_bytes",
                 "dcmstream_http_requests_in_flight", "dcmstream_archive_objects", "dcmstream_metadata_cache_bytes",
                 "dcmstream_blob_bytes_read", "process_resident_memory_bytes", "process_start_time_seconds"):
        assert name in families, name
    assert families["dcmstream_http_request_duration_seconds"].type == "histogram"
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    key = ("dcmstream_http_requests_total", (("method", "GET"), ("route", "/dicomweb/studies"), ("status", "200")))
    assert samples[key] == 1
    assert samples[("dcmstream_archive_objects", (("level", "instances"),))] == 1
    assert samples[("process_resident_memory_bytes", ())] > 0


def test_labels_stay_bounded_under_random_methods_and_paths(client) -> None:
    rng = random.Random(12)
    for _ in range(60):
        method = "".join(rng.choices(string.ascii_uppercase, k=rng.randint(3, 9)))
        path = "/" + "".join(rng.choices(string.ascii_lowercase + "/", k=rng.randint(1, 30)))
        client.request(method, path)
        client.get(path)
    families = _families(client.get("/metrics").text)
    labels = [s.labels for s in families["dcmstream_http_requests"].samples]
    methods = {lab["method"] for lab in labels}
    routes = {lab["route"] for lab in labels}
    assert methods <= METHODS | {"other"} and "other" in methods
    templates = {getattr(r, "path", None) for r in client.app.routes}
    assert "unmatched" in routes and routes <= templates | {"unmatched"}
    assert len(labels) <= 20  # 120 random requests, a handful of series


def test_each_app_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()
    a.observe("/x", "GET", 200, 0.01, 10)
    assert 'route="/x"' in a.render() and 'route="/x"' not in b.render()
    text = a.render(extra={"dcmstream_policy_compressed_total": 3, "dcmstream_policy_queue": 1})
    assert "dcmstream_policy_compressed_total 3.0" in text and "dcmstream_policy_queue 1.0" in text
    assert {f.type for f in text_string_to_metric_families(text) if f.name.startswith("dcmstream_policy")} == {"counter", "gauge"}
