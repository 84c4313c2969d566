"""``dcmstream info FILE``: what an instance holds and how its frames are found."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from .. import open as open_instance
from ..errors import DcmstreamError


def describe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The facts ``info`` prints, as a dict (the ``--json`` schema)."""
    with open_instance(path) as inst:
        ds = inst.dataset
        out: dict[str, Any] = {
            "path": str(path),
            "transfer_syntax": str(inst.transfer_syntax),
            "transfer_syntax_name": inst.transfer_syntax.name,
            "sop_class_uid": str(ds.get("SOPClassUID", "")),
            "modality": str(ds.get("Modality", "")),
            "file_bytes": inst.source.size,
            "frames": len(inst),
        }
        if inst.has_pixels:
            spec = inst.pixel_spec
            out.update(
                rows=spec.rows,
                columns=spec.columns,
                samples_per_pixel=spec.samples_per_pixel,
                bits_allocated=spec.bits_allocated,
                bits_stored=spec.bits_stored,
                pixel_representation=spec.pixel_representation,
                photometric_interpretation=spec.photometric_interpretation,
                offset_table=inst.frame_index.kind.value,
                pixel_bytes=inst.frame_index.total_bytes,
                header_bytes_read=inst.source.bytes_read,
            )
        else:
            out.update(offset_table=None, pixel_bytes=0)
        return out


def info(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="DICOM file"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """Show transfer syntax, frames, geometry, bit depth and frame index of FILE."""
    try:
        facts = describe(file)
    except DcmstreamError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if as_json:
        typer.echo(json.dumps(facts, indent=2))
        return
    table = Table(title=str(file), show_header=False)
    for key, value in facts.items():
        if key != "path":
            table.add_row(key.replace("_", " "), str(value))
    Console().print(table)
