"""sgmft: the semantic location (or any label) of social-media posts from their text and image.

Pipeline: demo -> validate -> extract -> train -> evaluate -> predict / profile / serve / export.
Research: study (search configurations), reproduce (the paper's Tables 1-4), variants, encoders.
Run `sgmft COMMAND --help` for a command's options.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from sgmft import PLACES

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help=__doc__, rich_markup_mode=None)
ImageRoot = Annotated[Path | None, typer.Option(help="Folder image paths are relative to "
                                                     "(default: the manifest's folder).")]
Labels = Annotated[str | None, typer.Option(
    help="Label set: comma-separated names or a file with one per line "
         f"(default: {','.join(PLACES)}).")]
SkipInvalid = Annotated[bool, typer.Option("--skip-invalid",
                                           help="Skip bad rows and count them instead of failing.")]
EncoderName = Annotated[str | None, typer.Option("--encoder",
                                                 help="Encoder name (see `sgmft encoders`).")]
Checkpoint = Annotated[str | None, typer.Option("--checkpoint",
                                                help="chinese-clip: a local folder or hub id.")]
CacheDir = Annotated[Path | None, typer.Option("--cache", help="Feature cache folder "
                                                               "(default: beside the data).")]
ConfigFile = Annotated[str | None, typer.Option(
    "--config", help="JSON config file or preset name (sgmft, paper, fast); default sgmft.")]
SetOption = Annotated[list[str] | None, typer.Option(
    "--set", help="Override a field: section.key=value (repeatable), e.g. model.dim=128.")]
Device = Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")]


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record comes (a test runner's capture too)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging() -> None:
    """The library's messages (``sgmft.*`` loggers) on stderr as ``sgmft: ...``; chatty
    dependencies quiet."""
    logger = logging.getLogger("sgmft")
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("sgmft: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    for noisy in ("jieba", "optuna", "ray", "urllib3", "matplotlib", "PIL", "httpx", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.callback()
def _setup() -> None:
    configure_logging()


@contextmanager
def reported(*errors: type[BaseException]) -> Iterator[None]:
    """Turn the expected failures of a command into ``error: ...`` and exit status 1."""
    from sgmft.data.manifest import ManifestError
    from sgmft.encoders.cache import CacheCorruptError, CacheMismatchError

    try:
        yield
    except (ManifestError, CacheMismatchError, CacheCorruptError, FileNotFoundError, ValueError,
            *errors) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def parse_labels(value: str | None) -> tuple[str, ...] | None:
    """``a,b,c`` or a path to a file with one label per line."""
    if value is None:
        return None
    path = Path(value)
    names = path.read_text(encoding="utf-8").splitlines() if path.is_file() else value.split(",")
    labels = tuple(name.strip().lower() for name in names if name.strip())
    if len(set(labels)) != len(labels) or len(labels) < 2:
        where = f"the file {path}" if path.is_file() else "--labels"
        raise typer.BadParameter(f"{where} must name two or more distinct labels "
                                 f"({len(labels)} given, {len(set(labels))} distinct)")
    return labels


def _load(manifest: Path, image_root: Path | None, labels: str | None, skip_invalid: bool,
          require_labels: bool = True, report: bool = True):
    """Load a manifest for a command; with ``report`` log what was skipped."""
    from sgmft.data.manifest import load_manifest, report_skipped

    with reported():
        loaded = load_manifest(manifest, image_root, parse_labels(labels),
                               require_labels=require_labels, skip_invalid=skip_invalid)
    if report:
        report_skipped(loaded)
    return loaded


@app.command()
def demo(out: Annotated[Path, typer.Argument(help="Folder to write the demo set into.")] = Path(
        "demo/data"), posts_per_class: int = 30, seed: int = 0,
         shift: Annotated[bool, typer.Option(
             help="A set with a shift: test posts from events unseen in training, whose images say "
                  "nothing of the label (docs/model.md, \"Beyond the paper\").")] = False) -> None:
    """Write the bundled demo set (rendered images, Weibo-style texts): a demo, not a benchmark."""
    from sgmft.data.demo import make_demo, make_shift_demo

    path = make_shift_demo(out, seed=seed) if shift else make_demo(out, posts_per_class, seed)
    typer.echo(f"wrote {path} ({len(path.read_text(encoding='utf-8').splitlines())} posts)")


@app.command()
def validate(manifest: Path, image_root: ImageRoot = None, labels: Labels = None,
             unlabelled: Annotated[bool, typer.Option(
                 help="Allow rows without a label (prediction manifests).")] = False) -> None:
    """Check every row of a manifest and report each problem by row; exit 1 when any."""
    loaded = _load(manifest, image_root, labels, skip_invalid=True, require_labels=not unlabelled,
                   report=False)
    for problem in loaded.skipped:
        typer.echo(f"  {problem}")
    counts = {label: 0 for label in loaded.labels}
    for post in loaded.posts:
        if post.label is not None:
            counts[post.label] += 1
    typer.echo(f"{manifest}: {len(loaded)} valid post(s), {len(loaded.skipped)} invalid row(s)")
    typer.echo("  " + ", ".join(f"{label} {n}" for label, n in counts.items()))
    splits = {p.split for p in loaded.posts} - {None}
    if splits:
        typer.echo(f"  split column: {', '.join(sorted(splits))} (train/evaluate follow it)")
    if loaded.skipped:
        raise typer.Exit(1)


@app.command()
def extract(
    manifest: Path,
    out: Annotated[Path | None, typer.Option(help="Cache folder (default: beside the data).")] = None,
    encoder: EncoderName = None,
    checkpoint: Checkpoint = None,
    device: Device = "cpu",
    batch_size: int = 32,
    chunk_size: int = 1024,
    overwrite: Annotated[bool, typer.Option(help="Replace a cache of another encoder/manifest.")] = False,
    sequences: Annotated[bool, typer.Option(
        help="Also store token states (text tokens, image patches) for model.reading=sequence.")] = False,
    precision: Annotated[str, typer.Option(
        help="Image encoder arithmetic: fp32, bf16 (CPU or CUDA) or fp16 (CUDA).")] = "fp32",
    ray: Annotated[str | None, typer.Option(
        "--ray", metavar="[ADDRESS]",
        help="Extract on a Ray cluster: --ray alone starts a local one, --ray auto or "
             "--ray ray://HOST:PORT joins one (sgmft[ray]).")] = None,
    workers: Annotated[int, typer.Option(help="With --ray: encoder actors (one encoder each).")] = 2,
    gpus_per_worker: Annotated[float, typer.Option(help="With --ray: GPUs per encoder actor.")] = 0.0,
    image_root: ImageRoot = None,
    labels: Labels = None,
    skip_invalid: SkipInvalid = False,
) -> None:
    """Encode every post once, in batches, into an on-disk feature cache (resumable)."""
    from sgmft.pipeline import ensure_features

    loaded = _load(manifest, image_root, labels, skip_invalid)
    cluster = None if ray is None else {"address": None if ray == "local" else ray, "workers": workers,
                                        "gpus_per_worker": gpus_per_worker}
    with reported():
        cache, folder = ensure_features(loaded, encoder, checkpoint, out, device=device,
                                        batch_size=batch_size, chunk_size=chunk_size,
                                        overwrite=overwrite, sequences=sequences, precision=precision,
                                        ray=cluster)
    dims = cache.header["dims"]
    shapes = cache.header.get("token_shapes")
    tokens = (f"; token sequences text {shapes['text'][0]}x{shapes['text'][1]}, "
              f"image {shapes['image'][0]}x{shapes['image'][1]}") if shapes else ""
    typer.echo(f"features of {len(cache)} posts in {folder} "
               f"(text {dims['text']}-d, image {dims['image']}-d, {cache.header['encoder']['name']}"
               f"{tokens})")


def _data_overrides(data: Path, encoder: str | None, checkpoint: str | None, image_root: Path | None,
                    labels: str | None, skip_invalid: bool, cache: Path | None) -> list[str]:
    """CLI data options as ``--set`` overrides (JSON values)."""
    import json

    values: dict[str, object] = {"manifest": str(data), "skip_invalid": skip_invalid}
    for key, value in (("encoder", encoder), ("checkpoint", checkpoint), ("cache", cache),
                       ("image_root", image_root)):
        if value is not None:
            values[key] = str(value)
    if labels is not None:
        values["labels"] = list(parse_labels(labels) or [])
    return [f"data.{key}={json.dumps(value)}" for key, value in values.items()]


def _resolve(config: str | None, overrides: list[str], variant: str | None = None):
    from sgmft.training.config import DEFAULT_PRESET, resolve_config

    try:
        return resolve_config(config or DEFAULT_PRESET, overrides, variant)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        raise typer.BadParameter(str(exc)) from None


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


def _train_summary(folder: Path) -> None:
    import json

    info = json.loads((folder / "run.json").read_text())
    history = info["history"]
    line = f"trained {info['variant']} for {len(history)} epoch(s) into {folder} " \
           f"(final train loss {history[-1]['train_loss']:.4f}"
    if info["best_epoch"] is not None:
        best = history[info["best_epoch"]]
        line += (f"; best validation accuracy {best['val_accuracy']:.4f} at epoch "
                 f"{info['best_epoch'] + 1}, kept")
    typer.echo(line + ")")
    if info.get("mixture"):
        m = info["mixture"]
        typer.echo(f"fallback mixture chosen on validation: fused {m['fused']:.1f}, text {m['text']:.1f}, "
                   f"image {m['image']:.1f}")
    if info["skipped_rows"]["count"]:
        typer.echo(f"{info['skipped_rows']['count']} invalid row(s) were skipped (listed in run.json)")
    for warning in info["warnings"]:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"next: sgmft evaluate {folder}")


@app.command()
def train(
    data: Annotated[Path, typer.Option(help="Manifest (JSONL or CSV) to train on.")],
    out: Annotated[Path, typer.Option(help="Run folder to write.")],
    config: ConfigFile = None,
    set_: SetOption = None,
    variant: Annotated[str | None, typer.Option(
        help="Model variant: a row of Tables 1-4 (see `sgmft variants`).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue a killed run from its last checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a run already in --out.")] = False,
    encoder: EncoderName = None,
    checkpoint: Checkpoint = None,
    cache: CacheDir = None,
    image_root: ImageRoot = None,
    labels: Labels = None,
    skip_invalid: SkipInvalid = False,
    device: Annotated[str | None, typer.Option(help="cpu, cuda or cuda:N (train.device).")] = None,
    nproc: Annotated[int, typer.Option(help="Train in this many processes (torchrun, DDP: gloo on "
                                            "CPUs, nccl with --device cuda).")] = 1,
) -> None:
    """Train on the cached features of a manifest (extracting them first if needed).

    The default preset, sgmft, is the recommended model (docs/model.md, "Beyond the paper"); the
    paper's own settings are --config paper. A manifest with a split column is split by it.
    Under torchrun (or with --nproc) it trains with DistributedDataParallel (docs/scale.md).
    """
    import os
    import sys

    from sgmft.training.distributed import launch, launched, train_distributed
    from sgmft.training.run import train_run

    if nproc > 1:
        raise typer.Exit(launch(nproc, without_option(sys.argv[1:], "--nproc")))
    overrides = _data_overrides(data, encoder, checkpoint, image_root, labels, skip_invalid, cache)
    overrides += [f"train.device={device}"] if device else []
    run_config = _resolve(config, overrides + (set_ or []), variant)
    with reported():
        if launched():
            folder = train_distributed(run_config, out, resume=resume, overwrite=overwrite)
            if int(os.environ.get("RANK", "0")):
                return
        else:
            folder = train_run(run_config, out, resume=resume, overwrite=overwrite)
    _train_summary(folder)


@app.command()
def evaluate(
    run: Path,
    figures: bool = True,
    allow_data_change: Annotated[bool, typer.Option(
        help="Evaluate even if the manifest changed since training (its test posts may have "
             "been trained on).")] = False,
    device: Device = "cpu",
) -> None:
    """Accuracy, macro-F1, per-class scores, confusion matrix and t-SNE on the test split."""
    from sgmft.evaluation.evaluate import evaluate_run

    with reported():
        metrics = evaluate_run(run, figures=figures, allow_data_change=allow_data_change, device=device)
    typer.echo(f"{run}: accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f} "
               f"on {metrics['n']} test posts")
    width = max(len(label) for label in metrics["per_class"])
    for label, scores in metrics["per_class"].items():
        typer.echo(f"  {label:{width}s}  P {scores['precision']:.3f}  R {scores['recall']:.3f}  "
                   f"F1 {scores['f1']:.3f}  n {scores['support']}")
    parts = [f"{name.replace('_', ' ')} {metrics[name]['accuracy']:.4f}"
             for name in ("fused_head", "text_only", "image_only")]
    typer.echo("accuracy of the parts: " + ", ".join(parts) + " (text/image only: the unimodal probes)")
    if metrics["figures_skipped"]:
        typer.echo(f"note: {metrics['figures_skipped']}")
    typer.echo(f"written to {run / 'eval'}")


@app.command()
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
    seed: int = 0,
    encoder: EncoderName = None,
    checkpoint: Checkpoint = None,
    cache: CacheDir = None,
    image_root: ImageRoot = None,
    labels: Labels = None,
    skip_invalid: SkipInvalid = False,
) -> None:
    """Search architectures and training settings with Optuna (TPE, median pruning), scored on
    a validation part of the training split; writes study.md with importances and plots."""
    from sgmft.training.space import read_space
    from sgmft.training.study import run_study

    overrides = _data_overrides(data, encoder, checkpoint, image_root, labels, skip_invalid, cache)
    base = _resolve(config, overrides + (set_ or []))
    with reported():
        run_study(base, read_space(space), out, trials, timeout, seed, study_fraction,
                  confirm=confirm, confirm_seeds=confirm_seeds, objective=objective)
    typer.echo(f"study report: {out / 'study.md'}; best configuration: {out / 'best_config.json'}")


@app.command()
def reproduce(
    data: Annotated[Path, typer.Option(help="Manifest to reproduce the tables on.")],
    out: Annotated[Path | None, typer.Option(help="Results folder (default results/<date>).")] = None,
    seeds: int = 3,
    config: Annotated[str, typer.Option("--config", help="Config file or preset.")] = "fast",
    set_: SetOption = None,
    variants: Annotated[str | None, typer.Option(
        help="Comma-separated variants to run (default: every table row); tables.md is written "
             "when all are present.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda or cuda:N (train.device).")] = None,
    preset: Annotated[str, typer.Option(
        help="The preset given a row of its own in every table (its own settings), or none.")] = "sgmft",
    encoder: EncoderName = None,
    checkpoint: Checkpoint = None,
    cache: CacheDir = None,
    image_root: ImageRoot = None,
    labels: Labels = None,
    skip_invalid: SkipInvalid = False,
) -> None:
    """Every row of Tables 1-4 on one split, N seeds, mean ± std, with Figures 5, 7, 8, the
    recommended preset's row and reference rows (majority class, logistic regression)."""
    import datetime as dt

    from sgmft.evaluation.reproduce import reproduce as run_reproduce

    overrides = _data_overrides(data, encoder, checkpoint, image_root, labels, skip_invalid, cache)
    overrides += [f"train.device={device}"] if device else []
    base = _resolve(config, overrides + (set_ or []))
    folder = out or Path("results") / dt.date.today().isoformat()
    chosen = [v.strip() for v in variants.split(",")] if variants else None
    with reported(KeyError):
        run_reproduce(base, folder, seeds=seeds, variants=chosen, preset=None if preset == "none" else preset)
    typer.echo(f"tables and figures in {folder}")


