"""``dcmstream frame FILE INDEX -o OUT``: one frame as 8-bit PNG or raw .npy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from .. import open as open_instance
from ..errors import DcmstreamError
from ..image.render import window_to_uint8
from ..units import InvalidValueError, parse_window


def _parse_window(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        return parse_window(text)
    except InvalidValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def write_frame(path: Path, index: int, out: Path, window: tuple[float, float] | None = None) -> tuple[int, ...]:
    """Decode frame ``index`` of ``path`` into ``out`` (.png windowed, .npy raw)."""
    import imagecodecs

    with open_instance(path) as inst:
        arr = inst.frame(index)
        if out.suffix.lower() == ".npy":
            np.save(out, arr)
        elif out.suffix.lower() == ".png":
            out.write_bytes(imagecodecs.png_encode(window_to_uint8(arr, inst.dataset, window)))
        else:
            raise typer.BadParameter("output must end in .png or .npy")
        return arr.shape


def frame(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="DICOM file"),
    index: int = typer.Argument(..., help="frame number, 0-based"),
    output: Path = typer.Option(..., "-o", "--output", help="OUT.png (8-bit, windowed) or OUT.npy (raw)"),
    window: str | None = typer.Option(None, "--window", help="CENTER,WIDTH (default: the file's window)"),
) -> None:
    """Decode one frame of FILE, reading only that frame's bytes."""
    try:
        shape = write_frame(file, index, output, _parse_window(window))
    except (DcmstreamError, IndexError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"wrote {output} (frame {index}, shape {shape})")
