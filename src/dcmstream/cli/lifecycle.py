"""``dcmstream lifecycle run|status``: move instances between storage tiers by rule, and show
instances, bytes and estimated monthly cost per tier.

The work is done by :mod:`dcmstream.archive.lifecycle`; :func:`run_command` and
:func:`status_command` take an opened :class:`~dcmstream.archive.Archive` plus rules or
prices, so any way of building the archive (the ``--archive``/``--tier`` options here, a
configuration file) uses the same code. Without a configuration file the archive folder is
the first tier (``hot``) and ``--tier NAME=PATH`` (a folder) or ``--tier NAME=s3://bucket/prefix``
(endpoint from ``AWS_ENDPOINT_URL``, credentials from the ``AWS_*`` variables) adds the others.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from ..archive import Archive, BlobStore
    from ..archive.lifecycle import LifecycleReport, LifecycleRule, TierStatus

__all__ = ["COMMANDS", "run", "status", "run_command", "status_command", "parse_now", "parse_pairs", "open_archive"]


def parse_now(text: str | None) -> float | None:
    """Epoch seconds of an ISO date or date-time (``2027-01-31``, ``2027-01-31T12:00``);
    a time without a zone is UTC."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an ISO date (2027-01-31) or date-time (2027-01-31T12:00:00)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_pairs(values: Sequence[str], what: str) -> dict[str, str]:
    """``NAME=VALUE`` options as a dict, in order."""
    out: dict[str, str] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise typer.BadParameter(f"{what} {value!r}: expected NAME=VALUE")
        out[name] = rest
    return out


def _store(location: str) -> BlobStore:
    from ..archive import FilesystemBlobStore, S3BlobStore

    if location.startswith("s3://"):
        return S3BlobStore.from_url(location, endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)
    return FilesystemBlobStore(location.removeprefix("file://"))


def open_archive(root: Path, tiers: Mapping[str, str], prices: Mapping[str, float] | None = None) -> Archive:
    """The folder archive at ``root`` (its blobs are tier ``hot``) plus the ``tiers`` given by
    location (a folder or ``s3://bucket/prefix``)."""
    from ..archive import Archive, FilesystemBlobStore

    root = root.resolve()
    stores: dict[str, BlobStore] = {"hot": FilesystemBlobStore(root)}
    for name, location in tiers.items():
        if name in stores:
            raise typer.BadParameter(f"tier {name!r} given twice (the archive folder is tier 'hot')")
        stores[name] = _store(location)
    return Archive(root, tiers=stores, cache=False, tier_prices=prices, track_access=False)


def run_command(
    archive: Archive,
    rules: Sequence[LifecycleRule],
    *,
    now: float | None = None,
    dry_run: bool = False,
    limit: int | None = None,
    console: Console | None = None,
) -> LifecycleReport:
    """Apply ``rules`` to ``archive`` once and print what happened (or would happen)."""
    from ..archive.lifecycle import run_lifecycle

    console = console or Console()
    report = run_lifecycle(archive, rules, now=now, dry_run=dry_run, limit=limit)
    mb = report.bytes / 1e6
    if dry_run:
        for move in report.moves:
            console.print(f"{move.sop_uid}: {move.source} -> {move.target} ({move.size / 1e6:.1f} MB)", highlight=False)
        console.print(f"would move {report.planned} instances ({mb:.1f} MB)", highlight=False)
        return report
    if report.recovered:
        console.print(f"finished or cleaned {report.recovered} interrupted moves", highlight=False)
    console.print(
        f"moved {report.moved} instances ({mb:.1f} MB) in {report.seconds:.1f} s"
        f" ({report.mb_per_s:.1f} MB/s, copied, verified and switched); {len(report.failures)} failed",
        highlight=False,
    )
    for sop, message in report.failures:
        console.print(f"failed: {sop}: {message}", highlight=False)
    return report


