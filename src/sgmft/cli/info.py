"""What is available: ``sgmft variants`` and ``sgmft encoders``."""

from __future__ import annotations

import typer

app = typer.Typer()


@app.command()
def variants() -> None:
    """List the model variants (rows of the paper's tables) and their settings."""
    from sgmft.models.variants import VARIANTS

    for name, overrides in VARIANTS.items():
        typer.echo(f"{name:16s} {overrides or '(the paper: SIM + SFM, text-wise FFN)'}")


@app.command()
def encoders() -> None:
    """List the registered encoders."""
    from sgmft.encoders import DEFAULT_ENCODER, available_encoders

    for name in available_encoders():
        typer.echo(f"{name}{'  (default)' if name == DEFAULT_ENCODER else ''}")
