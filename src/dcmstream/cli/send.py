"""``dcmstream send FILE... --to AE@HOST:PORT``: C-STORE files to a DICOM peer, with a progress bar."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table


def send(
    paths: list[Path] = typer.Argument(..., help="DICOM files or folders (walked recursively)", exists=True),
    to: str = typer.Option(..., "--to", help="the peer: AE@HOST:PORT (e.g. PACS@10.0.0.5:104)"),
    calling_ae: str = typer.Option("DCMSTREAM", "--calling-ae", help="our AE title (default DCMSTREAM)"),
    timeout: float = typer.Option(60.0, help="seconds to wait for the peer (association, each response)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
) -> None:
    """Send DICOM files to a DICOM peer (C-STORE), each in its own transfer syntax, streamed
    from disk. Exit status 1 when any file failed."""
    from ..archive import iter_files
    from ..config import parse_peer
    from ..dimse import DimseError
    from ..dimse.scu import SendResult, file_item, send_items

    peer = parse_peer(to, "--to")
    console = Console(stderr=True)
    items = []
    failures: list[tuple[str, str]] = []
    for path in iter_files(paths):
        try:
            items.append(file_item(path))
        except DimseError as exc:
            failures.append((str(path), str(exc)))
    counts = {"sent": 0, "failed": len(failures)}
    total_bytes = sum(i.size for i in items)
    with Progress(
        TextColumn("[bold]sending"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
        console=console,
        disable=quiet,
    ) as progress:
        task = progress.add_task("send", total=total_bytes, status="")

        def on_result(result: SendResult) -> None:
            if result.ok:
                counts["sent"] += 1
            else:
                counts["failed"] += 1
                failures.append((result.item.label, result.message))
            progress.update(task, advance=result.item.size,
                            status=f"{counts['sent']}/{len(items)} sent, {counts['failed']} failed")

        send_items(items, peer, calling_ae=calling_ae, timeout=timeout, on_result=on_result)
    typer.echo(f"C-STORE to {peer}", err=True)
    table = Table(show_header=True)
    for name in ("sent", "failed", "MB"):
        table.add_column(name, justify="right")
    table.add_row(str(counts["sent"]), str(counts["failed"]), f"{total_bytes / 1e6:.1f}")
    Console().print(table)
    for label, message in failures[:20]:
        typer.echo(f"  failed: {label}: {message}", err=True)
    if len(failures) > 20:
        typer.echo(f"  ... and {len(failures) - 20} more failures", err=True)
    if failures:
        raise typer.Exit(1)
