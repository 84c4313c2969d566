"""``dcmstream compress INPUT... -o OUTDIR --to SYNTAX``: verified transcoding for storage."""

from __future__ import annotations

import threading
from pathlib import Path

import typer
from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
)
from rich.table import Table
from rich.text import Text

from ..compress.batch import compress as compress_files
from ..compress.batch import plan_work
from ..compress.encoders import TARGETS, UnsupportedTarget, parse_target
from ..compress.options import CompressOptions, OutputOptions, QualityOptions
from ..compress.report import quality_line, speed_line, storage_line, summarise
from ..compress.results import TranscodeResult
from ..units import format_bytes


class _RateColumn(ProgressColumn):
    """Frames per second and MB/s of raw pixels, both averaged over the elapsed time, so
    they agree with the counts and the clock beside them (rich's own speed is a moving
    estimate that lags behind files finishing in worker processes)."""

    def render(self, task: Task) -> Text:
        elapsed = task.finished_time if task.finished else task.elapsed
        if not elapsed or not task.completed:
            return Text("-- fr/s", style="progress.data.speed", no_wrap=True)
        mb = task.fields.get("mbytes", 0.0)
        return Text(f"{task.completed / elapsed:,.1f} fr/s {mb / elapsed:,.0f} MB/s",
                    style="progress.data.speed", no_wrap=True)


class _TimeColumn(ProgressColumn):
    """The time left while running ("eta 0:00:30"), the time taken once done."""

    def render(self, task: Task) -> Text:
        if task.finished:
            return Text(_clock(task.finished_time or 0.0), style="progress.elapsed", no_wrap=True)
        elapsed = task.elapsed or 0.0
        if not task.completed or not task.total or not elapsed:
            return Text("eta -:--:--", style="progress.remaining", no_wrap=True)
        left = elapsed * (task.total - task.completed) / task.completed
        return Text(f"eta {_clock(left)}", style="progress.remaining", no_wrap=True)


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"




def _results_table(results: list[TranscodeResult], label: str, lossy: bool) -> Table:
    """One row per file (the first 200). Numbers never wrap and file names fold, so the
    table fits 80 columns without cutting anything into "..."; why a file was kept,
    refused or failed is printed below the table (:func:`_notes`), at full width."""
    table = Table(title=f"dcmstream compress --to {label}", box=box.SIMPLE_HEAD,
                  show_edge=False, pad_edge=False, title_justify="left")
    table.add_column("file", overflow="fold")
    table.add_column("status", no_wrap=True)
    columns = ["frames", "input", "output", "ratio"] + (["min PSNR"] if lossy else [])
    for name in columns:
        table.add_column(name, justify="right", no_wrap=True)
    for r in results[:200]:
        style = {"written": "green", "kept-input": "yellow", "refused": "red", "failed": "red"}.get(r.status, "")
        cells = [str(r.frames), format_bytes(r.input_bytes), format_bytes(r.output_bytes) if r.output_bytes else "",
                 f"{r.ratio:.2f}" if r.ratio and r.status == "written" else ""]
        if lossy:
            cells.append(f"{min(r.psnr):.2f} dB" if r.psnr else "")
        table.add_row(Text(Path(r.source).name), Text(r.status, style=style), *cells)
    if len(results) > 200:
        table.add_row(f"... {len(results) - 200} more", *[""] * (len(columns) + 1))
    return table


def _notes(results: list[TranscodeResult]) -> list[str]:
    """Why files were not written as asked, or what else happened to them (one line each)."""
    return [f"{Path(r.source).name}: {r.status}: {r.message}" for r in results
            if r.message and (r.status != "written" or r.retried_frames)]


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
    background: bool = typer.Option(False, "--background",
                                    help="report background share and what near-lossless background coding would save"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="print nothing but errors (refused or failed files)"),
) -> None:
    """Transcode DICOM files frame by frame; lossless results are verified bit-exact before
    they replace anything, lossy results are checked against QA thresholds.

    Exit status: 0 when every file was written or kept, 1 when a file was refused or
    failed, 2 for bad arguments.

    A PSNR goal (htj2k-lossy:psnr=50) is met by every frame: each is coded at the cheapest
    setting that reaches it, checked on the frame. "PSNR" is over the stored range, "window
    PSNR" on the image as displayed through its window (lower for narrow windows).
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
        TextColumn("[bold]{task.description}"), BarColumn(bar_width=None), MofNCompleteColumn(),
        _RateColumn(), _TimeColumn(), console=console, disable=quiet, transient=False)
    lock = threading.Lock()
    with progress:
        task = progress.add_task(f"{target.label}", total=total, mbytes=0.0)

        def advance(frames: int, nbytes: int) -> None:
            with lock:
                fields = progress.tasks[task].fields
                progress.update(task, advance=frames, mbytes=fields.get("mbytes", 0.0) + nbytes / 1e6)

        def done(result: TranscodeResult) -> None:
            if result.status in ("refused", "failed"):
                progress.console.print(f"[red]{result.status}[/] {result.source}: {result.message}",
                                       highlight=False)

        options = CompressOptions(
            quality=QualityOptions(min_psnr=min_psnr, max_error=max_error, min_ssim=min_ssim),
            output=OutputOptions(in_place=in_place), hybrid=with_hybrid,
            preview_size=preview_size, background=background)
        run = compress_files(inputs, outdir, target, jobs=jobs, report=report, progress=advance,
                             on_result=done, items=items, options=options)
        progress.update(task, completed=total)

    results = run.results
    s = summarise(results, run.wall_seconds)
    if not quiet:
        console.print(_results_table(results, target.label, target.lossy))
        for note in _notes(results)[:50]:
            console.print(Text(note))
        console.print(
            f"{storage_line(s)}; written {s['written']}, kept {s['kept']}, refused {s['refused']}, "
            f"skipped {s['skipped']}, failed {s['failed']}", highlight=False)
        speed = speed_line(s, jobs)
        if speed:
            console.print(speed, highlight=False)
        quality = quality_line(results)
        if quality:
            console.print(quality, highlight=False)
        if run.report is not None:
            console.print(f"report: {run.report}", highlight=False)
    if s["refused"] or s["failed"]:
        raise typer.Exit(1)
