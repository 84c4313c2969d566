"""QIDO-RS (PS3.18 10.6): search for studies, series and instances.

Query keys are keywords (``PatientName``) or tags (``00100010``); values use the
PS3.18 matching syntax (see :class:`~dcmstream.archive.Query`). Keys the catalog
cannot match are ignored and named in a ``Warning: 299`` header, as the standard
asks. Each match carries the attributes PS3.18 Table 10.6.3-3/4/5 requires for
its level (and for the parent levels when the search is not scoped to them), the
matching keys, and ``includefield`` attributes (``all``: every attribute kept for
searches; at study and series level the patient/study/series attributes only).
"""

from __future__ import annotations

import gzip
import re
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ..archive import Query, QueryError, query_integer
from ..archive.attributes import COLUMNS, REQUIRED_INSTANCE, REQUIRED_SERIES, REQUIRED_STUDY, resolve_attribute
from ..archive.uids import is_valid_uid
from ..dicomjson import dumps
from .common import DICOM_JSON, base_url, context, path_uid, require_json_accept, run, warning

__all__ = ["search_studies", "search_series", "search_instances", "STUDY_ALL", "SERIES_ALL"]

_CONTROL = {"limit", "offset", "fuzzymatching", "includefield", "_"}

#: ``includefield=all`` at study level: patient and study attributes.
STUDY_ALL = REQUIRED_STUDY + (
    "IssuerOfPatientID", "PatientBirthTime", "OtherPatientIDsSequence", "OtherPatientNames", "PatientAge",
    "PatientSize", "PatientWeight", "EthnicGroup", "PatientComments", "PatientBirthName", "ResponsiblePerson",
    "PatientSpeciesDescription", "PatientBreedDescription", "IssuerOfAccessionNumberSequence",
    "ProcedureCodeSequence", "NameOfPhysiciansReadingStudy", "PhysiciansOfRecord", "AdmittingDiagnosesDescription",
    "RequestedProcedureDescription", "InstitutionName", "SOPClassesInStudy",
)
#: ``includefield=all`` at series level: series attributes (plus study ones when unscoped).
SERIES_ALL = REQUIRED_SERIES + (
    "Laterality", "BodyPartExamined", "ProtocolName", "OperatorsName", "PerformingPhysicianName",
    "PerformedProcedureStepID", "PerformedProcedureStepDescription", "Manufacturer", "ManufacturerModelName",
    "StationName", "FrameOfReferenceUID", "PatientPosition", "SeriesDescriptionCodeSequence",
    "AnatomicalOrientationType", "ReferencedPerformedProcedureStepSequence", "RelatedSeriesSequence",
)


def _tags(keywords: tuple[str, ...]) -> set[str]:
    out = set()
    for keyword in keywords:
        resolved = resolve_attribute(keyword)
        if resolved is not None:
            out.add(f"{resolved[0]:08X}")
    return out


_REQUIRED = {"study": _tags(REQUIRED_STUDY), "series": _tags(REQUIRED_SERIES), "instance": _tags(REQUIRED_INSTANCE)}
_ALL = {"study": _tags(STUDY_ALL), "series": _tags(SERIES_ALL)}
#: Matching keys whose values are UIDs (or lists of UIDs): checked here, a 400 naming the key.
_UIDS = {f"{c.tag:08X}" for c in COLUMNS if c.vr == "UI"}


