"""``dcmstream info FILE``: what an instance holds and how its frames are found.

FILE is a path or the URL of a remote object (``https://...``, ``s3://bucket/key``,
``gs://bucket/key``), read by range requests; for a URL the requests and bytes the open
cost are shown too."""

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
from ..io.remote import is_url


def describe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The facts ``info`` prints, as a dict (the ``--json`` schema)."""
    with open_instance(path) as inst:
        fetched = getattr(inst.source, "fetched", None)
        # A remote object: what opening it cost on the wire (before the full dataset is read).
        opened = None if fetched is None else (fetched.requests, fetched.bytes)
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
        if opened is not None:
            out.update(open_requests=opened[0], open_bytes_fetched=opened[1])
        return out


def check_input(file: str) -> str:
    """``file`` when it is a URL or an existing file (typer's exists=True, which a URL fails)."""
    if is_url(file):
        return file
    path = Path(file)
    if not path.exists():
        raise typer.BadParameter(f"File '{file}' does not exist.", param_hint="'FILE'")
    if path.is_dir():
        raise typer.BadParameter(f"File '{file}' is a directory.", param_hint="'FILE'")
    return file


def info(
    file: str = typer.Argument(..., help="DICOM file, or URL (https://, s3://bucket/key, gs://bucket/key)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """Show transfer syntax, frames, geometry, bit depth and frame index of FILE."""
    check_input(file)
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
