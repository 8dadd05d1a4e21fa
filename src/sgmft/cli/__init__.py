"""sgmft: the semantic location (or any label) of social-media posts from their text and image.

Pipeline: demo -> validate -> extract -> train -> evaluate -> predict / profile / serve / export.
Research: study (search configurations), reproduce (the paper's Tables 1-4), variants, encoders.
Run `sgmft COMMAND --help` for a command's options.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from sgmft.cli import data, info, profiling, research, serving, training
from sgmft.cli.common import configure_logging

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help=__doc__, rich_markup_mode=None)
for group in (data, training, research, serving, profiling, info):   # one module per command group
    app.add_typer(group.app)


def _version(value: bool) -> None:
    if value:
        from sgmft import __version__

        typer.echo(f"sgmft {__version__}")
        raise typer.Exit()


@app.callback()
def _setup(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                  help="Print the version and exit.")] = False) -> None:
    configure_logging()


def main() -> None:
    app(args=data.with_ray_address(sys.argv[1:]), prog_name="sgmft")
