"""``dcmstream sweep``: remove what killed writers left in an archive, and check its rows.

Staging files nobody holds, blobs no catalog row points at, blobs a killed delete still
owes (:mod:`dcmstream.archive.sweep`); safe while servers ingest into the same archive
(``dcmstream serve`` runs the same sweep at start and every ``sweep_interval_seconds``).
Also lists catalog rows whose blob is missing: a report only, never deleted (exit status
1 when there are any). The archive is a folder (``ARCHIVE``) or a ``--config`` file, as
for ``dcmstream delete``.
"""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["sweep"]

#: Rows with a missing blob named in the output at most (the count is always given).
_SHOW = 50


def sweep(
    archive: Path | None = typer.Argument(None, help="archive folder (not with --config)", show_default=False),
    config: Path | None = typer.Option(None, "--config", exists=True, dir_okay=False,
                                       help="archive configuration (TOML): catalog and [storage.*] tiers"),
    older_than: float | None = typer.Option(
        None, "--older-than", min=0, help="seconds after which what no lock protects counts as left over (staging "
        "files of writers that do not lock, unreferenced blobs in object storage); default: the archive's "
        "staging_max_age_seconds (3600). Files and blobs of killed writers on local storage go at any age"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list what would be removed; remove nothing"),
) -> None:
    """Remove leftovers of killed writers; report catalog rows whose blob is missing."""
    from ..archive import Archive
    from ..archive.sweep import sweep as run_sweep

    if config is not None:
        if archive is not None:
            raise typer.BadParameter("give ARCHIVE or --config, not both")
        from ..config import load_config, open_archive

        arc = open_archive(load_config(config), cache=False, sweep_on_open=False)
    else:
        if archive is None:
            raise typer.BadParameter("give the ARCHIVE folder or --config")
        if not Archive.is_archive(archive):
            raise typer.BadParameter(f"{archive} is not an archive folder")
        arc = Archive(archive, cache=False, track_access=False, sweep_on_open=False)
    with arc:
        result = run_sweep(arc, older_than=older_than, dry_run=dry_run, check_rows=True)
    verb = "would remove" if dry_run else "removed"
    for path in result.staging:
        typer.echo(f"{verb} staging file {path}")
    for key in result.orphans:
        typer.echo(f"{verb} orphan blob {key}")
    typer.echo(result.summary())
    if result.missing:
        typer.echo(f"{len(result.missing)} catalog row(s) whose blob is missing (not deleted: restore the blobs or "
                   "delete the instances with 'dcmstream delete'):")
        for sop in result.missing[:_SHOW]:
            typer.echo(f"  {sop}")
        if len(result.missing) > _SHOW:
            typer.echo(f"  ... and {len(result.missing) - _SHOW} more")
        raise typer.Exit(1)
