"""WADO-RS rendered and thumbnail resources (PS3.18 10.4.1.1.3, 8.3.5.1).

``/rendered`` answers image/jpeg (default) or image/png of one frame: for an
instance its first frame, for ``/frames/{n}/rendered`` frame *n* (one frame per
request: a list is refused with 400). Query parameters: ``window=center,width[,
function]`` (linear, linear-exact or sigmoid), ``viewport=vw,vh[,sx,sy,sw,sh]``
(the source region, then scaled to fit vw x vh with the aspect kept), ``quality``
(1..100, JPEG). ``/thumbnail`` is the same with a small default viewport; for a
study or series it shows the middle frame of the middle instance.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import imagecodecs
import numpy as np
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ..archive import InstanceRecord
from ..archive.archive import InstanceChangedError
from ..image.render import Renderer, render_array, resize_area
from ..units import InvalidValueError, parse_window
from .common import WebContext, context, find_instance, path_uid, run
from .media import accepts, parse_accept
from .wado import parse_frame_list

__all__ = ["rendered", "thumbnail", "study_thumbnail"]

_FUNCTIONS = {"linear": "LINEAR", "linear-exact": "LINEAR_EXACT", "linear_exact": "LINEAR_EXACT", "sigmoid": "SIGMOID"}


def _numbers(text: str, name: str, count: tuple[int, ...]) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise HTTPException(400, f"{name}={text[:80]!r}: expected comma separated numbers") from None
    if len(values) not in count or not all(np.isfinite(values)):
        raise HTTPException(400, f"{name}={text[:80]!r}: expected {' or '.join(map(str, count))} numbers")
    return values


def _params(request: Request, default_size: int | None, max_viewport: int) -> dict[str, Any]:
    q = request.query_params
    out: dict[str, Any] = {"window": None, "function": None, "viewport": None, "region": None, "quality": 90}
    if "window" in q:
        parts = q["window"].split(",")
        if len(parts) == 3:
            function = _FUNCTIONS.get(parts[2].strip().lower())
            if function is None:
                raise HTTPException(400, f"window function {parts[2][:40]!r}: expected linear, linear-exact or sigmoid")
            out["function"] = function
            parts = parts[:2]
        try:
            out["window"] = parse_window(",".join(parts))
        except InvalidValueError as exc:
            raise HTTPException(400, str(exc)) from None
    if "viewport" in q:
        values = _numbers(q["viewport"], "viewport", (2, 6))
        vw, vh = int(values[0]), int(values[1])
        if not (1 <= vw <= max_viewport and 1 <= vh <= max_viewport):
            raise HTTPException(400, f"viewport size must be within 1..{max_viewport}")
        out["viewport"] = (vw, vh)
        if len(values) == 6:
            sx, sy, sw, sh = (int(v) for v in values[2:])
            if sx < 0 or sy < 0 or sw <= 0 or sh <= 0:
                reason = "viewport source region must be non-negative with a positive size (flips are not supported)"
                raise HTTPException(400, reason)
            out["region"] = (sx, sy, sw, sh)
    elif default_size:
        out["viewport"] = (default_size, default_size)
    if "quality" in q:
        try:
            quality = int(q["quality"])
        except ValueError:
            raise HTTPException(400, f"quality={q['quality'][:20]!r} is not an integer") from None
        if not 1 <= quality <= 100:
            raise HTTPException(400, "quality must be within 1..100")
        out["quality"] = quality
    return out


def _media(request: Request) -> str:
    media = accepts(parse_accept(request.headers.get("accept")), "image/jpeg", "image/png")
    if media is None:
        raise HTTPException(406, "rendered images are available as image/jpeg or image/png")
    return media


def _renderer(ctx: WebContext, record: InstanceRecord) -> Renderer:
    renderer = ctx.renderers.get(record.sop_uid)
    if renderer is not None:
        return renderer
    inst = ctx.archive.open_instance(record)
    try:
        ds = inst.dataset
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
        renderer = Renderer(ds, "RGB" if photometric.startswith("YBR") else None)
    finally:
        inst.close()
    ctx.renderers.put(record.sop_uid, renderer)
    return renderer


def _decoded_frame(ctx: WebContext, record: InstanceRecord, index: int) -> np.ndarray:
    """Frame ``index`` of ``record``; every blob read follows a move by another process
    (:meth:`~dcmstream.archive.Archive.open_blob`), a swap raises InstanceChangedError."""
    stored = ctx.archive.stored(record)
    if stored is not None:
        if index >= len(stored):
            raise HTTPException(404, f"frame {index + 1} does not exist: the instance has {len(stored)} frames")
        return stored.frame(index)
    inst = ctx.archive.open_instance(record)
    try:
        if index >= len(inst):
            raise HTTPException(404, f"frame {index + 1} does not exist: the instance has {len(inst)} frames")
        return inst.frame(index)
    finally:
        inst.close()


def render_frame(ctx: WebContext, record: InstanceRecord, index: int, params: dict[str, Any], media: str) -> bytes | bytearray:
    """Decode frame ``index`` (0-based), window it, fit the viewport, encode."""
    try:
        arr = _decoded_frame(ctx, record, index)
    except InstanceChangedError as exc:  # swapped by another process: once more, with its record
        record = exc.current
        arr = _decoded_frame(ctx, record, index)
    renderer = _renderer(ctx, record)
    if params["function"] is not None and arr.ndim == 2:
        p = dataclasses.replace(renderer.params(index), voi_function=params["function"])
        img = render_array(arr, p, params["window"])
    else:
        img = renderer.render(arr, index, params["window"])
    if params["region"] is not None:
        sx, sy, sw, sh = params["region"]
        img = img[sy : sy + sh, sx : sx + sw]
        if img.size == 0:
            raise HTTPException(400, "viewport source region lies outside the image")
    if params["viewport"] is not None:
        vw, vh = params["viewport"]
        rows, cols = img.shape[:2]
        scale = min(vw / cols, vh / rows)
        if scale < 1 or params["region"] is not None:
            img = resize_area(img, max(1, round(rows * scale)), max(1, round(cols * scale)))
    img = np.ascontiguousarray(img)
    if media == "image/png":
        return imagecodecs.png_encode(img)
    return imagecodecs.jpeg8_encode(img, level=params["quality"])


async def _render(request: Request, record: InstanceRecord, index: int, default_size: int | None) -> Response:
    ctx = context(request)
    media = _media(request)
    params = _params(request, default_size, ctx.config.max_viewport)
    if record.pixel is None:
        raise HTTPException(404, f"instance {record.sop_uid} has no pixel data to render")
    data = await run(render_frame, ctx, record, index, params, media)
    return Response(data, media_type=media)


def _frame_index(request: Request) -> int:
    if "frames" not in request.path_params:
        return 0
    numbers = parse_frame_list(request.path_params["frames"], 1_000_000)
    if len(numbers) != 1:
        raise HTTPException(400, "rendered frames: one frame per request")
    return numbers[0] - 1


async def rendered(request: Request) -> Response:
    record = await find_instance(request)
    return await _render(request, record, _frame_index(request), None)


async def thumbnail(request: Request) -> Response:
    record = await find_instance(request)
    index = _frame_index(request)
    if "frames" not in request.path_params and record.number_of_frames > 1:
        index = record.number_of_frames // 2
    return await _render(request, record, index, context(request).config.thumbnail_size)


async def study_thumbnail(request: Request) -> Response:
    """Thumbnail of a study or series: its middle image instance, middle frame."""
    ctx = context(request)
    study = path_uid(request, "study", "StudyInstanceUID")
    series = path_uid(request, "series", "SeriesInstanceUID") if "series" in request.path_params else None
    records = [r for r in await run(ctx.archive.catalog.instances, study, series) if r.pixel is not None]
    if not records:
        raise HTTPException(404, "no image instances to make a thumbnail from")
    record = records[len(records) // 2]
    return await _render(request, record, max(record.number_of_frames // 2, 0), ctx.config.thumbnail_size)
