"""Command-line options that several commands share, declared once."""

from __future__ import annotations

import typer

__all__ = ["COMPRESS_POLICY_OPTION"]

#: ``--compress-policy`` of ``serve`` and ``import``: the archive's compression rules.
COMPRESS_POLICY_OPTION = typer.Option(
    None,
    "--compress-policy",
    help="JSON/TOML rules (modality / transfer syntax / size -> lossless target) applied after ingest",
    exists=True,
    dir_okay=False,
)