def _predictor(run: Path, device: str = "cpu"):
    from sgmft.serving.predictor import Predictor

    with reported():
        return Predictor(run, device=device)


def _print_prediction(result: dict) -> None:
    typer.echo(f"label: {result['label']}")
    width = max(len(label) for label in result["probabilities"])
    for label, p in sorted(result["probabilities"].items(), key=lambda kv: -kv[1]):
        typer.echo(f"  {label:{width}s} {p:6.3f}  {'#' * round(40 * p)}")
    evidence = result["evidence"]
    gate = evidence.get("similarity_gate")
    if gate:
        typer.echo(f"similarity gate P^m ({gate['gate']}): mean cross-attention weight "
                   f"{gate['cross_attention_weight_mean']:.4f} "
                   f"(max {gate['cross_attention_weight_max']:.4f}), "
                   f"self-attention {gate['self_attention_weight_mean']:.4f}")
    for name in ("text", "image"):
        only = evidence.get(f"{name}_only")
        if only:
            typer.echo(f"{name} alone: {only['label']} ({only['probabilities'][only['label']]:.3f}; "
                       f"{only['source']})")
    if "mixture" in evidence:
        m = evidence["mixture"]
        typer.echo(f"prediction = {m['fused']} x fused + {m['text']} x text + {m['image']} x image "
                   "(the fallback mixture chosen on validation)")
    for warning in result["warnings"]:
        typer.echo(f"note: {warning}")


