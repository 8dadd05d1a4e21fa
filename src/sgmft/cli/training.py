"""Train and measure: ``sgmft train`` and ``sgmft evaluate``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from sgmft.cli.common import (
    ConfigFile,
    DataOptions,
    Device,
    RunFolder,
    SetOption,
    TrainDevice,
    reported,
    resolve,
    with_data_options,
)
from sgmft.words import plural

app = typer.Typer()


def without_option(arguments: list[str], name: str) -> list[str]:
    """``arguments`` less ``name VALUE`` or ``name=VALUE``."""
    kept, skip = [], False
    for argument in arguments:
        if skip:
            skip = False
        elif argument == name:
            skip = True
        elif not argument.startswith(f"{name}="):
            kept.append(argument)
    return kept


def _value(value) -> str:
    """A recorded choice in short: numbers to 2 decimals, lists in brackets."""
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def print_train_summary(folder: Path) -> None:
    """What a finished run did, from its run.json: the folds, the epochs, the fallback mixture,
    the temperature, skipped rows and warnings."""
    from sgmft.serving.evidence import NAMES, mixture_in_words

    info = json.loads((folder / "run.json").read_text())
    history = info["history"]
    folds = info.get("folds") or {}
    line = f"trained {info['variant']} for {plural(len(history), 'epoch')} into {folder} " \
           f"(final train loss {history[-1]['train_loss']:.4f}"
    if folds.get("k", 0) >= 2:
        line += f"; refitted on all {info['split']['train']} training posts after {folds['k']} folds"
    elif info["best_epoch"] is not None:
        best = history[info["best_epoch"]]
        line += (f"; best validation accuracy {best['val_accuracy']:.4f} at epoch "
                 f"{info['best_epoch'] + 1}, kept")
    typer.echo(line + ")")
    if info.get("validation"):
        v = info["validation"]
        typer.echo(f"validation: {info['split']['val_by']}; out-of-fold accuracy {v['accuracy']:.4f} on "
                   f"{v['posts']} posts (always the most common class: {v['majority_accuracy']:.4f})")
    if info.get("mixture"):
        weights = info["mixture"]["weights"]
        typer.echo("fallback mixture: " + ", ".join(f"{k} {w:.1f}" for k, w in weights.items())
                   + f": {mixture_in_words(weights)}")
        alone = [name for name, w in weights.items() if w >= 0.999 and name != "fused"]
        if alone:
            typer.echo(f"note: every answer comes from {NAMES[alone[0]]} alone: out of fold, the fused "
                       f"model did no better than {NAMES[alone[0]]} on this data", err=True)
    for name, choice in (info.get("decisions") or {}).items():
        if name != "units":
            typer.echo(f"  {name.replace('_', ' ')}: {_value(choice['choice'])} "
                       + ("(earned out of fold)" if choice["earned"] else f"(the default; candidate "
                          f"{_value(choice['candidate'])}: {choice['why']})"))
    if info.get("calibration"):
        c = info["calibration"]
        typer.echo(f"temperature {c['temperature']:.3f}, {c['rule']} (out-of-fold log-loss "
                   f"{c['before']['log_loss']:.3f} -> {c['after']['log_loss']:.3f}, "
                   f"ECE {c['before']['ece']:.3f} -> {c['after']['ece']:.3f})")
    if info["skipped_rows"]["count"]:
        skipped = info["skipped_rows"]["count"]
        typer.echo(f"{plural(skipped, 'invalid row')} {'was' if skipped == 1 else 'were'} skipped (listed in "
                   "run.json)")
    if info["warnings"]:
        typer.echo(f"{plural(len(info['warnings']), 'warning')}, printed above and kept in run.json",
                   err=True)
    typer.echo(f"next: sgmft evaluate {folder}")


@app.command()
@with_data_options
def train(
    data: Annotated[Path, typer.Option(help="Manifest (JSONL or CSV) to train on.")],
    out: Annotated[Path, typer.Option(help="Run folder to write.")],
    config: ConfigFile = None,
    set_: SetOption = None,
    variant: Annotated[str | None, typer.Option(
        help="Model variant: a row of Tables 1-4 (see `sgmft variants`).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue a killed run from its last checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a run already in --out.")] = False,
    device: TrainDevice = None,
    nproc: Annotated[int, typer.Option(help="Train in this many processes (torchrun, DDP: gloo on "
                                            "CPUs, nccl with --device cuda).")] = 1,
    data_options: DataOptions = DataOptions(),
) -> None:
    """Train on the cached features of a manifest (extracting them first if needed).

    The default preset, sgmft, is the recommended model (docs/model.md, "Beyond the paper"); the
    paper's own settings are --config paper. A manifest with a split column is split by it.
    Under torchrun (or with --nproc) it trains with DistributedDataParallel (docs/scale.md).
    """
    from sgmft.training.distributed import launch, launched, train_distributed
    from sgmft.training.run import train_run

    if nproc > 1:
        raise typer.Exit(launch(nproc, without_option(sys.argv[1:], "--nproc")))
    overrides = data_options.overrides(data)
    overrides += [f"train.device={device}"] if device else []
    run_config = resolve(config, overrides + (set_ or []), variant)
    with reported():
        if launched():
            folder = train_distributed(run_config, out, resume=resume, overwrite=overwrite)
            if int(os.environ.get("RANK", "0")):
                return
        else:
            folder = train_run(run_config, out, resume=resume, overwrite=overwrite)
    print_train_summary(folder)


@app.command()
def evaluate(
    run: RunFolder,
    figures: Annotated[bool, typer.Option(
        help="Draw the confusion matrix, reliability diagram, accuracy-coverage curve and t-SNE.")] = True,
    allow_data_change: Annotated[bool, typer.Option(
        help="Evaluate even if the manifest changed since training (its test posts may have "
             "been trained on).")] = False,
    device: Device = "cpu",
    coverage: Annotated[float, typer.Option(
        help="Target coverage of the prediction sets whose empirical coverage is reported.")] = 0.9,
    group_by: Annotated[str | None, typer.Option(
        "--group-by", help="The column of the per-group table (scores of each event, user, ...; default: "
                           "the column the run's validation folds grouped by).")] = None,
    sets_by: Annotated[str | None, typer.Option(
        help="Also group-conditional (Mondrian) prediction sets: a threshold per value of this column "
             "(label: per class), with the coverage of each group.")] = None,
    novel_unsure: Annotated[bool, typer.Option(
        help="Count a post unlike the training posts in both text and image as unsure (not "
             "answered).")] = True,
) -> None:
    """Accuracy, macro-F1, per-class scores, calibration, prediction sets (weighted for a shift too),
    drift from the training posts, answered posts, confusion matrix and t-SNE on the test split."""
    from sgmft.evaluation.evaluate import evaluate_run

    with reported():
        metrics = evaluate_run(run, figures=figures, allow_data_change=allow_data_change, device=device,
                               coverage=coverage, group_by=group_by, sets_by=sets_by,
                               novel_unsure=novel_unsure)
        metrics = _with_text_only(run, metrics, device)
    print_evaluation(run, metrics)


def _with_text_only(run: Path, metrics: dict, device: str) -> dict:
    """The run's labelled posts without an image (left out of training: `sgmft.serving.text_only`)
    scored apart, into ``eval/metrics.json`` too."""
    if not json.loads((run / "run.json").read_text(encoding="utf-8")).get("text_only_posts"):
        return metrics
    from sgmft.io import atomic_write_json
    from sgmft.serving.predictor import Predictor
    from sgmft.serving.text_only import text_only_scores

    metrics["text_only_posts"] = text_only_scores(Predictor(run, device=device))
    atomic_write_json(run / "eval" / "metrics.json", metrics)
    return metrics


def print_evaluation(run: Path, metrics: dict) -> None:
    """An evaluation in words: accuracy with its interval, per class, the parts, calibration
    beside its noise floor, prediction sets, selective prediction, groups and warnings."""
    low, high = metrics["accuracy_interval"]
    over = metrics["macro_f1_labels"]
    support = "" if len(over) == len(metrics["per_class"]) else \
        f" (over the {len(over)} label{'s' if len(over) > 1 else ''} with posts)"
    typer.echo(f"{run}: accuracy {metrics['accuracy']:.4f} (95 % interval {low:.3f}-{high:.3f}), "
               f"macro-F1 {metrics['macro_f1']:.4f}{support} on {metrics['n']} test posts")
    width = max(len(label) for label in metrics["per_class"])
    for label, scores in metrics["per_class"].items():
        typer.echo(f"  {label:{width}s}  P {scores['precision']:.3f}  R {scores['recall']:.3f}  "
                   f"F1 {scores['f1']:.3f}  n {scores['support']}")
    parts = [f"{name.replace('_', ' ')} {metrics[name]['accuracy']:.4f}"
             for name in ("fused_head", "text_only", "image_only")]
    typer.echo("accuracy of the parts: " + ", ".join(parts) + " (text/image only: the unimodal probes); "
               f"always the most common class {metrics['majority_accuracy']:.4f}")
    before = metrics["uncalibrated"]
    typer.echo(f"calibration: log-loss {metrics['log_loss']:.3f}, Brier {metrics['brier']:.3f}, ECE "
               f"{metrics['ece']:.3f}; a perfectly calibrated model with these confidences shows ECE "
               f"{metrics['ece_floor_median']:.3f} typically at this size (median; 95th percentile "
               f"{metrics['ece_floor_p95']:.3f}); without the temperature {metrics['temperature']:.2f}: "
               f"log-loss {before['log_loss']:.3f}, ECE {before['ece']:.3f}")
    sets = metrics["sets"]
    if sets.get("threshold") is not None:
        typer.echo(f"prediction sets for {sets['target']:.0%} coverage: {sets['coverage']:.3f} covered, "
                   f"{sets['mean_size']:.2f} labels on average")
    else:
        typer.echo(f"prediction sets: none ({sets['note']})")
    weighted = sets.get("weighted")
    if weighted:
        typer.echo(f"  weighted for the shift (density ratios of these posts against the calibration posts): "
                   f"{weighted['coverage']:.3f} covered, {weighted['mean_size']:.2f} labels on average"
                   + (f"; {weighted['every_label']:.0%} of posts got every label"
                      if weighted["every_label"] else ""))
    if metrics.get("drift"):
        typer.echo(metrics["drift"]["words"])
    answered = metrics.get("answered")
    if answered and answered["accuracy"] is not None:
        typer.echo(f"answered (not unsure): {answered['share']:.1%} of posts, accuracy "
                   f"{answered['accuracy']:.4f} on "
                   f"them ({answered['accuracy_all']:.4f} on all)")
    text_only = metrics.get("text_only_posts")
    if text_only:
        low, high = text_only["accuracy_interval"]
        typer.echo(f"text-only posts (no image, left out of training, predicted from their text): accuracy "
                   f"{text_only['accuracy']:.4f} (95 % interval {low:.3f}-{high:.3f}), macro-F1 "
                   f"{text_only['macro_f1']:.4f} on {plural(text_only['posts'], 'post')}")
    if metrics.get("sets_by"):
        by = metrics["sets_by"]
        typer.echo(f"sets by {by['by']} (a threshold per group): {by['coverage']:.3f} covered, "
                   f"{by['mean_size']:.2f} labels on average")
        for value, row in by["per_group"].items():
            typer.echo(f"  {value}: {row['coverage']:.3f} covered, {row['mean_size']:.2f} labels, "
                       f"{row['posts']} test and {plural(row['calibration_posts'], 'calibration post')}")
    typer.echo("selective prediction: area under the accuracy-coverage curve "
               f"{metrics['selective']['area']:.3f}")
    if metrics.get("groups"):
        groups = metrics["groups"]
        typer.echo(f"by {groups['column']}:")
        gwidth = max(len(value) for value in groups["table"])
        for value, row in groups["table"].items():
            typer.echo(f"  {value:{gwidth}s}  accuracy {row['accuracy']:.3f}  "
                       f"macro-F1 {row['macro_f1']:.3f}  n {row['n']}")
    if metrics["figures_skipped"]:
        typer.echo(f"note: {metrics['figures_skipped']}")
    for warning in metrics["warnings"]:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"written to {run / 'eval'}")
