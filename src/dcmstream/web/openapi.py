"""``GET /openapi.json``: an OpenAPI 3.1 description of the server, built from its route table.

Why from the route table: the document lists exactly the routes the app serves (at the
DICOMweb root it was created with), and a route added without a description here is
missing from it, which ``tests/reliability/test_openapi.py`` catches. Each operation's
description is looked up by (method, path template) in :data:`OPERATIONS` (the DICOMweb
root written as ``@``); the admin ``DELETE`` operations have their own table,
:data:`ADMIN_OPERATIONS`, used only for the routes the app really has, so the
document describes them when (and only when) the server offers them.

``HEAD`` is not listed: Starlette answers it for every ``GET`` route (same headers, no
body). The static files under ``/viewer/`` and ``/ohif/`` (mounts) are not described.
What the document says about parameters is what the handlers check: UIDs are digits
and dots (at most 64 characters), frame lists are 1-based numbers, QIDO keys are the
catalog's columns (:data:`dcmstream.archive.attributes.COLUMNS`), frame media types
come from the one transfer-syntax table (:mod:`dcmstream.codecs.syntaxes`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..archive.attributes import COLUMNS
from ..archive.uids import UID_PATTERN
from ..codecs.syntaxes import SYNTAXES
from ..config import AuthConfig
from .auth import required_role

__all__ = ["OPERATIONS", "ADMIN_OPERATIONS", "openapi_document", "openapi", "operation_key"]

_DICOM_JSON = "application/dicom+json"
_JSON = "application/json"
_MULTIPART = "multipart/related"
_OCTET = "application/octet-stream"
Schema = dict[str, Any]
Operation = dict[str, Any]

#: Why each error status is answered (the body is always {"status": N, "error": "why"}).
_ERRORS: dict[int, str] = {
    400: "Malformed request: a UID, frame list, tag, query key or value, or multipart body the server refuses.",
    401: "No valid credentials (only when the server is configured with [auth]).",
    403: "Valid credentials without the role this operation needs (only with [auth]).",
    404: "No such study, series, instance, frame or element.",
    405: "Method not allowed on this path (the Allow header lists the allowed ones).",
    406: "None of the media types of the Accept header can be produced for this resource.",
    409: "Nothing was stored (every instance failed: see FailedSOPSequence).",
    410: "The catalog lists the instance but its stored bytes are gone: re-import it.",
    413: "The request body exceeds the server's upload limit.",
    414: "The request target is longer than the server accepts.",
    415: "The request body's media type is not multipart/related with application/dicom parts.",
    416: "The Range header lies outside the element's bytes.",
    422: "The stored instance cannot be made into this resource (e.g. a malformed palette).",
    431: "The request headers are larger than the server accepts.",
    503: "Temporarily unavailable (the instance is being rewritten by another process, or resources "
         "ran out): retry after the Retry-After header's seconds.",
    507: "Insufficient storage: the archive's disk is full.",
}
#: Answered by every operation (the request limits run before any handler; auth when configured).
_ALWAYS = (401, 403, 414, 431)


def _uid_param(name: str, what: str) -> Schema:
    return {
        "name": name, "in": "path", "required": True, "description": f"{what} (digits and dots, at most 64 characters)",
        "schema": {"type": "string", "pattern": UID_PATTERN.pattern, "maxLength": 64},
    }


_PARAMS: dict[str, Schema] = {
    "study": _uid_param("study", "StudyInstanceUID"),
    "series": _uid_param("series", "SeriesInstanceUID"),
    "instance": _uid_param("instance", "SOPInstanceUID"),
    "frames": {
        "name": "frames", "in": "path", "required": True, "description": "1-based frame numbers, comma separated",
        "schema": {"type": "string", "pattern": r"^[0-9]{1,9}(,[0-9]{1,9})*$"},
    },
    "tag": {
        "name": "tag", "in": "path", "required": True, "description": "the bulk data element's tag, 8 hex digits",
        "schema": {"type": "string", "pattern": r"^[0-9A-Fa-f]{8}$"},
    },
}

_DATASET: Schema = {
    "type": "object",
    "description": "A DICOM JSON dataset (PS3.18 F.2): tags as keys",
    "propertyNames": {"pattern": "^[0-9A-Fa-f]{8}$"},
    "additionalProperties": {"type": "object", "required": ["vr"], "properties": {"vr": {"type": "string"}}},
}
_ERROR_BODY: Schema = {
    "type": "object",
    "required": ["status", "error"],
    "properties": {"status": {"type": "integer"}, "error": {"type": "string"}},
}


def _frame_media_types() -> list[str]:
    """Media types a frame or pixel bulk data part can have: octet-stream (decoded or as
    stored natively) and every encapsulated syntax's (``transfer-syntax=*`` sends them as stored)."""
    return sorted({_OCTET} | {s.media_type for s in SYNTAXES})


