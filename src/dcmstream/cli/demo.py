"""``dcmstream demo``: generate a large sample and show lazy frame access on it."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from .. import open as open_instance
from .frame import write_frame
from .info import describe


def demo(
    directory: Path = typer.Option(Path("demo-data"), "--dir", help="where the sample files go"),
    frames: int = typer.Option(300, help="frames in the generated multiframe CT"),
) -> None:
    """Write a multiframe JPEG-LS CT sample (once), then open it and decode one frame."""
    from ..samples import ensure_sample

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"ct_jpegls_{frames}.dcm"
    started = time.perf_counter()
    ensure_sample(path, frames=frames, syntax="jpeg-ls", kind="ct", offset_table="bot")
    typer.echo(f"sample: {path} ({path.stat().st_size / 1e6:.1f} MB, ready in {time.perf_counter() - started:.1f} s)")
    for key, value in describe(path).items():
        typer.echo(f"  {key:28s} {value}")
    middle = frames // 2 + 1  # a frame number (1-based, as `dcmstream frame` takes it)
    t0 = time.perf_counter()
    with open_instance(path) as inst:
        opened = time.perf_counter()
        arr = inst.frame(middle - 1)
        done = time.perf_counter()
        read = inst.source.bytes_read
    typer.echo(
        f"open {1e3 * (opened - t0):.1f} ms, frame {middle} of {frames} {1e3 * (done - opened):.1f} ms; "
        f"read {read / 1e3:.0f} kB of {path.stat().st_size / 1e6:.1f} MB; shape {arr.shape} {arr.dtype}"
    )
    png = directory / f"frame_{middle}.png"
    write_frame(path, middle, png)
    typer.echo(f"wrote {png}")
