"""``sgmft profile``: the estimated share of each label among the posts of every user (or any
column), overall and by hour, weekday or month, with 95 % intervals."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sgmft.cli.common import (
    NOTHING_DONE,
    AllowOutsideRoot,
    BatchSize,
    Device,
    ImageRoot,
    RunFolder,
    RunLabels,
    parse_labels,
    reported,
    rows_exit,
)
from sgmft.cli.serving import CacheDirs, MinConfidence, MinGain, NovelUnsure, _predictor
from sgmft.quantify.estimators import DEFAULT_METHOD, METHODS, choose_method
from sgmft.words import noun, plural

app = typer.Typer()


def _choice(value: str | None, allowed, name: str) -> str | None:
    if value is not None and value not in allowed:
        raise typer.BadParameter(f"{value!r} (expected one of: {', '.join(allowed)})", param_hint=name)
    return value


@app.command()
def profile(
    run: RunFolder,
    manifest: Annotated[Path, typer.Option(help="Manifest of the posts to profile.")],
    out: Annotated[
        Path, typer.Option(help="Folder for profiles.parquet, profiles.json, profiles.csv and the figures.")
    ] = Path("profiles"),
    by: Annotated[
        str,
        typer.Option(
            help="The column whose values are the groups: user, group, or any "
            "column of the manifest (event, city)."
        ),
    ] = "user",
    method: Annotated[
        str,
        typer.Option(
            help=f"How shares are estimated: {', '.join(METHODS)}, or auto (pacc when the posts are like the "
            "training posts and the run has held-out error rates, else pcc). cc counts top labels."
        ),
    ] = DEFAULT_METHOD,
    time: Annotated[
        str | None,
        typer.Option(
            "--time", help="The column of each post's time (ISO 8601 or epoch seconds), for --every."
        ),
    ] = None,
    every: Annotated[
        str | None, typer.Option(help="Also profile by time bucket: hour, weekday or month (needs --time).")
    ] = None,
    min_posts: Annotated[
        int, typer.Option(min=1, help="Groups with fewer posts are listed apart, not ranked.")
    ] = 5,
    show: Annotated[
        str | None,
        typer.Option(
            help="The group drawn beside the population in the time heatmap (default: the busiest)."
        ),
    ] = None,
    image_root: ImageRoot = None,
    allow_outside_root: AllowOutsideRoot = False,
    labels: RunLabels = None,
    skip_invalid: Annotated[
        bool,
        typer.Option(
            "--skip-invalid",
            help="Leave bad rows out of profiles.json (counted) instead of listing each "
            "with its error; either way the other rows are profiled.",
        ),
    ] = False,
    batch_size: BatchSize = 64,
    device: Device = "cpu",
    min_confidence: MinConfidence = None,
    min_gain: MinGain = 0.05,
    novel_unsure: NovelUnsure = True,
    cache: CacheDirs = None,
    shown: Annotated[int, typer.Option(help="Groups printed (the busiest); all are in the files.")] = 20,
) -> None:
    """Estimated label shares per group (and per time bucket), each with a 95 % interval: the posts
    are predicted into OUT/predictions.parquet, then estimated out of core into
    OUT/profiles.parquet, profiles.json, profiles.csv, profiles.png (and profiles-time.png)."""
    from sgmft.decision.drift import shifted_modalities
    from sgmft.quantify.shift import margin
    from sgmft.serving.batch import predict_manifest
    from sgmft.serving.profile_report import write_report
    from sgmft.serving.profiles import ERRORS_FILE, ProfileSpec, remember_profile, row_errors
    from sgmft.serving.profiles import profile as estimate_profiles

    _choice(method, (*METHODS, "auto"), "--method")
    _choice(every, ("hour", "weekday", "month"), "--every")
    if every and not time:
        raise typer.BadParameter(
            "--every needs --time COLUMN, the column of each post's time", param_hint="--every"
        )
    with reported():
        _check_columns(manifest, out, by, time)
    predictor = _predictor(run, device, min_gain, novel_unsure)
    rates = predictor.run.rates()
    held_out = 0 if rates is None else len(rates.labels)
    if (method == "emq" and rates is None) or (method in ("acc", "pacc") and not held_out):
        typer.echo(
            f"error: --method {method} needs the model's error rates on posts held out from training, "
            "and this run has none (no validation folds and no calibration part, or trained by an older "
            "sgmft): use --method pcc, or train again",
            err=True,
        )
        raise typer.Exit(1)
    predictions = out / "predictions.parquet"
    with reported():
        out.mkdir(parents=True, exist_ok=True)
        result = predict_manifest(
            predictor,
            manifest,
            predictions,
            image_root,
            batch_size,
            list(parse_labels(labels) or []) or None,
            skip_invalid,
            min_confidence=min_confidence,
            caches=tuple(cache or ()),
            by=by,
            time=time,
            outside_root=allow_outside_root,
        )
        if result.predicted == 0:
            typer.echo(f"error: no post of {manifest} could be predicted, so there is nothing to profile "
                       f"(the rows' errors are in {predictions})", err=True)
            raise typer.Exit(NOTHING_DONE)
        chosen = {"asked": method}
        shifted = bool(shifted_modalities(result.drift))
        if method == "auto":
            method, chosen["why"] = choose_method(held_out, shifted)
        widened = margin(rates, method, shifted)
        spec = ProfileSpec(by=by, every=every, method=method, min_posts=min_posts, margin=widened.value)
        path = estimate_profiles(predictions, list(predictor.labels), spec, rates, out)
        errors, listed = row_errors(predictions, out)
        report = write_report(
            path,
            list(predictor.labels),
            spec,
            out,
            {
                "rates": _rates_note(rates, result.drift),
                "method_choice": chosen,
                "intervals": widened.record(),
                "row_errors": errors,
                "errors": listed,
                "errors_file": ERRORS_FILE if errors else None,
                "skipped_rows": {"count": result.left_out, "kinds": result.kinds},
                "drift": result.drift,
            },
            show,
        )
        remember_profile(predictor.run.folder, out)
    if not report["groups"] and not report["small_groups"]["count"]:
        typer.echo(f"error: no predicted post has a value in the --by column {by!r}: the manifest needs that "
                   "column (the population's shares are in profiles.json)", err=True)
        raise typer.Exit(1)
    _print(report, shown, out, by)
    if result.drift and "words" in result.drift:
        typer.echo(result.drift["words"])
    if report["rates"].get("elsewhere"):
        typer.echo(report["rates"]["elsewhere"])
    if widened.value > 0:
        typer.echo(f"intervals: {widened.how}")
    if errors or result.left_out:
        typer.echo(
            f"left out: {plural(errors + result.left_out, 'row')} that could not be predicted "
            f"({'counted' if skip_invalid else 'listed'} in profiles.json)"
        )
    typer.echo(f"written to {out}")
    rows_exit(result.predicted, errors + result.left_out, skip_invalid)


def _check_columns(manifest: Path, out: Path, by: str, time: str | None) -> None:
    """Before any prediction: the manifest is a file, ``out`` is not one, and the ``--by`` and
    ``--time`` columns are there (in the first rows)."""
    from sgmft.data.fields import check_manifest_file
    from sgmft.data.readers import columns_seen

    check_manifest_file(manifest)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; profile writes a folder of files (profiles.json, ...)")
    seen, rows = columns_seen(manifest)
    for option, column in (("--by", by), ("--time", time)):
        if column is not None and column not in seen:
            raise ValueError(f"{option} {column}: the manifest has no column {column!r} in its first "
                             f"{plural(rows, 'row')} (its columns: {', '.join(sorted(seen))})")


def _rates_note(rates, drift: dict | None) -> dict:
    """Where the adjusted methods' error rates come from, and whether they speak for these posts."""
    from sgmft.decision.drift import shifted_modalities

    note = {"held_out_posts": 0 if rates is None else len(rates.labels)}
    shifted = shifted_modalities(drift)
    if shifted:
        note["elsewhere"] = (
            f"these posts are unlike the training posts in {' and '.join(shifted)} (see drift): "
            "every share here rests on "
            "error rates measured on the training data's held-out posts, which may not hold "
            "for them"
        )
    return note


