"""``dcmstream import PATH... [--archive DIR | --config FILE]``: archive DICOM files with a progress bar."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from .options import COMPRESS_POLICY_OPTION


def import_files(
    paths: list[Path] = typer.Argument(..., help="DICOM files or folders (walked recursively)", exists=True),
    archive: Path | None = typer.Option(
        None, "--archive", "-a", help="archive folder (created if missing; default ./archive). Not with --config"
    ),
    config: Path | None = typer.Option(
        None, "--config", help="archive configuration (TOML: [catalog], [storage.*]) instead of a folder; "
        "new instances go to its first storage", exists=True, dir_okay=False,
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
    compress_policy: Path | None = COMPRESS_POLICY_OPTION,
) -> None:
    """Copy DICOM files into an archive (idempotent: instances already archived are skipped).

    Other processes (servers, imports) may write to a configured archive at the same time.
    """
    from ..archive import Archive, iter_files

    if config is not None and archive is not None:
        raise typer.BadParameter("give --archive or --config, not both")

    console = Console(stderr=True)
    files = list(iter_files(paths))
    counts = {"stored": 0, "duplicate": 0, "failed": 0}
    failures: list[tuple[Path, str]] = []
    policy = None
    if compress_policy is not None:
        from ..policy import load_policy

        policy = load_policy(compress_policy)
    if config is not None:
        from ..config import load_config, open_archive

        opened = open_archive(load_config(config), cache=False)
        label = str(config)
    else:
        opened = Archive(archive or Path("archive"), cache=False)
        label = str(archive or Path("archive"))
    with opened as arc:
        worker = None
        if policy is not None and policy.rules:
            from ..policy import PolicyWorker

            worker = PolicyWorker(arc, policy, block=True).start()  # blocking queue: backpressure
        with Progress(
            TextColumn("[bold]importing"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeRemainingColumn(),
            console=console,
            disable=quiet,
        ) as progress:
            task = progress.add_task("import", total=len(files), status="")
            for path in files:
                result = arc.ingest_file(path)
                counts[result.status] += 1
                if not result.ok:
                    failures.append((path, result.message))
                status = f"{counts['stored']} stored, {counts['duplicate']} dup, {counts['failed']} failed"
                progress.update(task, advance=1, status=status)
        if worker is not None:
            with console.status("applying the compression policy ..."):
                worker.stop(drain=True)
            c = worker.counts
            typer.echo(
                f"compression policy: {c['compressed']} compressed ({c['bytes_saved'] / 1e6:.1f} MB saved), "
                f"{c['kept']} kept, {c['skipped']} not matching, {c['failed']} failed",
                err=True,
            )
        totals = arc.catalog.counts()
    table = Table(title=f"archive {label}", show_header=True)
    for name in ("stored", "duplicate", "failed"):
        table.add_column(name, justify="right")
    table.add_row(*(str(counts[n]) for n in ("stored", "duplicate", "failed")))
    Console().print(table)
    typer.echo(f"archive holds {totals['studies']} studies, {totals['series']} series, {totals['instances']} instances")
    for path, message in failures[:20]:
        typer.echo(f"  failed: {path}: {message}", err=True)
    if len(failures) > 20:
        typer.echo(f"  ... and {len(failures) - 20} more failures", err=True)
    if files and counts["failed"] == len(files):
        raise typer.Exit(1)
