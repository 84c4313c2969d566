"""``dcmstream process INPUT... --op OP --budget 2GB``: run an operation over a cohort.

Inputs are files, folders (recursive), archive folders or DICOMweb URLs. A progress bar
counts items (its total is known once every header has been read), a second line shows
the memory in use against the budget (and when producers are paused for memory), and a
final table reports items, throughput, peak memory and failures.

Exit status: 0 when every item was processed, 1 when some failed, 2 for bad arguments.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from ..pipeline.ops import OPS, operation
from ..pipeline.options import ExecutionOptions, ItemOptions, RunOptions
from ..pipeline.runner import ProgressInfo, RunReport, run
from ..pipeline.sinks import ListSink
from ..units import InvalidValueError, format_bytes, parse_size, parse_window


def _window(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        return parse_window(text)
    except InvalidValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _stats_table(sink: ListSink) -> Table:
    """Cohort summary of per-frame stats kept in memory (no -o given)."""
    table = Table(title="stats", show_header=True)
    for col in ("source", "frames", "min", "max", "mean"):
        table.add_column(col, justify="left" if col == "source" else "right")
    per: dict[str, list[dict]] = {}
    for info, rec in sink.items:
        per.setdefault(info.source, []).append(rec)
    for source, recs in list(per.items())[:50]:
        n = sum(r["count"] for r in recs)
        mean = sum(r["mean"] * r["count"] for r in recs) / max(n, 1)
        table.add_row(Path(source).name, str(len(recs)), str(min(r["min"] for r in recs)),
                      str(max(r["max"] for r in recs)), f"{mean:.2f}")
    if len(per) > 50:
        table.add_row(f"... {len(per) - 50} more", "", "", "", "")
    return table


def _report_table(report: RunReport) -> Table:
    table = Table(title="dcmstream process", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    rows = [
        ("items", f"{report.items:,} {report.unit}(s)"),
        ("failed", f"{report.failed:,}"),
        ("skipped (not DICOM images)", f"{report.skipped:,}"),
        ("time", f"{report.elapsed:.1f} s"),
        ("throughput", f"{report.throughput:,.1f} items/s, {report.mb_per_s:,.1f} MB/s decoded"),
        ("peak memory", f"{format_bytes(report.peak_rss)} ({format_bytes(report.peak_rss_above_baseline)} above start)"),
        ("budget", format_bytes(report.budget)),
        ("batch", f"{report.batch_initial} -> {report.batch_final} (min {report.batch_min})"),
        ("memory pauses", f"{report.pauses} ({report.paused_seconds:.1f} s)"),
        ("workers", f"{report.workers} ({report.executor})"),
    ]
    if report.selected_out:
        rows.insert(3, ("outside the region of interest", f"{report.selected_out:,}"))
    if report.output is not None and not isinstance(report.output, int):
        rows.append(("output", str(report.output)))
    for k, v in rows:
        table.add_row(k, v)
    return table


def process(
    inputs: list[str] = typer.Argument(..., help="DICOM files, folders, archive folders or DICOMweb URLs"),
    op: str = typer.Option("stats", "--op", help="operation: " + ", ".join(OPS)),
    budget: str = typer.Option("2GB", "--budget", help="memory budget (2GB, 512MiB, ...)"),
    workers: int | None = typer.Option(None, "--workers", "-w", min=1, help="worker threads (default: CPU count)"),
    scheduler: str | None = typer.Option(None, "--scheduler", help="dask.distributed scheduler address"),
    processes: bool = typer.Option(False, "--processes", help="worker processes instead of threads"),
    output: str | None = typer.Option(None, "--output", "-o",
                                      help="stats: .csv/.json/.jsonl/.npy; histogram: .csv/.json/.npy; "
                                           "mip, thumbnails: a folder; to-zarr: a .zarr store"),
    tiles: bool = typer.Option(False, "--tiles",
                               help="stats, histogram, to-zarr: process in tiles (whole-slide images, large frames)"),
    tile_size: int = typer.Option(1024, "--tile-size", min=16, help="tile side in pixels"),
    overlap: int = typer.Option(0, "--overlap", min=0, help="tile overlap in pixels"),
    level: int = typer.Option(0, "--level", min=0, help="resolution level (1/2**level per side)"),
    window: str | None = typer.Option(None, "--window", help="CENTER,WIDTH for uint8 views"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress display"),
) -> None:
    """Run an operation over DICOM inputs within a memory budget, locally or on a dask cluster."""
    console = Console(stderr=True)
    try:
        the_op = operation(op)
        budget_bytes = parse_size(budget)
    except ValueError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    if op in ("to-zarr",) and output is None:
        console.print("[red]error:[/] to-zarr needs -o OUT.zarr")
        raise typer.Exit(2)
    if tiles and op not in ("stats", "histogram", "to-zarr"):
        console.print("[red]error:[/] --tiles applies to stats, histogram and to-zarr")
        raise typer.Exit(2)
    unit = "tile" if tiles else the_op.unit
    sink = the_op.make_sink(output)
    windowed = bool(window) and unit != "instance" and op == "to-zarr"
    options = RunOptions(
        items=ItemOptions(level=level, values="uint8" if windowed else the_op.values, window=_window(window),
                          tile_size=tile_size, overlap=overlap),
        execution=ExecutionOptions(executor="processes" if processes and scheduler is None else "threads",
                                   scheduler=scheduler),
    )

    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(), console=console, disable=quiet, transient=False,
    )
    items_task = progress.add_task(f"{op}", total=None, rate="")
    mem_task = progress.add_task("memory", total=budget_bytes, rate="", completed=0)

    def update(p: ProgressInfo) -> None:
        rate = f"{p.done / p.elapsed:,.1f} it/s" if p.elapsed > 0 else ""
        desc = f"{op} ({p.planned:,} planned{'' if p.planning_done else ', reading headers'})"
        progress.update(items_task, completed=p.done + p.failed, total=p.total, description=desc, rate=rate)
        state = "[red]paused for memory[/]" if p.paused else f"batch {p.batch}, {p.in_flight} in flight"
        progress.update(mem_task, completed=min(p.rss_above_baseline, budget_bytes),
                        description=f"memory {format_bytes(p.rss_above_baseline)} / {format_bytes(budget_bytes)}",
                        rate=f"{state}, {p.pauses} pause(s)")

    try:
        with progress:
            report = run(inputs, the_op.fn, memory_budget=budget_bytes, unit=unit, sink=sink, workers=workers,
                         progress=None if quiet else update, options=options)
    except (FileNotFoundError, ValueError, TypeError, ImportError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    out = Console()
    if isinstance(sink, ListSink) and op == "stats" and not quiet:
        out.print(_stats_table(sink))
    if op == "histogram" and output is None and not quiet:
        values, counts = sink.table()  # type: ignore[attr-defined]
        if len(values):
            out.print(f"histogram: {len(values):,} distinct values from {int(values[0])} to {int(values[-1])}, "
                      f"{int(counts.sum()):,} pixels; give -o hist.csv to write it")
    console.print(_report_table(report))
    for f in report.failures[:10]:
        console.print(f"[red]failed[/] {f.key} ({f.stage}): {f.error}")
    if report.failed > 10:
        console.print(f"... and {report.failed - 10} more failures")
    raise typer.Exit(1 if report.failed else 0)
