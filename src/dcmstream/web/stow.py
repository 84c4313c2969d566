"""STOW-RS (PS3.18 10.5): store instances sent as multipart/related application/dicom.

The body is parsed as it arrives; each part is spooled to a temporary file next to
the blob store (so the final put is a rename) with a cap on the total size. Only
when the whole body has arrived intact are the parts ingested, each atomically: a
truncated or malformed body stores nothing. The response (DICOM JSON) lists stored
instances in ReferencedSOPSequence and failures in FailedSOPSequence with a
FailureReason; the reasons in words are in ``Warning`` headers.

Status: 200 all stored (a duplicate of identical bytes counts as stored; the same SOP
Instance UID with other bytes fails with 0x0111 and keeps the archived copy), 202 some failed, 409 none
stored, 400 malformed body, 413 too large, 415 not multipart/related
application/dicom.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from ..archive.ingest import FAILURE_CANNOT_UNDERSTAND, FAILURE_OUT_OF_RESOURCES, IngestResult
from ..dicomjson import dumps
from ..errors import DcmstreamError
from . import audit
from .common import DICOM_JSON, base_url, context, error, path_uid, run, warning
from .media import parse_content_type
from .multipart import MultipartError, MultipartParser, PartData, PartEnd, PartHeaders

__all__ = ["store"]


class _TooLarge(DcmstreamError):
    """The body passed the upload limit: unwinds the parse loop into a 413."""


def _sop_item(result: IngestResult, base: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "00081150": {"vr": "UI", "Value": [result.sop_class_uid]} if result.sop_class_uid else {"vr": "UI"},
        "00081155": {"vr": "UI", "Value": [result.sop_uid]} if result.sop_uid else {"vr": "UI"},
    }
    if result.ok and base is not None:
        item["00081190"] = {
            "vr": "UR",
            "Value": [f"{base}/studies/{result.study_uid}/series/{result.series_uid}/instances/{result.sop_uid}"],
        }
    if not result.ok:
        item["00081197"] = {"vr": "US", "Value": [result.failure_reason or FAILURE_CANNOT_UNDERSTAND]}
    return item


def _warning(text: str) -> str:
    return warning(text)


async def store(request: Request) -> Response:
    ctx = context(request)
    study = path_uid(request, "study", "StudyInstanceUID") if "study" in request.path_params else None
    media, params = parse_content_type(request.headers.get("content-type", ""))
    if media != "multipart/related":
        needed = 'multipart/related; type="application/dicom"'
        raise HTTPException(415, f"STOW-RS needs Content-Type {needed} (got {media or 'none'!r})")
    part_type = params.get("type", "application/dicom").lower()
    if part_type != "application/dicom":
        raise HTTPException(415, f"STOW-RS parts of type {part_type!r} are not supported; send application/dicom")
    boundary = params.get("boundary")
    if not boundary:
        raise HTTPException(400, "multipart/related without a boundary parameter")
    try:
        parser = MultipartParser(boundary, max_header_bytes=ctx.config.max_part_header_bytes)
    except MultipartError as exc:
        raise HTTPException(400, str(exc)) from None
    limit = ctx.config.max_upload_bytes
    archive = ctx.archive
    staged: list[Path] = []  # one entry per accepted part
    outcomes: list[tuple[int, Path | None, str]] = []  # (part index, staged file or None, reason)
    current: Any = None
    current_path: Path | None = None
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise _TooLarge()
            for event in parser.feed(chunk):
                if isinstance(event, PartHeaders):
                    ptype, _ = parse_content_type(event.content_type or part_type)
                    if ptype != "application/dicom":
                        reason = f"part {event.index + 1}: media type {ptype!r} is not application/dicom"
                        outcomes.append((event.index, None, reason))
                        current = current_path = None
                        continue
                    current_path = archive.staging_path()
                    staged.append(current_path)
                    current = open(current_path, "xb")  # noqa: SIM115 - closed at PartEnd or in finally
                elif isinstance(event, PartData):
                    if current is not None:
                        current.write(event.data)
                elif isinstance(event, PartEnd):
                    if current is not None:
                        current.close()
                        outcomes.append((event.index, current_path, ""))
                    current = current_path = None
        parser.finish()
        if not outcomes:
            raise MultipartError("the body has no parts")
    except _TooLarge:
        _cleanup(current, staged)
        return error(413, f"the STOW-RS body exceeds the limit of {limit} bytes")
    except MultipartError as exc:
        _cleanup(current, staged)
        return error(400, f"malformed multipart body: {exc}")
    except ClientDisconnect:
        _cleanup(current, staged)
        return error(400, "the client disconnected before the body was complete")
    except BaseException:
        _cleanup(current, staged)
        raise

    results: list[IngestResult] = []
    warnings: list[str] = []
    try:
        for index, path, reason in outcomes:
            if path is None:
                results.append(IngestResult("failed", failure_reason=FAILURE_CANNOT_UNDERSTAND, message=reason))
                warnings.append(_warning(reason))
                continue
            if os.path.getsize(path) == 0:
                result = IngestResult("failed", failure_reason=FAILURE_CANNOT_UNDERSTAND, message="empty part")
            else:
                result = await run(archive.ingest_file, path, move=True, expected_study=study)
            if result.ok:  # in the audit trail as soon as stored, whatever happens next
                audit.note(request, studies=[result.study_uid or ""], instances=[result.sop_uid or ""])
            else:
                warnings.append(_warning(f"part {index + 1}: {result.message}"))
            results.append(result)
    finally:
        _cleanup(None, staged)

    base = base_url(request)
    ok = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    body: dict[str, Any] = {}
    if study is not None:
        body["00081190"] = {"vr": "UR", "Value": [f"{base}/studies/{study}"]}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": [_sop_item(r, None) for r in failed]}
    if ok:
        body["00081199"] = {"vr": "SQ", "Value": [_sop_item(r, base) for r in ok]}
    status = 200 if not failed else (202 if ok else 409)
    if any(r.failure_reason == FAILURE_OUT_OF_RESOURCES for r in failed) and not ok:
        status = 503
    headers = {"Warning": ", ".join(warnings)} if warnings else None
    return Response(dumps(body), status_code=status, media_type=DICOM_JSON, headers=headers)


def _cleanup(handle: Any, staged: list[Path]) -> None:
    if handle is not None:
        try:
            handle.close()
        except OSError:
            pass
    for path in staged:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass
