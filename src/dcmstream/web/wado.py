"""WADO-RS (PS3.18 10.4): instances, metadata, frames and bulk data.

Every response streams: whole instances in 1 MiB chunks from the blob (or frame by
frame when transcoded), frame lists one frame at a time. A frame is read through
the frame index stored at ingest, so a frame request reads that frame's bytes and
nothing else; the series metadata is the stored DICOM JSON of each instance,
joined once and kept in a bounded cache keyed by the series' catalog version (which
every add, remove, blob swap and tier move changes, in whichever process).

Every blob is read through the archive's one read path (:meth:`Archive.open_current`
and what builds on it), which follows a blob another process moved (a lifecycle move,
a compression swap) to where the catalog says it is now, so a record memoised here
never turns into an error; bytes gone for good answer 410 naming the instance. A request
finds the bytes before its answer starts, so such errors are HTTP statuses, not a
broken stream.
"""

from __future__ import annotations

import gzip
import re
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import numpy as np
from starlette.concurrency import iterate_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..archive import InstanceRecord
from ..archive.archive import InstanceChangedError
from ..dicomjson import resolve_bulk_uris
from ..io.source import ByteSource
from .common import DICOM_JSON, WebContext, base_url, context, find_instance, path_uid, require_json_accept, run
from .media import EXPLICIT_LE, InstanceChoice, MediaRange, PixelChoice, negotiate_instance, negotiate_pixels, parse_accept
from .multipart import MultipartWriter
from .transcode import CHUNK, explicit_le_stream

__all__ = ["retrieve", "metadata", "frames", "bulkdata", "parse_frame_list", "frame_reader", "open_frames"]

_FRAME_LIST = re.compile(r"^[0-9]{1,9}(,[0-9]{1,9})*$")
_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")


# -- whole instances -------------------------------------------------------------------------
async def _records(request: Request) -> list[InstanceRecord]:
    ctx = context(request)
    study = path_uid(request, "study", "StudyInstanceUID")
    if "instance" in request.path_params:
        return [await find_instance(request)]
    series = path_uid(request, "series", "SeriesInstanceUID") if "series" in request.path_params else None
    records = await run(ctx.archive.catalog.instances, study, series)
    if not records:
        what = f"series {series} of study {study}" if series else f"study {study}"
        raise HTTPException(404, f"{what} not found")
    return records


def _instance_choice(ranges: list[MediaRange], record: InstanceRecord) -> InstanceChoice:
    choice = negotiate_instance(ranges, record.transfer_syntax)
    if choice is None:
        raise HTTPException(
            406,
            f"cannot send instance {record.sop_uid} (stored as {record.transfer_syntax}) as any of the "
            f"acceptable media types; try transfer-syntax=* or {EXPLICIT_LE}",
        )
    return choice


async def retrieve(request: Request) -> Response:
    """Study, series or instance as multipart/related; type="application/dicom"."""
    ctx = context(request)
    archive = ctx.archive
    records = await _records(request)
    if len(records) == 1:
        # Where its bytes are now, before the answer starts: a moved blob is followed, a
        # lost one is a 410 (not a stream cut after the headers).
        records = [await run(archive.current, records[0])]
    ranges = parse_accept(request.headers.get("accept"))
    plan = [(record, _instance_choice(ranges, record)) for record in records]
    writer = MultipartWriter()

    async def body() -> AsyncIterator[bytes]:
        for record, choice in plan:
            if len(plan) > 1:
                current = await run(archive.current, record)
                if current is not record:  # moved or swapped by another process meanwhile
                    record, choice = current, _instance_choice(ranges, current)
            ts = choice.transfer_syntax or record.transfer_syntax
            yield writer.part_header(f"application/dicom; transfer-syntax={ts}")
            if choice.transfer_syntax is None:
                chunks: Iterator[bytes] = archive.iter_blob(record, chunk_size=CHUNK)
            else:
                chunks = explicit_le_stream(ctx.archive, record)
            async for chunk in iterate_in_threadpool(chunks):
                yield chunk
        yield writer.close()

    return StreamingResponse(body(), media_type=writer.content_type("application/dicom"))


# -- metadata --------------------------------------------------------------------------------
async def metadata(request: Request) -> Response:
    """DICOM JSON of a study, series or instance, BulkDataURIs absolute."""
    ctx = context(request)
    require_json_accept(request)
    study = path_uid(request, "study", "StudyInstanceUID")
    series = path_uid(request, "series", "SeriesInstanceUID") if "series" in request.path_params else None
    base = base_url(request)
    gz = "gzip" in request.headers.get("accept-encoding", "")
    catalog = ctx.archive.catalog
    if "instance" in request.path_params:
        record = await find_instance(request)
        texts = await run(catalog.metadata, study, series, record.sop_uid)
        if not texts:  # deleted (by another process) since the record was memoised here
            ctx.archive.forget(record.sop_uid)
            raise HTTPException(404, f"instance {record.sop_uid} not found in series {series} of study {study}")
        body = ("[" + resolve_bulk_uris(texts[0], base) + "]").encode("utf-8")
    else:
        version = await run(catalog.version, study, series)
        if version[0] == 0:
            what = f"series {series} of study {study}" if series else f"study {study}"
            raise HTTPException(404, f"{what} not found")
        key = (study, series, version, base, gz)
        cached = ctx.metadata_cache.get(key)
        if cached is not None:
            return _json_response(cached, gz)

        def build() -> bytes:
            texts = catalog.metadata(study, series)
            data = ("[" + ",".join(resolve_bulk_uris(t, base) for t in texts) + "]").encode("utf-8")
            return gzip.compress(data, 1) if gz else data

        body = await run(build)
        if len(body) <= ctx.metadata_cache.max_bytes // 4:  # one huge entry would flush the rest
            ctx.metadata_cache.put(key, body, len(body))
        return _json_response(body, gz)
    if gz and len(body) > 4096:
        return _json_response(gzip.compress(body, 1), True)
    return _json_response(body, False)


def _json_response(body: bytes, gz: bool) -> Response:
    headers = {"Vary": "Accept-Encoding"}
    if gz:
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type=DICOM_JSON, headers=headers)


# -- frames ----------------------------------------------------------------------------------
def parse_frame_list(text: str, limit: int) -> list[int]:
    """1-based frame numbers of ``"1,5,9"``; HTTPException(400) when malformed."""
    text = text.strip().replace("%2C", ",").replace("%2c", ",")
    if not _FRAME_LIST.match(text):
        raise HTTPException(400, f"frame list {text[:80]!r} is malformed: expected 1-based numbers like 1,5,9")
    numbers = [int(n) for n in text.split(",")]
    if len(numbers) > limit:
        raise HTTPException(400, f"at most {limit} frames per request")
    if any(n < 1 for n in numbers):
        raise HTTPException(400, "frame numbers start at 1")
    return numbers


def frame_reader(
    ctx: WebContext, record: InstanceRecord, choice: PixelChoice, source: ByteSource | None = None
) -> tuple[Callable[[int], bytes], Callable[[], None], int]:
    """(read(i) for 0-based frame i, close(), number of frames) for a pixel choice.

    Uses the stored frame index when possible; otherwise (deflated files, byte-swapped
    OW) opens the instance with the full parser once for the whole request. ``source``:
    the blob ``record`` describes, already open (:func:`open_frames`); every read uses it
    and close() closes it. Without one each read opens the blob through the archive.
    """
    archive = ctx.archive
    stored = archive.stored(record)
    if stored is not None:
        read_stored = stored.uncompressed_frame if choice.decode else stored.encoded_frame
        if source is None:
            return read_stored, lambda: None, len(stored)
        opened = source
        return (lambda i: read_stored(i, opened)), opened.close, len(stored)
    inst = archive.open_instance(record, source)

    def read_full(i: int) -> bytes:
        if not choice.decode:
            return inst.encoded_frame(i)
        arr = inst.frame(i)
        if inst.pixel_spec.bits_allocated == 1:
            return np.packbits(np.asarray(arr, np.uint8).reshape(-1), bitorder="little").tobytes()
        return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()

    def close() -> None:
        inst.close()
        if source is not None:
            source.close()

    return read_full, close, len(inst)


@dataclass
class OpenFrames:
    """The frames of one instance opened for a request (:func:`open_frames`).

    ``close()`` runs once: called by the request, or when this object is collected
    without it (a client gone before its streamed answer started never runs the body
    that would close the blob).
    """

    record: InstanceRecord
    choice: PixelChoice
    read: Callable[[int], bytes]
    close: Callable[[], object]
    count: int

    def __post_init__(self) -> None:
        self.close = weakref.finalize(self, self.close)