def _print(report: dict, shown: int, out: Path, by: str) -> None:
    population = report["population"]
    labels = list(population["shares"])
    width = max(8, *(len(label) for label in labels))
    typer.echo(
        f"estimated shares ({report['method']}), 95 % intervals; {population['posts']} posts, "
        f"{population['unsure']} unsure"
    )
    typer.echo(f"{'':14s}" + " ".join(f"{label:>{width}s}" for label in labels))
    typer.echo(
        f"{'all posts':14s}" + " ".join(f"{population['shares'][label][0]:{width}.2f}" for label in labels)
    )
    typer.echo(
        f"{'  interval':14s}"
        + " ".join(
            f"{f'{s[1]:.2f}-{s[2]:.2f}':>{width}s}" for s in (population["shares"][label] for label in labels)
        )
    )
    for name, group in list(report["groups"].items())[:shown]:
        typer.echo(
            f"{name[:9]:9s} {group['posts']:4d}"
            + " ".join(f"{group['shares'][label][0]:{width}.2f}" for label in labels)
        )
    more = report["ranked_groups"] - min(shown, len(report["groups"]))
    if more > 0:
        typer.echo(f"... and {more} more {by} {noun(more, 'group')} in {out / 'profiles.parquet'}")
    small = report["small_groups"]
    if small["count"]:
        typer.echo(
            f"{small['count']} {by} {noun(small['count'], 'group')} with fewer than {report['min_posts']} "
            "posts: listed apart, not ranked (their intervals are wide)"
        )