#: ``Keyword='value'`` in a catalog's QueryError message (repr quoting, either quote).
_QUOTED_VALUE = re.compile(r"""=('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]{0,63}|[0-9A-Fa-f]{8}")


def _bad_query(exc: QueryError) -> HTTPException:
    """400 naming the parameter but not its value: a query value may be a patient's name,
    ID or birth date (PatientBirthDate=...), and error bodies end up in logs and proxies."""
    return HTTPException(400, _QUOTED_VALUE.sub("", str(exc)))


def _shown_name(key: str) -> str:
    """A parameter name as it may appear in a Warning: a keyword or a tag, else masked."""
    return key if _NAME.fullmatch(key) else "(a parameter that is not an attribute keyword or tag)"


def _int_param(value: str, name: str, minimum: int = 0) -> int:
    try:
        return query_integer(value, name, minimum)
    except QueryError as exc:
        raise _bad_query(exc) from None


def _parse(request: Request) -> tuple[list[tuple[str, str]], set[str], bool, bool, int | None, int, list[str]]:
    matches: list[tuple[str, str]] = []
    include: set[str] = set()
    include_all = False
    fuzzy = False
    limit: int | None = None
    offset = 0
    unknown: list[str] = []
    for key, value in request.query_params.multi_items():
        if key == "limit":
            limit = _int_param(value, "limit")
        elif key == "offset":
            offset = _int_param(value, "offset")
        elif key == "fuzzymatching":
            if value.lower() not in ("true", "false"):
                raise HTTPException(400, "fuzzymatching: expected true or false")
            fuzzy = value.lower() == "true"
        elif key == "includefield":
            for field in value.split(","):
                field = field.strip()
                if not field:
                    continue
                if field.lower() == "all":
                    include_all = True
                    continue
                resolved = resolve_attribute(field.split(".")[0])
                if resolved is None:
                    unknown.append(_shown_name(field))
                else:
                    include.add(f"{resolved[0]:08X}")
        elif key in _CONTROL:
            continue
        else:
            resolved = resolve_attribute(key)
            if resolved is None or not resolved[1]:
                unknown.append(_shown_name(key))
                continue
            tag, keyword = resolved
            if len(value) > 1024:
                raise HTTPException(400, f"{keyword}: query value longer than 1024 characters")
            if f"{tag:08X}" in _UIDS and value:
                uids = [uid.strip() for uid in value.replace("\\", ",").split(",") if uid.strip()]
                if not uids:  # (white space or separators only: no UID to match)
                    raise HTTPException(400, f"{keyword}: expected a UID or a comma separated list of UIDs")
                if not all(is_valid_uid(uid) for uid in uids):
                    raise HTTPException(400, f"{keyword}: a value is not a valid UID (digits and dots)")
            matches.append((keyword, value))
            include.add(f"{tag:08X}")
    return matches, include, include_all, fuzzy, limit, offset, unknown


def _select(hit: dict[str, Any], level: str, scoped: set[str], include: set[str], include_all: bool) -> dict[str, Any]:
    wanted = set(_REQUIRED[level]) | include
    if "study" not in scoped and level != "study":
        wanted |= _REQUIRED["study"]
    if "series" not in scoped and level == "instance":
        wanted |= _REQUIRED["series"]
    if level == "instance":
        wanted |= {"0020000D", "0020000E"}  # clients need them to build retrieve URLs
    if level == "series":
        wanted.add("0020000D")
    if include_all:
        if level == "instance":
            return dict(sorted(hit.items()))
        wanted |= _ALL[level]
        if level == "series":
            wanted |= _ALL["study"] if "study" not in scoped else set()
    return {k: hit[k] for k in sorted(wanted) if k in hit}


async def _search(request: Request, level: str, study: str | None = None, series: str | None = None) -> Response:
    ctx = context(request)
    require_json_accept(request)
    matches, include, include_all, fuzzy, limit, offset, unknown = _parse(request)
    cap = ctx.config.max_results
    effective = cap if limit is None else min(limit, cap)
    query = Query(level, study, series, matches, fuzzy, effective + 1, offset)
    try:
        result = await run(ctx.archive.catalog.search, query)
    except QueryError as exc:
        raise _bad_query(exc) from None
    warnings = []
    hits = result.hits
    if len(hits) > effective:
        hits = hits[:effective]
        if limit is None or limit > cap:
            warnings.append(warning(f"The number of results exceeded the maximum ({cap}); use limit and offset"))
    ignored = result.unsupported + unknown
    if ignored:
        warnings.append(warning(f"The following attributes were not supported for matching: {', '.join(ignored)}", 600))
    base = base_url(request)
    scoped = {name for name, uid in (("study", study), ("series", series)) if uid}
    out = []
    for hit in hits:
        st = hit.get("0020000D", {}).get("Value", [""])[0]
        url = f"{base}/studies/{st}"
        if level in ("series", "instance"):
            url += f"/series/{hit.get('0020000E', {}).get('Value', [''])[0]}"
        if level == "instance":
            url += f"/instances/{hit.get('00080018', {}).get('Value', [''])[0]}"
        hit["00081190"] = {"vr": "UR", "Value": [url]}
        hit.setdefault("00080056", {"vr": "CS", "Value": ["ONLINE"]})  # InstanceAvailability
        out.append(_select(hit, level, scoped, include, include_all))
    body = dumps(out).encode("utf-8")
    headers = {}
    if warnings:
        headers["Warning"] = ", ".join(warnings)
    if len(body) > 4096 and "gzip" in request.headers.get("accept-encoding", ""):
        body = gzip.compress(body, 1)
        headers["Content-Encoding"] = "gzip"
        headers["Vary"] = "Accept-Encoding"
    return Response(body, media_type=DICOM_JSON, headers=headers)


async def search_studies(request: Request) -> Response:
    return await _search(request, "study")


async def search_series(request: Request) -> Response:
    study = path_uid(request, "study", "StudyInstanceUID") if "study" in request.path_params else None
    return await _search(request, "series", study)


async def search_instances(request: Request) -> Response:
    study = path_uid(request, "study", "StudyInstanceUID") if "study" in request.path_params else None
    series = path_uid(request, "series", "SeriesInstanceUID") if "series" in request.path_params else None
    return await _search(request, "instance", study, series)
