"""Entry point of the ``dcmstream`` command (typer).

Every command runs through :class:`_Command`, so all of them behave alike for a user:

* a library warning is one line on stderr (``warning: ...``), not Python's
  ``file:line: UserWarning`` with a source line;
* a :class:`~dcmstream.DcmstreamError` (or an OS error) that a command does not handle
  itself ends it with one line (``error: ...``) and exit status 1, never a traceback;
* ``--help`` is click's plain layout, which rewraps paragraphs to the terminal and uses
  its width for the text (typer's boxed rich layout left ~30 columns of an 80-column
  terminal for the help text and printed ``<bool>`` next to every flag, as if it took a
  value); flags show no placeholder, arguments their name in capitals.
"""

from __future__ import annotations

import warnings
from typing import Any, TextIO

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from ..errors import DcmstreamError
from . import compress, delete, demo, frame, importer, info, lifecycle, process, send, serve, sweep


# Contexts and parameters stay Any: typer builds on its own vendored copy of click
# (typer._click), whose classes are not public API.
def _tidy_params(params: list[Any]) -> list[Any]:
    """Flags get an empty metavar (no ``<bool>``), arguments their name in capitals."""
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
        elif isinstance(param, TyperArgument) and param.metavar is None and param.name:
            param.metavar = param.name.upper()
    return params


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str,
                      lineno: int, file: TextIO | None = None, line: str | None = None) -> None:
    typer.echo(f"warning: {message}", err=True)


class _Command(TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return _tidy_params(super().get_params(ctx))

    def invoke(self, ctx: Any) -> Any:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            try:
                return super().invoke(ctx)
            except (DcmstreamError, OSError) as exc:
                typer.echo(f"error: {exc}", err=True)
                raise typer.Exit(1) from exc


class _Group(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _tidy_params(super().get_params(ctx))


app = typer.Typer(
    name="dcmstream",
    help="Huge DICOM images with bounded memory: read, serve and process frame by frame.",
    no_args_is_help=True,
    add_completion=False,
    cls=_Group,
    rich_markup_mode=None,
)
#: (name, function, one line for the command list: click would cut the docstring at 45
#: characters with "...").
_COMMANDS = (
    ("info", info.info, "What a file holds and how its frames are found."),
    ("frame", frame.frame, "One frame as PNG or .npy (reads only that frame)."),
    ("demo", demo.demo, "Generate a large sample and read one frame of it."),
    ("serve", serve.serve, "Serve an archive over DICOMweb, with the viewer."),
    ("import", importer.import_files, "Copy DICOM files into an archive."),
    ("delete", delete.delete, "Delete a study, series or instance from an archive."),
    ("sweep", sweep.sweep, "Remove leftovers of killed writers; check rows."),
    ("compress", compress.compress, "Transcode files: verified lossless or QA'd lossy."),
    ("process", process.process, "Run an operation over many inputs in a memory budget."),
    ("send", send.send, "Send DICOM files to a DICOM peer (C-STORE)."),
)
for _name, _function, _short in _COMMANDS:
    app.command(_name, cls=_Command, short_help=_short)(_function)
_lifecycle = typer.Typer(help="Storage tiers: move instances by rule, show status.", no_args_is_help=True, cls=_Group,
                        rich_markup_mode=None)
for _sub, _subcommand, _subshort in lifecycle.COMMANDS:
    _lifecycle.command(_sub, cls=_Command, short_help=_subshort)(_subcommand)
app.add_typer(_lifecycle, name="lifecycle", short_help="Storage tiers: move instances by rule, show status.")

def main() -> None:
    app(prog_name="dcmstream")


if __name__ == "__main__":
    main()
