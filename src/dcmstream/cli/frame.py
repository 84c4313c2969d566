"""``dcmstream frame FILE NUMBER -o OUT``: one frame as 8-bit PNG or raw .npy.

Frames are numbered from 1, as DICOM numbers them (Frame Number, DICOMweb ``/frames/1``,
the viewer's "frame 1 / N"); the Python API (``Instance.frame(i)``) takes a 0-based index,
``NUMBER - 1``. FILE may be a URL (``https://``, ``s3://bucket/key``, ``gs://bucket/key``):
the header and offset table are read by a few range requests, the frame by one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from .. import open as open_instance
from ..errors import DcmstreamError, FrameNumberError
from ..image.render import window_to_uint8
from ..units import InvalidValueError, parse_window
from .info import check_input


def _parse_window(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        return parse_window(text)
    except InvalidValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def write_frame(path: str | Path, number: int, out: Path, window: tuple[float, float] | None = None) -> tuple[int, ...]:
    """Decode frame ``number`` (1-based) of ``path`` into ``out`` (.png windowed, .npy raw)."""
    import imagecodecs

    suffix = out.suffix.lower()
    if suffix not in (".png", ".npy"):
        raise typer.BadParameter("output must end in .png or .npy", param_hint="'-o'")
    with open_instance(path) as inst:
        count = len(inst)
        if not 1 <= number <= count:
            raise FrameNumberError(f"{Path(str(path)).name} has no frame {number}: its frames are numbered 1 to {count}")
        arr = inst.frame(number - 1)
        if suffix == ".npy":
            np.save(out, arr)
        else:
            out.write_bytes(imagecodecs.png_encode(window_to_uint8(arr, inst.dataset, window)))
        return arr.shape


def frame(
    file: str = typer.Argument(..., help="DICOM file, or URL (https://, s3://bucket/key, gs://bucket/key)"),
    number: int = typer.Argument(..., help="frame number, from 1 (as DICOM, DICOMweb and the viewer count)"),
    output: Path = typer.Option(..., "-o", "--output", help="OUT.png (8-bit, windowed) or OUT.npy (raw)"),
    window: str | None = typer.Option(None, "--window", help="CENTER,WIDTH (default: the file's window)"),
) -> None:
    """Decode frame NUMBER of FILE (1 = the first frame), reading only that frame's bytes."""
    check_input(file)
    try:
        shape = write_frame(file, number, output, _parse_window(window))
    except (DcmstreamError, IndexError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"wrote {output} (frame {number}, shape {shape})")
