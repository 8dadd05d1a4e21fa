"""Research: ``sgmft study`` (search configurations) and ``sgmft reproduce`` (the paper's tables)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from sgmft.cli.common import DataOptions, SetOption, TrainDevice, reported, resolve, with_data_options

app = typer.Typer()


@app.command()
@with_data_options
def study(
    data: Annotated[Path, typer.Option(help="Manifest to study on (only its training split is read).")],
    out: Annotated[Path, typer.Option(help="Study folder (study.db, trials/, study.md); resumable.")],
    space: Annotated[str, typer.Option(help="Search space: a YAML/JSON file, or a bundled one by "
                                            "name (sgmft).")] = "sgmft",
    trials: Annotated[int, typer.Option(help="Finished trials to reach (resumed studies count "
                                             "those already done).")] = 60,
    timeout: Annotated[float | None, typer.Option(help="Stop starting trials after this many "
                                                       "seconds.")] = None,
    config: Annotated[str, typer.Option("--config", help="Base config file or preset.")] = "sgmft",
    set_: SetOption = None,
    study_fraction: Annotated[float, typer.Option(help="Share of the training split held out to "
                                                       "score trials.")] = 0.2,
    confirm: Annotated[int, typer.Option(help="Re-score this many best trials with more seeds.")] = 5,
    confirm_seeds: Annotated[int, typer.Option(help="Seeds per re-scored trial.")] = 3,
    objective: Annotated[str, typer.Option(help="What a trial is scored by on the study validation "
                                                "part: accuracy or macro_f1.")] = "accuracy",
    seed: Annotated[int, typer.Option(help="Seed of the sampler (the trials' order).")] = 0,
    data_options: DataOptions = DataOptions(),
) -> None:
    """Search architectures and training settings with Optuna (TPE, median pruning), scored on
    a validation part of the training split; writes study.md with importances and plots."""
    from sgmft.research.space import read_space
    from sgmft.research.study import run_study

    overrides = data_options.overrides(data)
    base = resolve(config, overrides + (set_ or []))
    with reported():
        run_study(base, read_space(space), out, trials, timeout, seed, study_fraction,
                  confirm=confirm, confirm_seeds=confirm_seeds, objective=objective)
    typer.echo(f"study report: {out / 'study.md'}; best configuration: {out / 'best_config.json'}")


@app.command()
@with_data_options
def reproduce(
    data: Annotated[Path, typer.Option(help="Manifest to reproduce the tables on.")],
    out: Annotated[Path | None, typer.Option(help="Results folder (default results/<date>).")] = None,
    seeds: Annotated[int, typer.Option(help="Seeds per row (mean ± std over them).")] = 3,
    config: Annotated[str, typer.Option("--config", help="Config file or preset.")] = "fast",
    set_: SetOption = None,
    variants: Annotated[str | None, typer.Option(
        help="Comma-separated variants to run (default: every table row); tables.md is written "
             "when all are present.")] = None,
    device: TrainDevice = None,
    preset: Annotated[str, typer.Option(
        help="The preset given a row of its own in every table (its own settings), or none.")] = "sgmft",
    data_options: DataOptions = DataOptions(),
) -> None:
    """Every row of Tables 1-4 on one split, N seeds, mean ± std, with Figures 5, 7, 8, the
    recommended preset's row and reference rows (majority class, logistic regression)."""
    from sgmft.research.reproduce import reproduce as run_reproduce

    overrides = data_options.overrides(data)
    overrides += [f"train.device={device}"] if device else []
    base = resolve(config, overrides + (set_ or []))
    folder = out or Path("results") / dt.date.today().isoformat()
    chosen = [v.strip() for v in variants.split(",")] if variants else None
    with reported(KeyError):
        run_reproduce(base, folder, seeds=seeds, variants=chosen, preset=None if preset == "none" else preset)
    typer.echo(f"tables and figures in {folder}")