@app.command()
def predict(
    run: Path,
    text: Annotated[str | None, typer.Option(help="The post's text.")] = None,
    image: Annotated[Path | None, typer.Option(help="The post's image file.")] = None,
    manifest: Annotated[Path | None, typer.Option(help="Predict every row of a manifest.")] = None,
    out: Annotated[Path | None, typer.Option(help="Output of --manifest: .jsonl or .csv.")] = None,
    image_root: ImageRoot = None,
    labels: Labels = None,
    skip_invalid: Annotated[bool, typer.Option(
        "--skip-invalid", help="Leave bad rows out of the output (counted) instead of writing an "
                               "error record for each.")] = False,
    batch_size: int = 64,
    device: Device = "cpu",
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON for one post.")] = False,
) -> None:
    """Predict the label of one post (--text/--image) or of a whole manifest (--manifest --out)."""
    import json

    from sgmft.data.images import ImageError, load_image
    from sgmft.serving.predictor import PostInput, PredictionError

    if manifest is not None:
        from sgmft.serving.batch import predict_manifest, write_predictions

        if out is None:
            raise typer.BadParameter("--manifest needs --out FILE (.jsonl or .csv)")
        predictor = _predictor(run, device)
        with reported():
            result = predict_manifest(predictor, manifest, image_root, batch_size,
                                      list(parse_labels(labels) or []) or None, skip_invalid)
        write_predictions(result.records, out, predictor.labels)
        errors = sum("error" in r for r in result.records)
        skipped = result.skipped["count"] if skip_invalid else 0
        typer.echo(f"predicted {len(result.records) - errors} post(s), {errors} row error(s), "
                   f"{skipped} invalid row(s) left out -> {out}"
                   + (" (features from the feature cache)" if result.from_cache else ""))
        return
    if text is None and image is None:
        raise typer.BadParameter("give --text and/or --image, or --manifest")
    with reported(ImageError):
        pil = load_image(image) if image is not None else None
    predictor = _predictor(run, device)
    with reported(PredictionError):
        result = predictor.predict([PostInput(text, pil)])[0].to_dict()
    if json_output:
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        _print_prediction(result)


