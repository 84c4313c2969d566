"""``dcmstream compress INPUT... -o OUTDIR --to SYNTAX``: verified transcoding for storage."""

from __future__ import annotations

import threading
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from ..compress.batch import compress as compress_files
from ..compress.batch import plan_work
from ..compress.encoders import TARGETS, UnsupportedTarget, parse_target
from ..compress.report import summarise
from ..compress.transcode import TranscodeResult
from ..units import format_bytes


class _RateColumn(ProgressColumn):
    """Frames per second and MB/s of raw pixels."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        mb = task.fields.get("mbytes", 0.0)
        elapsed = task.elapsed or 0.0
        if not speed:
            return Text("-- fr/s", style="progress.data.speed")
        rate = mb / elapsed if elapsed else 0.0
        return Text(f"{speed:,.1f} fr/s {rate:,.0f} MB/s", style="progress.data.speed")


def compress(
    inputs: list[Path] = typer.Argument(..., exists=True, help="DICOM files or folders (recursive)"),
    outdir: Path | None = typer.Option(None, "--output", "-o", help="output folder (mirrors the inputs)"),
    to: str = typer.Option(..., "--to", help="target: " + ", ".join(TARGETS)
                           + " (jpeg-ls-near:N, htj2k-lossy:ratio=R|psnr=P, j2k-lossy:..., jpeg:Q)"),
    report: Path | None = typer.Option(None, "--report", help="write an HTML report here"),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="parallel workers (files and frames)"),
    min_psnr: float | None = typer.Option(None, "--min-psnr", help="lossy: refuse a file with a frame below this PSNR (dB)"),
    max_error: int | None = typer.Option(None, "--max-error", help="lossy: refuse a file with a sample error above this"),
    min_ssim: float | None = typer.Option(None, "--min-ssim", help="lossy: refuse a file with a frame below this SSIM"),
    in_place: bool = typer.Option(False, "--in-place", help="replace inputs by verified lossless results"),
    with_hybrid: bool = typer.Option(False, "--hybrid", help="lossless archive copy + lossy reduced-resolution preview"),
    preview_size: int = typer.Option(512, "--preview-size", min=16, help="hybrid: longest side of the preview"),
    background: bool = typer.Option(False, "--background", help="report background share and what near-lossless background coding would save"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar and no table"),
) -> None:
    """Transcode DICOM files frame by frame; lossless results are verified bit-exact before
    they replace anything, lossy results are checked against QA thresholds.

    Exit status: 0 when every file was written or kept, 1 when a file was refused or failed,
    2 for bad arguments.
    """
    console = Console(stderr=True)
    try:
        target = parse_target(to)
    except UnsupportedTarget as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    if in_place and outdir is not None:
        console.print("[red]error:[/] --in-place writes over the inputs: drop -o")
        raise typer.Exit(2)
    if not in_place and outdir is None:
        console.print("[red]error:[/] give an output folder with -o (or --in-place)")
        raise typer.Exit(2)
    if in_place and target.lossy:
        console.print("[red]error:[/] --in-place only replaces inputs by lossless results")
        raise typer.Exit(2)
    if with_hybrid and target.lossy:
        console.print("[red]error:[/] --hybrid keeps a lossless archive copy: choose a lossless --to")
        raise typer.Exit(2)
    if with_hybrid and in_place:
        console.print("[red]error:[/] --hybrid and --in-place together are not supported")
        raise typer.Exit(2)
    try:
        items = plan_work(inputs, outdir, in_place=in_place, with_preview=with_hybrid)
    except (ValueError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc

    total = sum(max(item.frames, 1) for item in items)
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TaskProgressColumn(), _RateColumn(), TimeElapsedColumn(), TextColumn("ETA"),
        TimeRemainingColumn(), console=console, disable=quiet, transient=False)
    lock = threading.Lock()
    with progress:
        task = progress.add_task(f"{target.label}", total=total, mbytes=0.0)

        def advance(frames: int, nbytes: int) -> None:
            with lock:
                fields = progress.tasks[task].fields
                progress.update(task, advance=frames, mbytes=fields.get("mbytes", 0.0) + nbytes / 1e6)

        def done(result: TranscodeResult) -> None:
            if result.status in ("refused", "failed"):
                progress.console.print(f"[red]{result.status}[/] {result.source}: {result.message}")

        run = compress_files(
            inputs, outdir, target, report=report, jobs=jobs, min_psnr=min_psnr,
            max_error=max_error, min_ssim=min_ssim, in_place=in_place, with_hybrid=with_hybrid,
            preview_size=preview_size, background=background, progress=advance,
            on_result=done, items=items)
        progress.update(task, completed=total)

    results = run.results
    if not quiet:
        table = Table(title=f"dcmstream compress --to {target.label}")
        for column in ("file", "status", "frames", "input", "output", "ratio", "note"):
            table.add_column(column, justify="left" if column in ("file", "status", "note") else "right",
                             no_wrap=True, overflow="ellipsis", max_width=48 if column == "note" else None)
        for r in results[:200]:
            style = {"written": "green", "kept-input": "yellow", "refused": "red", "failed": "red"}.get(r.status, "")
            table.add_row(Path(r.source).name, f"[{style}]{r.status}[/]" if style else r.status,
                          str(r.frames), format_bytes(r.input_bytes), format_bytes(r.output_bytes) if r.output_bytes else "",
                          f"{r.ratio:.2f}" if r.ratio and r.status == "written" else "", r.message)
        if len(results) > 200:
            table.add_row(f"... {len(results) - 200} more", "", "", "", "", "", "")
        console.print(table)
    s = summarise(results)
    console.print(
        f"saved {format_bytes(s['saved_bytes'])} ({s['saved_percent']:.1f} %): {format_bytes(s['input_bytes'])} -> "
        f"{format_bytes(s['output_bytes'])}; written {s['written']}, kept {s['kept']}, refused {s['refused']}, "
        f"skipped {s['skipped']}, failed {s['failed']}")
    if run.report is not None:
        console.print(f"report: {run.report}")
    if s["refused"] or s["failed"]:
        raise typer.Exit(1)
