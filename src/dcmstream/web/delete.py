"""DELETE of a study, a series or an instance (as Orthanc and dcm4chee offer).

``DELETE /studies/{study}[/series/{series}[/instances/{instance}]]`` removes the catalog
rows and the blobs on every tier (:meth:`dcmstream.archive.Archive.delete`, crash-safe:
journalled in the catalog, finished by the next opening if the server dies half-way).
200 with a JSON body naming what went (counts and UIDs); 404 naming the UIDs when nothing
matched; 400 for a malformed UID. Who may delete is the authorization layer's business
(the ``admin`` role), as is the audit record.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .common import context, path_uid, run

__all__ = ["delete"]


async def delete(request: Request) -> Response:
    ctx = context(request)
    study = path_uid(request, "study", "StudyInstanceUID")
    series = path_uid(request, "series", "SeriesInstanceUID") if "series" in request.path_params else None
    sop = path_uid(request, "instance", "SOPInstanceUID") if "instance" in request.path_params else None
    result = await run(ctx.archive.delete, study, series, sop)
    if not result.found:
        if sop is not None:
            what = f"instance {sop} not found in series {series} of study {study}"
        elif series is not None:
            what = f"series {series} of study {study} not found"
        else:
            what = f"study {study} not found"
        raise HTTPException(404, what)
    for record in result.records:
        ctx.renderers.pop(record.sop_uid)
    return JSONResponse(result.as_dict())
