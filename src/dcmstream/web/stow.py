"""STOW-RS (PS3.18 10.5): store instances sent as multipart/related application/dicom.

The body is parsed as it arrives; each part is spooled to a temporary file next to
the blob store (so the final put is a rename) with a cap on the total size. Each spool
file is created locked (:meth:`Archive.create_staging`) and stays locked until the
request is over, so no sweep (in this process or another) takes it while in flight, and
the next sweep removes it if the server is killed. Only
when the whole body has arrived intact are the parts ingested, each atomically: a
truncated or malformed body stores nothing. The response (DICOM JSON) lists stored
instances in ReferencedSOPSequence and failures in FailedSOPSequence with a
FailureReason; the reasons in words are in ``Warning`` headers.

Status: 200 all stored (a duplicate of identical bytes counts as stored; the same SOP
Instance UID with other bytes fails with 0x0111 and keeps the archived copy), 202 some failed, 409 none
stored, 400 malformed body, 413 too large, 415 not multipart/related
application/dicom. Storage exhausted (no space, a quota, a file size limit, a full catalog
database or object store): 507 Insufficient Storage when nothing was stored, each
instance failed with 0xA700 (Out of Resources), one log line, the spooled parts deleted;
the next request succeeds once space is back (no restart). Storage that did not answer
(object store or catalog unreachable): 503 with Retry-After. Some stored: 202 as usual.
"""

from __future__ import annotations

import errno
import io
import logging
import os
from pathlib import Path
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from ..archive.blobstore import StagingFile, StorageFullError, storage_full
from ..archive.ingest import FAILURE_CANNOT_UNDERSTAND, FAILURE_OUT_OF_RESOURCES, IngestResult
from ..archive.uids import is_valid_uid
from ..dicomjson import dumps
from ..errors import DcmstreamError
from . import audit
from .common import DICOM_JSON, base_url, context, error, path_uid, run, warning
from .media import parse_content_type
from .multipart import MultipartError, MultipartParser, PartData, PartEnd, PartHeaders

__all__ = ["store"]

log = logging.getLogger(__name__)
#: Bytes of each part kept while storage is full, to name the instance in the answer.
_HEAD_BYTES = 16 * 1024
#: Parts named that way at most (the others are refused without UIDs): bounded memory.
_MAX_HEADS = 256
#: Seconds a client should wait before retrying when the storage did not answer (503).
_RETRY_AFTER = "5"


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
    staged: list[StagingFile] = []  # one entry per accepted part, locked until the request ends
    outcomes: list[tuple[int, Path | None, str]] = []  # (part index, staged file or None, reason)
    current: Any = None
    current_path: Path | None = None
    received = 0
    # Storage exhausted while spooling: the spooled parts go and the rest of the body is read
    # and dropped (the client gets the answer, not a reset connection), keeping the first
    # bytes of each part to name its instance in the answer.
    full: StorageFullError | None = None
    heads: dict[int, bytearray] = {}
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
                    if len(heads) < _MAX_HEADS:
                        heads[event.index] = bytearray()  # the part's first bytes (dropped once spooled)
                    if full is not None:
                        outcomes.append((event.index, None, ""))
                        continue
                    current_path = None
                    try:
                        spool = archive.create_staging()
                        staged.append(spool)
                        current_path = spool.path
                        current = spool.open_write()  # closed at PartEnd or in finally; the lock stays
                    except OSError as exc:
                        full = _spool_failed(exc, current_path)
                        heads.update(_heads_of(outcomes))
                        _cleanup(None, staged)
                        outcomes.append((event.index, None, ""))
                        current = current_path = None
                elif isinstance(event, PartData):
                    head = heads.get(event.index)
                    if head is not None and len(head) < _HEAD_BYTES:
                        head += event.data[: _HEAD_BYTES - len(head)]
                    if current is not None:
                        try:
                            current.write(event.data)
                        except OSError as exc:
                            full = _spool_failed(exc, current_path)
                            _close_quietly(current)
                            heads.update(_heads_of(outcomes))
                            _cleanup(None, staged)
                            outcomes.append((event.index, None, ""))
                            current = current_path = None
                elif isinstance(event, PartEnd):
                    if current is not None:
                        try:
                            current.close()
                        except OSError as exc:  # a delayed write error (NFS, quotas)
                            full = _spool_failed(exc, current_path)
                            heads.update(_heads_of(outcomes))
                            _cleanup(None, staged)
                            outcomes.append((event.index, None, ""))
                        else:
                            outcomes.append((event.index, current_path, ""))
                            heads.pop(event.index, None)
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
            if reason:  # a part of another media type
                result = IngestResult("failed", failure_reason=FAILURE_CANNOT_UNDERSTAND, message=reason)
            elif full is not None:
                # Storage ran out (spooling this body, or storing an earlier part): not tried.
                head = heads.get(index) or (_heads_of([(index, path, "")]).get(index) if path else None)
                result = _refused(full, head or b"")
            elif path is None or os.path.getsize(path) == 0:
                result = IngestResult("failed", failure_reason=FAILURE_CANNOT_UNDERSTAND, message="empty part")
            else:
                result = await run(archive.ingest_file, path, move=True, expected_study=study)
                if result.cause == "full":
                    full = StorageFullError(errno.ENOSPC, result.message)
            if result.ok:  # in the audit trail as soon as stored, whatever happens next
                audit.note(request, studies=[result.study_uid or ""], instances=[result.sop_uid or ""])
            else:
                warnings.append(warning(f"part {index + 1}: {result.message}"))
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
    headers = {"Warning": ", ".join(warnings)} if warnings else {}
    refused = [r for r in failed if r.failure_reason == FAILURE_OUT_OF_RESOURCES]
    if refused:
        causes = {r.cause for r in refused}
        log.error("STOW-RS: %s: %d of %d instance(s) refused (0xA700), %d stored: %s",
                  "storage full" if "full" in causes else "storage unavailable", len(refused), len(results), len(ok),
                  refused[0].message)
        if not ok:
            if "full" in causes:
                status = 507
            else:
                status = 503
                headers["Retry-After"] = _RETRY_AFTER
    return Response(dumps(body), status_code=status, media_type=DICOM_JSON, headers=headers or None)