def _content(*media: str, schema: Schema | None = None) -> dict[str, Any]:
    body = schema if schema is not None else {"type": "string", "format": "binary"}
    return {m: {"schema": body} for m in media}


def _op(summary: str, tag: str, ok: dict[str, Any], errors: tuple[int, ...], *, params: tuple[str, ...] = (),
        query: list[Schema] | None = None, description: str | None = None, body: Schema | None = None) -> Operation:
    responses: dict[str, Any] = dict(ok)
    for code in sorted(set(errors) | set(_ALWAYS)):
        responses[str(code)] = {"$ref": f"#/components/responses/E{code}"}
    op: Operation = {"summary": summary, "tags": [tag], "responses": responses}
    if description:
        op["description"] = description
    parameters = [_PARAMS[p] for p in params] + list(query or [])
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = body
    return op


def _ok(description: str, content: dict[str, Any] | None = None, code: int = 200) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if content:
        out["content"] = content
    return {str(code): out}


# -- QIDO-RS -----------------------------------------------------------------------------------
def _qido_query() -> list[Schema]:
    matching = [
        {"name": c.keyword, "in": "query", "required": False,
         "description": f"match {c.keyword} ({c.vr}; PS3.18 matching: wildcards * and ?, date/time ranges a-b, "
                        "UID lists, empty for universal matching)",
         "schema": {"type": "string", "maxLength": 1024}}
        for c in COLUMNS
    ]
    matching.append({"name": "ModalitiesInStudy", "in": "query", "required": False,
                     "description": "match the modalities of a study's series", "schema": {"type": "string", "maxLength": 1024}})
    return [
        {"name": "limit", "in": "query", "required": False, "description": "at most this many results",
         "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}},
        {"name": "offset", "in": "query", "required": False, "description": "skip this many results",
         "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}},
        {"name": "fuzzymatching", "in": "query", "required": False, "schema": {"type": "string", "enum": ["true", "false"]}},
        {"name": "includefield", "in": "query", "required": False, "style": "form", "explode": True,
         "description": "extra attributes to return (keywords or tags, comma separated), or 'all'",
         "schema": {"type": "array", "items": {"type": "string"}}},
        *matching,
    ]


def _qido(level: str, params: tuple[str, ...]) -> Operation:
    scope = " of " + " ".join(p for p in params) if params else ""
    refs = [{"$ref": f"#/components/parameters/{p['name']}"} for p in _qido_query()]
    return _op(
        f"QIDO-RS: search for {level}{scope}", "QIDO-RS",
        _ok("the matches (a Warning header names ignored keys and cut results)",
            _content(_DICOM_JSON, _JSON, schema={"type": "array", "items": _DATASET})),
        (400, 404, 406), params=params, query=refs,
        description="Query keys are keywords or 8-digit tags; keys the catalog cannot match are ignored and named "
                    "in a 'Warning: 299' header.",
    )


# -- WADO-RS -----------------------------------------------------------------------------------
def _retrieve(what: str, params: tuple[str, ...]) -> Operation:
    return _op(f"WADO-RS: retrieve the {what}", "WADO-RS",
               _ok("the instances, one application/dicom part each", _content(_MULTIPART)),
               (400, 404, 406, 410, 503), params=params)


def _metadata(what: str, params: tuple[str, ...]) -> Operation:
    return _op(f"WADO-RS: metadata of the {what}", "WADO-RS",
               _ok("DICOM JSON of each instance, BulkDataURIs absolute",
                   _content(_DICOM_JSON, _JSON, schema={"type": "array", "items": _DATASET})),
               (400, 404, 406, 410, 503), params=params)


_INSTANCE = ("study", "series", "instance")


def _frames() -> Operation:
    return _op("WADO-RS: frames", "WADO-RS",
               _ok("one part per frame (a single frame may come as its bare media type)",
                   _content(_MULTIPART, *_frame_media_types())),
               (400, 404, 406, 410, 503), params=(*_INSTANCE, "frames"))


def _bulkdata() -> Operation:
    ok = _ok("the element's bytes (pixel data: per the frame negotiation)", _content(_MULTIPART, _OCTET))
    ok.update(_ok("the requested byte range", _content(_MULTIPART, _OCTET), 206))
    return _op("WADO-RS: bulk data element", "WADO-RS", ok, (400, 404, 406, 410, 416, 503),
               params=(*_INSTANCE, "tag"))


_RENDER_QUERY: list[Schema] = [
    {"name": "window", "in": "query", "required": False,
     "description": "center,width[,function] (function: linear, linear-exact or sigmoid)", "schema": {"type": "string"}},
    {"name": "viewport", "in": "query", "required": False,
     "description": "vw,vh or vw,vh,sx,sy,sw,sh (source region)", "schema": {"type": "string"}},
    {"name": "quality", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
]


def _rendered(what: str, params: tuple[str, ...], thumbnail: bool = False) -> Operation:
    verb = "thumbnail" if thumbnail else "rendered"
    return _op(f"WADO-RS: {verb} {what}", "WADO-RS",
               _ok("the image", _content("image/jpeg", "image/png")),
               (400, 404, 406, 410, 422, 503), params=params, query=_RENDER_QUERY)


# -- STOW-RS -----------------------------------------------------------------------------------
def _stow(params: tuple[str, ...]) -> Operation:
    result = _content(_DICOM_JSON, schema=_DATASET)
    ok = _ok("every instance stored (ReferencedSOPSequence)", result)
    ok.update(_ok("some instances stored, some failed (FailedSOPSequence, Warning headers)", result, 202))
    ok["409"] = {"description": "nothing stored: every instance failed (FailedSOPSequence)",
                 "content": {**result, **_content(_JSON, schema=_ERROR_BODY)}}
    ok["503"] = {"description": _ERRORS[503], "content": {**result, **_content(_JSON, schema=_ERROR_BODY)}}
    ok["507"] = {"description": _ERRORS[507], "content": {**result, **_content(_JSON, schema=_ERROR_BODY)}}
    body = {"required": True, "description": 'multipart/related; type="application/dicom"; boundary=...',
            "content": _content(_MULTIPART)}
    return _op("STOW-RS: store instances" + (" in the study" if params else ""), "STOW-RS", ok,
               (400, 413, 415), params=params, body=body)


# -- delete (admin) ----------------------------------------------------------------------------
def _delete(what: str, params: tuple[str, ...]) -> Operation:
    ok = _ok(f"the {what} is deleted (catalog rows and blobs)", _content(_JSON, _DICOM_JSON, schema={"type": "object"}))
    ok.update(_ok(f"the {what} is deleted", None, 204))
    return _op(f"delete the {what} (admin)", "admin", ok, (400, 404, 409, 503), params=params)


# -- service ----------------------------------------------------------------------------------
def _service(summary: str, media: str, schema: Schema | None = None, errors: tuple[int, ...] = ()) -> Operation:
    return _op(summary, "service", _ok(summary, _content(media, schema=schema)), errors)


_SERVICE_INFO: Schema = {"type": "object", "required": ["service"], "properties": {"service": {"type": "string"}}}

#: Operation descriptions by (method, path template); ``@`` is the DICOMweb root.
OPERATIONS: dict[tuple[str, str], Callable[[], Operation]] = {
    ("GET", "@/studies"): lambda: _qido("studies", ()),
    ("GET", "@/series"): lambda: _qido("series", ()),
    ("GET", "@/instances"): lambda: _qido("instances", ()),
    ("GET", "@/studies/{study}/series"): lambda: _qido("series", ("study",)),
    ("GET", "@/studies/{study}/instances"): lambda: _qido("instances", ("study",)),
    ("GET", "@/studies/{study}/series/{series}/instances"): lambda: _qido("instances", ("study", "series")),
    ("POST", "@/studies"): lambda: _stow(()),
    ("POST", "@/studies/{study}"): lambda: _stow(("study",)),
    ("GET", "@/studies/{study}"): lambda: _retrieve("study", ("study",)),
    ("GET", "@/studies/{study}/series/{series}"): lambda: _retrieve("series", ("study", "series")),
    ("GET", "@/studies/{study}/series/{series}/instances/{instance}"): lambda: _retrieve("instance", _INSTANCE),
    ("GET", "@/studies/{study}/metadata"): lambda: _metadata("study", ("study",)),
    ("GET", "@/studies/{study}/series/{series}/metadata"): lambda: _metadata("series", ("study", "series")),
    ("GET", "@/studies/{study}/series/{series}/instances/{instance}/metadata"): lambda: _metadata("instance", _INSTANCE),
    ("GET", "@/studies/{study}/series/{series}/instances/{instance}/frames/{frames}"): _frames,
    ("GET", "@/studies/{study}/series/{series}/instances/{instance}/bulkdata/{tag}"): _bulkdata,
    ("GET", "@/studies/{study}/series/{series}/instances/{instance}/rendered"): lambda: _rendered("instance", _INSTANCE),
    ("GET", "@/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered"):
        lambda: _rendered("frame", (*_INSTANCE, "frames")),
    ("GET", "@/studies/{study}/series/{series}/instances/{instance}/thumbnail"):
        lambda: _rendered("instance", _INSTANCE, True),
    ("GET", "@/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/thumbnail"):
        lambda: _rendered("frame", (*_INSTANCE, "frames"), True),
    ("GET", "@/studies/{study}/thumbnail"): lambda: _rendered("study", ("study",), True),
    ("GET", "@/studies/{study}/series/{series}/thumbnail"): lambda: _rendered("series", ("study", "series"), True),
    ("GET", "@"): lambda: _service("service information and archive counts", _JSON, _SERVICE_INFO),
    ("GET", "/"): lambda: _service("service information and archive counts", _JSON, _SERVICE_INFO),
    ("GET", "/metrics"): lambda: _service("Prometheus metrics (text exposition format)", "text/plain"),
    ("GET", "/healthz"): lambda: _service("liveness", _JSON, {"type": "object", "required": ["status"]}),
    ("GET", "/openapi.json"): lambda: _service("this OpenAPI description", _JSON, {"type": "object"}),
    ("GET", "/viewer"): lambda: _service("the browser viewer", "text/html", errors=(404,)),
    ("GET", "/viewer/"): lambda: _service("the browser viewer", "text/html", errors=(404,)),
    ("GET", "/viewer/index.html"): lambda: _service("the browser viewer", "text/html", errors=(404,)),
    ("GET", "/ohif"): lambda: _op("OHIF (redirect to /ohif/)", "service", {"307": {"description": "to /ohif/"}}, ()),
    ("GET", "/ohif/app-config.js"): lambda: _service(
        "OHIF's configuration: the installed app-config.js, plus its oidc block when [auth] mode is oidc",
        "text/javascript", errors=(404,),
    ),
}

#: The admin operations (issue 14: delete of a study, series or instance), described only
#: for the routes the app has: the lead enables them by adding the routes.
ADMIN_OPERATIONS: dict[tuple[str, str], Callable[[], Operation]] = {
    ("DELETE", "@/studies/{study}"): lambda: _delete("study", ("study",)),
    ("DELETE", "@/studies/{study}/series/{series}"): lambda: _delete("series", ("study", "series")),
    ("DELETE", "@/studies/{study}/series/{series}/instances/{instance}"): lambda: _delete("instance", _INSTANCE),
}

_CONVERTOR = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(:[A-Za-z_]+)?\}")


def operation_key(method: str, path: str, root: str) -> tuple[str, str]:
    """The (method, template) key of a route: the DICOMweb root written as ``@``,
    Starlette convertors (``{x:path}``) dropped."""
    path = _CONVERTOR.sub(r"{\1}", path)
    if root and (path == root or path.startswith(root + "/")):
        path = "@" + path[len(root):]
    return method.upper(), path


def route_operations(routes: list[Any], root: str) -> list[tuple[str, str]]:
    """(method, path) of every route of ``routes`` (HEAD left out: implied by GET)."""
    out = []
    for route in routes:
        if isinstance(route, Route):
            for method in sorted(route.methods or ()):
                if method != "HEAD":
                    out.append((method, _CONVERTOR.sub(r"{\1}", route.path)))
    return out


def _security(auth: AuthConfig | None) -> tuple[dict[str, Any], list[dict[str, list[str]]]]:
    """The security schemes of an ``[auth]`` table and the alternatives every protected
    operation accepts (none when the server has no authentication)."""
    if auth is None or not auth.enabled:
        return {}, []
    schemes: dict[str, Any] = {}
    if auth.mode == "oidc":
        schemes["bearer"] = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                             "description": f"an access token of {auth.issuer} (role claim {auth.roles_claim!r})"}
        if auth.issuer:
            schemes["oidc"] = {"type": "openIdConnect",
                               "openIdConnectUrl": auth.issuer.rstrip("/") + "/.well-known/openid-configuration"}
    if auth.api_keys or auth.mode == "api-keys":
        schemes["apiKey"] = {"type": "apiKey", "in": "header", "name": "X-API-Key",
                             "description": "a machine client's key (also accepted as Authorization: Bearer KEY)"}
    return schemes, [{name: []} for name in schemes]


def openapi_document(routes: list[Any], root: str, *, version: str = "", auth: AuthConfig | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes`` (an app's route table) served at ``root``.

    Routes without a description in :data:`OPERATIONS` / :data:`ADMIN_OPERATIONS` are
    left out (the test of the document fails on them). With ``auth`` enabled the document
    names its security schemes, and the operations :func:`~.auth.required_role` leaves open
    (``/healthz``, the viewers' pages) say so with an empty ``security``."""
    schemes, alternatives = _security(auth)
    paths: dict[str, dict[str, Any]] = {}
    ids: set[str] = set()
    for method, path in route_operations(routes, root):
        key = operation_key(method, path, root)
        build = OPERATIONS.get(key) or ADMIN_OPERATIONS.get(key)
        if build is None:
            continue
        op = build()
        op_id = base = f"{method.lower()}_{re.sub(r'[^A-Za-z0-9]+', '_', path).strip('_') or 'root'}"
        n = 1
        while op_id in ids:  # /viewer and /viewer/
            n += 1
            op_id = f"{base}_{n}"
        ids.add(op_id)
        op["operationId"] = op_id
        if alternatives:
            role = required_role(method, path, root)
            op["security"] = alternatives if role is not None else []
            if role is not None:
                op["description"] = (op.get("description", "") + f" Needs the {role} role.").strip()
        paths.setdefault(path, {})[method.lower()] = op
    responses = {
        f"E{code}": {"description": text, "content": _content(_JSON, schema={"$ref": "#/components/schemas/Error"})}
        for code, text in _ERRORS.items()
    }
    components: dict[str, Any] = {
        "schemas": {"Error": _ERROR_BODY, "Dataset": _DATASET},
        "responses": responses,
        "parameters": {p["name"]: p for p in _qido_query()},  # the QIDO-RS query keys
    }
    if schemes:
        components["securitySchemes"] = schemes
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "dcmstream DICOMweb",
            "version": version or "0",
            "description": "QIDO-RS, WADO-RS and STOW-RS (PS3.18) under the DICOMweb root, plus metrics and health. "
                           "Error bodies are JSON: {\"status\": N, \"error\": \"why\"}.",
        },
        "paths": dict(sorted(paths.items())),
        "components": components,
    }


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dcmstream")
    except PackageNotFoundError:  # a source checkout that is not installed
        return "0"


async def openapi(request: Request) -> Response:
    """``GET /openapi.json`` (built once per app, from its routes)."""
    state = request.app.state
    document = getattr(state, "openapi_document", None)
    if document is None:
        document = openapi_document(request.app.routes, state.dicomweb_root, version=_version(),
                                    auth=getattr(state, "auth", None))
        state.openapi_document = document
    return JSONResponse(document)