def status_command(archive: Archive, prices: Mapping[str, float] | None = None, *,
                   console: Console | None = None) -> list[TierStatus]:
    """Print instances, bytes and estimated monthly cost per tier (one catalog query)."""
    from ..archive.lifecycle import tier_status

    console = console or Console()
    rows = tier_status(archive, prices)
    table = Table("tier", "instances", "GB", "est. monthly cost")
    for row in rows:
        cost = "-" if row.est_monthly_cost is None else f"{row.est_monthly_cost:.2f}"
        table.add_row(row.name, str(row.instances), f"{row.bytes / 1e9:.3f}", cost)
    console.print(table)
    return rows


_ARCHIVE = typer.Option(None, "--archive", "-a",
                        help="archive folder (its blobs are tier 'hot'; default ./archive). Not with --config")
_TIERS = typer.Option([], "--tier",
                      help="another tier: NAME=FOLDER or NAME=s3://bucket/prefix (repeatable, in order). Not with --config")
_CONFIG = typer.Option(None, "--config", exists=True, dir_okay=False,
                       help="archive configuration (TOML): catalog, [storage.*] tiers with prices, [[lifecycle]] rules")


def _opened(config: Path | None, archive: Path | None, tier: list[str],
            prices: Mapping[str, float] | None = None) -> tuple[Archive, Sequence[LifecycleRule], dict[str, float]]:
    """(archive, its configured rules, its prices) from ``--config``, or from the folder and ``--tier`` options."""
    if config is not None:
        if archive is not None or tier:
            raise typer.BadParameter("give --config or --archive/--tier, not both")
        from ..config import load_config
        from ..config import open_archive as open_configured

        settings = load_config(config)
        arc = open_configured(settings, cache=False)
        return arc, settings.lifecycle, {**arc.tier_prices, **(prices or {})}
    return open_archive(archive or Path("archive"), parse_pairs(tier, "--tier"), prices), (), dict(prices or {})


def run(
    config: Path | None = _CONFIG,
    rules: Path | None = typer.Option(None, "--rules", exists=True, dir_okay=False,
                                      help="TOML file with [[lifecycle]] tables (from, to, after_days_*); "
                                           "default: the --config file's rules"),
    archive: Path | None = _ARCHIVE,
    tier: list[str] = _TIERS,
    dry_run: bool = typer.Option(False, "--dry-run", help="only list what would move"),
    now: str | None = typer.Option(None, "--now", help="evaluate the rules at this ISO date instead of now"),
    limit: int | None = typer.Option(None, "--limit", min=1, help="move at most this many instances"),
) -> None:
    """Move eligible instances between tiers: copy, verify, switch, delete (crash-safe)."""
    from ..archive.lifecycle import load_rules

    if rules is None and config is None:
        raise typer.BadParameter("give --config (its [[lifecycle]] rules) or --rules")
    arc, configured, _ = _opened(config, archive, tier)
    with arc:
        loaded = load_rules(rules) if rules is not None else configured
        if not loaded:
            raise typer.BadParameter("no [[lifecycle]] rules to apply")
        report = run_command(arc, loaded, now=parse_now(now), dry_run=dry_run, limit=limit)
    if report.failures:
        raise typer.Exit(1)


def status(
    config: Path | None = _CONFIG,
    archive: Path | None = _ARCHIVE,
    tier: list[str] = _TIERS,
    price: list[str] = typer.Option([], "--price", help="NAME=PRICE per GB and month (repeatable; overrides the config's)"),
) -> None:
    """Instances, bytes and estimated monthly cost per storage tier."""
    try:
        prices = {name: float(value) for name, value in parse_pairs(price, "--price").items()}
    except ValueError as exc:
        raise typer.BadParameter(f"--price: {exc}") from None
    arc, _, merged = _opened(config, archive, tier, prices)
    with arc:
        status_command(arc, merged)


#: (name, function, one line for the command list), as cli/main.py's _COMMANDS.
COMMANDS = (
    ("run", run, "Move eligible instances between storage tiers."),
    ("status", status, "Instances, bytes and monthly cost per tier."),
)