def open_frames(
    ctx: WebContext, record: InstanceRecord, ranges: list[MediaRange], numbers: list[int], *, eager: bool = True
) -> OpenFrames:
    """Open the instance's blob where it is now (the record may be a memoised one that
    another process has moved or swapped since), negotiate, and check the frame numbers:
    404 without pixel data or for a frame past the end, 406, 410 when the bytes are gone.
    Blocking (runs in the thread pool); the caller closes what it returns.

    ``eager=False`` opens nothing yet: each read goes through the archive (a frame in
    the cache costs no open; a moved blob is followed, a swapped one raises
    :class:`InstanceChangedError` carrying the current record).
    """
    current, source = ctx.archive.open_current(record) if eager else (record, None)
    try:
        if current.pixel is None:
            raise HTTPException(404, f"instance {current.sop_uid} has no pixel data")
        choice = negotiate_pixels(ranges, current.transfer_syntax)
        if choice is None:
            raise HTTPException(
                406,
                f"frames of {current.sop_uid} are stored as {current.transfer_syntax}; acceptable: "
                f'application/octet-stream (Explicit VR Little Endian) or transfer-syntax=* (as stored)',
            )
    except BaseException:
        if source is not None:
            source.close()
        raise
    read, close, count = frame_reader(ctx, current, choice, source)
    bad = [n for n in numbers if n > count]
    if bad:
        close()
        raise HTTPException(404, f"frame {bad[0]} does not exist: instance {current.sop_uid} has {count} frames")
    return OpenFrames(current, choice, read, close, count)


def _first_frame(ctx: WebContext, record: InstanceRecord, ranges: list[MediaRange], number: int) -> tuple[PixelChoice, bytes]:
    """Negotiate and read one frame: a single-frame request in one thread hop, with no
    blob opened when the frame is in the cache. Bytes another process swapped since the
    record was memoised: once more with the current record."""
    try:
        opened = open_frames(ctx, record, ranges, [number], eager=False)
        try:
            return opened.choice, opened.read(number - 1)
        finally:
            opened.close()
    except InstanceChangedError as exc:
        record = exc.current
    opened = open_frames(ctx, record, ranges, [number])
    try:
        return opened.choice, opened.read(number - 1)
    finally:
        opened.close()


async def frames(request: Request) -> Response:
    """One multipart part per requested frame (1-based), streamed one frame at a time."""
    ctx = context(request)
    record = await find_instance(request)
    numbers = parse_frame_list(request.path_params["frames"], ctx.config.max_frames_per_request)
    if record.pixel is None:
        raise HTTPException(404, f"instance {record.sop_uid} has no pixel data")
    ranges = parse_accept(request.headers.get("accept"))
    writer = MultipartWriter()
    if len(numbers) == 1:
        choice, data = await run(_first_frame, ctx, record, ranges, numbers[0])
        if request.headers.get("range"):
            # Progressive decoding (HTJ2K in RPCL order: the low resolutions come first): a
            # byte range of the frame's bytes, as Cornerstone3D asks for them.
            return _ranged(request, len(data), lambda s, e: iter([data[s:e]]), choice.multipart, choice)
        ranged = {"Accept-Ranges": "bytes"}  # a single frame answers Range requests
        if not choice.multipart:
            return Response(data, media_type=choice.part_content_type, headers=ranged)
        # One join, not two concatenations: a frame is 0.1-2 MB, copied on the event loop.
        return Response(
            b"".join((writer.part_header(choice.part_content_type), data, writer.close())),
            media_type=writer.content_type(choice.media_type, transfer_syntax=choice.transfer_syntax),
            headers=ranged,
        )
    opened = await run(open_frames, ctx, record, ranges, numbers)
    choice = opened.choice

    async def body() -> AsyncIterator[bytes]:
        try:
            for n in numbers:
                data = await run(opened.read, n - 1)
                yield writer.part_header(choice.part_content_type) + data
            yield writer.close()
        finally:
            opened.close()

    return StreamingResponse(body(), media_type=writer.content_type(choice.media_type, transfer_syntax=choice.transfer_syntax))


# -- bulk data -------------------------------------------------------------------------------
def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, end) of a single "bytes=" range; None for no (or an unusable multi-) range."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    unsatisfiable = {"Content-Range": f"bytes */{size}"}  # the headers of a 416
    if not dash:
        raise HTTPException(416, f"malformed Range header {header[:80]!r}", headers={"Content-Range": f"bytes */{size}"})
    try:
        if first == "":
            n = int(last)
            start, end = max(size - n, 0), size
        else:
            start = int(first)
            end = size if last == "" else min(int(last) + 1, size)
    except ValueError:
        raise HTTPException(416, f"malformed Range header {header[:80]!r}", headers=unsatisfiable) from None
    if start >= size or end <= start:
        raise HTTPException(416, f"range {header[:80]!r} is outside the {size} bytes", headers=unsatisfiable)
    return start, end


