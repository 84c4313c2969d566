"""``dcmstream delete``: remove a study, a series or an instance from an archive.

Catalog rows and blobs on every tier go (crash-safe: :mod:`dcmstream.archive.deletion`);
a delete killed half-way is finished by the next opening of the archive. The archive is
a folder (``ARCHIVE``, its blobs are tier ``hot``) or a ``--config`` file, as for
``dcmstream lifecycle``. Asks before deleting unless ``--yes``.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

__all__ = ["delete"]


def delete(
    archive: Path | None = typer.Argument(None, help="archive folder (not with --config)", show_default=False),
    config: Path | None = typer.Option(None, "--config", exists=True, dir_okay=False,
                                       help="archive configuration (TOML): catalog and [storage.*] tiers"),
    study: str = typer.Option(..., "--study", help="StudyInstanceUID"),
    series: str | None = typer.Option(None, "--series", help="SeriesInstanceUID (only that series)"),
    instance: str | None = typer.Option(None, "--instance", help="SOPInstanceUID (only that instance)"),
    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask for confirmation"),
) -> None:
    """Delete a study, series or instance: catalog rows and blobs on every tier."""
    from ..archive.uids import validate_uid
    from .lifecycle import open_archive

    for value, what in ((study, "--study"), (series, "--series"), (instance, "--instance")):
        if value is not None:
            validate_uid(value, what)
    if config is not None:
        if archive is not None:
            raise typer.BadParameter("give ARCHIVE or --config, not both")
        from ..config import load_config
        from ..config import open_archive as open_configured

        arc = open_configured(load_config(config), cache=False)
    else:
        if archive is None:
            raise typer.BadParameter("give the ARCHIVE folder or --config")
        if not archive.is_dir():
            raise typer.BadParameter(f"{archive} is not an archive folder")
        arc = open_archive(archive, {})
    console = Console()
    scope = " ".join(f"{name} {uid}" for name, uid in (("study", study), ("series", series), ("instance", instance)) if uid)
    with arc:
        if not yes:
            n = len([r for r in arc.catalog.instances(study, series) if instance is None or r.sop_uid == instance])
            if n == 0:
                console.print(f"nothing to delete: {scope} is not in the archive", highlight=False)
                raise typer.Exit(1)
            typer.confirm(f"delete {n} instance(s) of {scope}?", abort=True)
        result = arc.delete(study, series, instance)
    if not result.found:
        console.print(f"nothing to delete: {scope} is not in the archive", highlight=False)
        raise typer.Exit(1)
    counts = result.as_dict()["deleted"]
    console.print(f"deleted {counts['instances']} instance(s) in {counts['series']} series ({counts['bytes'] / 1e6:.1f} MB) "
                  f"of {scope}", highlight=False)
    if result.blobs_pending:
        console.print(f"{result.blobs_pending} blob(s) not deleted yet: the next opening of the archive retries",
                      highlight=False)
