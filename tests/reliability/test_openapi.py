"""``GET /openapi.json``: a valid OpenAPI document that describes every route the app has.

The document is built from the app's route table, so a route added without a description
in :mod:`dcmstream.web.openapi` is missing from it and fails here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from openapi_spec_validator import validate
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from dcmstream.archive import Archive
from dcmstream.web import create_app
from dcmstream.web.openapi import ADMIN_OPERATIONS, openapi_document, route_operations


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    archive = Archive(tmp_path_factory.mktemp("openapi-archive"), cache=False)
    yield create_app(archive)
    archive.close()


def _document(app) -> dict:
    with TestClient(app) as client:
        response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def test_document_is_valid_openapi(app) -> None:
    document = _document(app)
    validate(document)
    assert document["openapi"].startswith("3.")


def test_every_route_is_described(app) -> None:
    document = _document(app)
    operations = route_operations(app.routes, app.state.dicomweb_root)
    assert len(operations) > 25
    missing = [(m, p) for m, p in operations if m.lower() not in document["paths"].get(p, {})]
    assert not missing, f"routes without an OpenAPI description (add them to dcmstream.web.openapi): {missing}"
    described = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    assert described == set(operations), "the document describes routes the app does not have"


def test_path_parameters_and_statuses(app) -> None:
    paths = _document(app)["paths"]
    frames = paths["/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}"]["get"]
    names = {p["name"]: p for p in frames["parameters"]}
    assert set(names) == {"study", "series", "instance", "frames"}
    assert names["study"]["schema"]["pattern"] == r"^[0-9]+(\.[0-9]+)*$" and names["study"]["schema"]["maxLength"] == 64
    assert {"200", "400", "404", "406", "410", "503"} <= set(frames["responses"])
    assert "image/jls" in frames["responses"]["200"]["content"]
    stow = paths["/dicomweb/studies"]["post"]
    assert {"200", "202", "400", "409", "413", "415", "503", "507"} <= set(stow["responses"])
    qido = {p["$ref"].rsplit("/", 1)[-1] for p in paths["/dicomweb/studies"]["get"]["parameters"]}
    assert {"limit", "offset", "fuzzymatching", "includefield", "PatientName", "ModalitiesInStudy"} <= qido
    assert "206" in paths["/dicomweb/studies/{study}/series/{series}/instances/{instance}/bulkdata/{tag}"]["get"]["responses"]
    assert "422" in paths["/dicomweb/studies/{study}/series/{series}/instances/{instance}/rendered"]["get"]["responses"]


async def _deleted(request) -> Response:
    return Response(status_code=204)


def test_admin_delete_routes_are_described(app) -> None:
    """The app's DELETE routes (study, series, instance) get the admin descriptions, and a
    route without a description is left out (so test_every_route_is_described fails on it)."""
    root = app.state.dicomweb_root
    deletes = {(m, p) for m, p in route_operations(app.routes, root) if m == "DELETE"}
    assert deletes == {(m, p.replace("@", root)) for m, p in ADMIN_OPERATIONS}
    document = _document(app)
    validate(document)
    for method, path in ADMIN_OPERATIONS:
        assert method.lower() in document["paths"][path.replace("@", root)]
    undescribed = openapi_document(list(app.routes) + [Route(f"{root}/studies/{{study}}/lock", _deleted, methods=["PUT"])], root)
    assert f"{root}/studies/{{study}}/lock" not in undescribed["paths"]


def test_another_root(tmp_path: Path) -> None:
    archive = Archive(tmp_path, cache=False)
    try:
        document = _document(create_app(archive, root="/pacs/web"))
        assert "/pacs/web/studies" in document["paths"] and "/dicomweb/studies" not in document["paths"]
        validate(document)
    finally:
        archive.close()


def test_security_schemes_follow_the_auth_config(tmp_path: Path) -> None:
    """With [auth] the document names how to authenticate, which operations need it and
    which role; without it, no security at all."""
    from dcmstream.config import ApiKey, AuthConfig

    auth = AuthConfig(mode="oidc", issuer="https://idp.example/realms/r", audience="dcmstream",
                      jwks_url="file:///nonexistent/jwks.json",
                      api_keys=(ApiKey(sha256="0" * 64, role="uploader", name="modality"),))
    archive = Archive(tmp_path, cache=False)
    try:
        document = _document(create_app(archive, auth=auth))
        plain = _document(create_app(archive))
    finally:
        archive.close()
    validate(document)
    schemes = document["components"]["securitySchemes"]
    assert set(schemes) == {"bearer", "oidc", "apiKey"}
    assert schemes["oidc"]["openIdConnectUrl"] == "https://idp.example/realms/r/.well-known/openid-configuration"
    assert document["paths"]["/healthz"]["get"]["security"] == []
    stow = document["paths"]["/dicomweb/studies"]["post"]
    assert {next(iter(alt)) for alt in stow["security"]} == {"bearer", "oidc", "apiKey"}
    assert "uploader role" in stow["description"]
    assert "admin role" in document["paths"]["/dicomweb/studies/{study}"]["delete"]["description"]
    assert "securitySchemes" not in plain["components"]
    assert all("security" not in op for ops in plain["paths"].values() for op in ops.values())