def _ranged(
    request: Request, total: int, open_chunks: Callable[[int, int], Iterator[bytes]], multipart: bool,
    choice: PixelChoice | None = None,
) -> Response:
    """A (possibly partial) body of ``total`` bytes, streamed: octet-stream (bulk data), or
    one frame as ``choice`` says (media type and transfer syntax of the frame's part)."""
    span = _parse_range(request.headers.get("range"), total)
    start, end = span if span is not None else (0, total)
    status = 206 if span is not None else 200
    headers = {"Accept-Ranges": "bytes"}
    content_range = f"bytes {start}-{end - 1}/{total}"
    if not multipart:
        headers["Content-Length"] = str(end - start)
        if span is not None:
            headers["Content-Range"] = content_range
    # multipart: the part carries Content-Range (on the response, browsers' HTTP caches
    # check it against the body's length and fail the request)
        chunks = iterate_in_threadpool(open_chunks(start, end))
        media = choice.part_content_type if choice is not None else "application/octet-stream"
        return StreamingResponse(chunks, status_code=status, media_type=media, headers=headers)
    writer = MultipartWriter()
    part_headers = {"Content-Range": content_range} if span is not None else None
    part_type = choice.part_content_type if choice is not None else f"application/octet-stream; transfer-syntax={EXPLICIT_LE}"

    async def body() -> AsyncIterator[bytes]:
        yield writer.part_header(part_type, part_headers)
        async for chunk in iterate_in_threadpool(open_chunks(start, end)):
            yield chunk
        yield writer.close()

    if choice is not None:
        media_type = writer.content_type(choice.media_type, transfer_syntax=choice.transfer_syntax)
    else:
        media_type = writer.content_type("application/octet-stream")
    return StreamingResponse(body(), status_code=status, media_type=media_type, headers=headers)


async def bulkdata(request: Request) -> Response:
    """A top-level bulk data element; pixel data per the frame negotiation rules."""
    ctx = context(request)
    record = await find_instance(request)
    tag_text = request.path_params["tag"]
    if not _TAG.match(tag_text):
        raise HTTPException(400, f"bulk data path {tag_text[:80]!r}: expected an 8-digit hex tag such as 7FE00010")
    tag = int(tag_text, 16)
    ranges = parse_accept(request.headers.get("accept"))
    archive = ctx.archive
    # Where its bytes are now, before the answer starts (moved: followed; lost: 410).
    record = await run(archive.current, record)
    pixel = record.pixel
    if pixel is not None and tag == pixel["tag"]:
        choice = negotiate_pixels(ranges, record.transfer_syntax)
        if choice is None:
            acceptable = "application/octet-stream or transfer-syntax=*"
            raise HTTPException(406, f"pixel data is stored as {record.transfer_syntax}; acceptable: {acceptable}")
        stored = await run(ctx.archive.stored, record)
        if (  # native little endian (not YBR_FULL_422) goes out as a byte range of the stored value
            stored is not None
            and stored.native
            and stored.little_endian
            and stored.spec.photometric_interpretation != "YBR_FULL_422"
            and choice.decode
            and pixel["length"] is not None
        ):
            offset, length = pixel["value_offset"], pixel["length"]
            return _ranged(
                request, length,
                lambda s, e: archive.iter_blob(record, offset + s, offset + e, CHUNK),
                choice.multipart,
            )
        # Encapsulated (or to be converted): one part per frame, as the frames resource.
        read, close, count = await run(frame_reader, ctx, record, choice)
        writer = MultipartWriter()

        async def body() -> AsyncIterator[bytes]:
            try:
                for i in range(count):
                    data = await run(read, i)
                    yield writer.part_header(choice.part_content_type) + data
                yield writer.close()
            finally:
                close()

        media_type = writer.content_type(choice.media_type, transfer_syntax=choice.transfer_syntax)
        return StreamingResponse(body(), media_type=media_type)

    def value() -> bytes | None:
        inst = ctx.archive.open_instance(record)
        try:
            elem = inst.dataset.get(tag)
            if elem is None:
                return None
            data = elem.value
            return bytes(data) if isinstance(data, (bytes, bytearray)) else None
        finally:
            inst.close()

    data = await run(value)
    if data is None:
        raise HTTPException(404, f"instance {record.sop_uid} has no bulk data element {tag_text.upper()}")
    multipart = any(r.is_multipart for r in ranges) or all(r.media_type == "*/*" for r in ranges)
    return _ranged(request, len(data), lambda s, e: iter([data[s:e]]), multipart)