def _spool_failed(exc: OSError, path: Path | None) -> StorageFullError:
    """A write of the spooled body failed: storage exhaustion becomes the typed error (the
    answer is 507); any other I/O error is the server's (500, raised)."""
    full = storage_full(exc, f"STOW-RS staging file {path}")
    if full is None:
        raise exc
    return full


def _heads_of(outcomes: list[tuple[int, Path | None, str]]) -> dict[int, bytearray]:
    """The first bytes of each spooled part (read before the files go), to name them."""
    out: dict[int, bytearray] = {}
    for index, path, _ in outcomes[:_MAX_HEADS]:
        if path is None or not path.exists():
            continue
        try:
            with open(path, "rb") as fh:
                out[index] = bytearray(fh.read(_HEAD_BYTES))
        except OSError:
            out[index] = bytearray()
    return out


def _refused(full: StorageFullError, head: bytes | bytearray) -> IngestResult:
    """The failure of an instance that was not stored because storage is full, named by
    the UIDs in its first bytes when they can be read."""
    sop_class, sop = _identify(head)
    return IngestResult("failed", sop_uid=sop, sop_class_uid=sop_class, failure_reason=FAILURE_OUT_OF_RESOURCES,
                        cause="full", message=f"not stored: out of storage ({full.strerror or full})")


def _identify(head: bytes | bytearray) -> tuple[str | None, str | None]:
    """(SOP Class UID, SOP Instance UID) from the first bytes of a Part 10 file, or Nones."""
    if not head:
        return None, None
    from pydicom.filereader import read_partial

    try:
        # Up to (0008,0018) only: the rest of a big header may be cut off in ``head``.
        ds = read_partial(io.BytesIO(bytes(head)), stop_when=lambda tag, vr, length: tag > 0x00080018)
        sop_class, sop = str(ds.get("SOPClassUID", "") or ""), str(ds.get("SOPInstanceUID", "") or "")
    except Exception:  # noqa: BLE001 - a name for the failure item only; none is fine
        return None, None
    return (sop_class if is_valid_uid(sop_class) else None), (sop if is_valid_uid(sop) else None)


def _close_quietly(handle: Any) -> None:
    """Close a spool file whose buffered bytes may not fit anywhere any more."""
    try:
        handle.close()
    except OSError:
        pass


def _cleanup(handle: Any, staged: list[StagingFile]) -> None:
    if handle is not None:
        _close_quietly(handle)
    for spool in staged:
        try:
            spool.discard()  # deleted if still there (not moved into a blob); lock released
        except OSError:
            pass