def _write_profiles(profiles: dict, labels: list[str], skipped: dict, errors: int, out: Path) -> None:
    import csv
    import io

    from sgmft.io import atomic_write_bytes, atomic_write_json
    from sgmft.serving.batch import plot_profiles

    atomic_write_json(out / "profiles.json", {"users": profiles, "row_errors": errors,
                                              "skipped_rows": skipped})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["user", "posts", *labels])
    for user, p in profiles.items():
        writer.writerow([user, p["posts"], *(f"{p['labels'][label]:.3f}" for label in labels)])
    atomic_write_bytes(out / "profiles.csv", buffer.getvalue().encode())
    plot_profiles(profiles, labels, out / "profiles.png")


@app.command()
def profile(
    run: Path,
    manifest: Annotated[Path, typer.Option(help="Manifest with a user column.")],
    out: Annotated[Path, typer.Option(help="Folder for profiles.json, profiles.csv, profiles.png.")] = Path(
        "profiles"),
    image_root: ImageRoot = None,
    labels: Labels = None,
    skip_invalid: Annotated[bool, typer.Option(
        "--skip-invalid", help="Go on when rows are bad (they are counted and listed); without it "
                               "a bad row is an error.")] = False,
    batch_size: int = 64,
    device: Device = "cpu",
) -> None:
    """Per user, the distribution of predicted labels over their posts (table, CSV and PNG)."""
    from sgmft.serving.batch import predict_manifest, user_profiles

    predictor = _predictor(run, device)
    with reported():
        result = predict_manifest(predictor, manifest, image_root, batch_size,
                                  list(parse_labels(labels) or []) or None, skip_invalid=True)
    errors = [r for r in result.records if "error" in r]
    if (errors or result.skipped["count"]) and not skip_invalid:
        for problem in ([f"row {r['row']}: {r['error']}" for r in errors] + result.skipped["rows"])[:20]:
            typer.echo(f"  {problem}", err=True)
        typer.echo(f"error: {len(errors) + result.skipped['count']} row(s) of {manifest} cannot be "
                   "predicted; fix them, or pass --skip-invalid to profile the rest", err=True)
        raise typer.Exit(1)
    profiles = user_profiles(result.records, predictor.labels)
    if not profiles:
        typer.echo("error: no predicted post has a user; the manifest needs a 'user' column", err=True)
        raise typer.Exit(1)
    _write_profiles(profiles, predictor.labels, result.skipped, len(errors), out)
    width = max(8, *(len(label) for label in predictor.labels))
    typer.echo(f"{'user':12s} {'posts':>5s} " + " ".join(f"{label:>{width}s}" for label in predictor.labels))
    for user, p in profiles.items():
        typer.echo(f"{user[:12]:12s} {p['posts']:5d} "
                   + " ".join(f"{p['labels'][label]:{width}.2f}" for label in predictor.labels))
    if errors or result.skipped["count"]:
        typer.echo(f"left out: {result.skipped['count']} invalid row(s), {len(errors)} row(s) that "
                   "failed at prediction (recorded in profiles.json)")
    typer.echo(f"written to {out}")


