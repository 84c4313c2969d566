"""Entry point of the ``dcmstream`` command (typer)."""

from __future__ import annotations

import typer

from . import compress, demo, frame, importer, info, process, serve

app = typer.Typer(
    name="dcmstream",
    help="Huge DICOM images with bounded memory: read, serve and process frame by frame.",
    no_args_is_help=True,
    add_completion=False,
)
app.command("info")(info.info)
app.command("frame")(frame.frame)
app.command("demo")(demo.demo)
app.command("serve")(serve.serve)
app.command("import")(importer.import_files)
app.command("compress")(compress.compress)
app.command("process")(process.process)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