@app.command()
def serve(
    run: Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_upload_mb: Annotated[float, typer.Option(help="Largest accepted image upload.")] = 10.0,
    device: Device = "cpu",
) -> None:
    """Serve the run over HTTP (FastAPI + uvicorn): /predict, /predict/batch, /health, /labels,
    /docs, and a web page at /."""
    import uvicorn

    from sgmft.serving.app import create_app

    predictor = _predictor(run, device)
    uvicorn.run(create_app(predictor=predictor, max_upload_bytes=int(max_upload_mb * 1024 * 1024)),
                host=host, port=port)


@app.command()
def export(run: Path, onnx: Annotated[Path, typer.Option(help="ONNX file to write.")],
           device: Device = "cpu") -> None:
    """Export the SG-Encoder, classifier and probes as ONNX, checked against PyTorch."""
    from sgmft.serving.export import export_onnx

    with reported(RuntimeError):
        errors = export_onnx(run, onnx, device=device)
    typer.echo(f"wrote {onnx}; largest |ONNX - PyTorch|: "
               + ", ".join(f"{k} {v:.2e}" for k, v in errors.items()))


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


RAY_ADDRESS = re.compile(r"^(auto|local|ray://\S+|[\w.\-]*:\d+)$")


def with_ray_address(arguments: list[str]) -> list[str]:
    """``--ray`` takes an optional address, which typer cannot declare: a bare ``--ray``
    (followed by nothing, by an option, or by anything that is not a Ray address such as the
    manifest) becomes ``--ray local``."""
    out = []
    for i, argument in enumerate(arguments):
        out.append(argument)
        following = arguments[i + 1] if i + 1 < len(arguments) else None
        if argument == "--ray" and (following is None or not RAY_ADDRESS.match(following)):
            out.append("local")
    return out


def main() -> None:
    app(args=with_ray_address(sys.argv[1:]), prog_name="sgmft")


if __name__ == "__main__":
    main()
