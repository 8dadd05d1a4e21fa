"""The `sgmft` command line: demo, validate, extract, train, evaluate, reproduce, predict, serve."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sgmft import PLACES

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help=__doc__)

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


def parse_labels(value: str | None) -> tuple[str, ...] | None:
    """``a,b,c`` or a path to a file with one label per line."""
    if value is None:
        return None
    path = Path(value)
    names = path.read_text(encoding="utf-8").splitlines() if path.is_file() else value.split(",")
    labels = tuple(name.strip().lower() for name in names if name.strip())
    if len(set(labels)) != len(labels) or len(labels) < 2:
        raise typer.BadParameter(f"need two or more distinct labels, got {labels}")
    return labels


def _load(manifest: Path, image_root: Path | None, labels: str | None, skip_invalid: bool,
          require_labels: bool = True):
    """Load a manifest for a command, reporting problems the way a person can act on."""
    from sgmft.data.manifest import ManifestError, load_manifest

    try:
        loaded = load_manifest(manifest, image_root, parse_labels(labels),
                               require_labels=require_labels, skip_invalid=skip_invalid)
    except (ManifestError, FileNotFoundError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    if loaded.skipped:
        typer.echo(f"skipped {len(loaded.skipped)} invalid row(s):", err=True)
        for problem in loaded.skipped:
            typer.echo(f"  {problem}", err=True)
    return loaded


@app.command()
def demo(out: Annotated[Path, typer.Argument(help="Folder to write the demo set into.")] = Path(
        "demo/data"), posts_per_class: int = 30, seed: int = 0) -> None:
    """Write the bundled demo set (rendered images, Weibo-style texts): a demo, not a benchmark."""
    from sgmft.data.demo import make_demo

    path = make_demo(out, posts_per_class, seed)
    typer.echo(f"wrote {path} ({posts_per_class * len(PLACES)} posts)")


@app.command()
def validate(manifest: Path, image_root: ImageRoot = None, labels: Labels = None,
             unlabelled: Annotated[bool, typer.Option(
                 help="Allow rows without a label (prediction manifests).")] = False) -> None:
    """Check every row of a manifest and report each problem by row; exit 1 when any."""
    loaded = _load(manifest, image_root, labels, skip_invalid=True, require_labels=not unlabelled)
    counts = {label: 0 for label in loaded.labels}
    for post in loaded.posts:
        if post.label is not None:
            counts[post.label] += 1
    typer.echo(f"{manifest}: {len(loaded)} valid post(s), {len(loaded.skipped)} invalid row(s)")
    typer.echo("  " + ", ".join(f"{label} {n}" for label, n in counts.items()))
    if loaded.skipped:
        raise typer.Exit(1)


@app.command()
def extract(
    manifest: Path,
    out: Annotated[Path | None, typer.Option(help="Cache folder (default: beside the data).")] = None,
    encoder: EncoderName = None,
    checkpoint: Checkpoint = None,
    device: str = "cpu",
    batch_size: int = 32,
    chunk_size: int = 1024,
    overwrite: Annotated[bool, typer.Option(help="Replace a cache of another encoder/manifest.")] = False,
    sequences: Annotated[bool, typer.Option(
        help="Also store token states (text tokens, image patches) for model.reading=sequence.")] = False,
    image_root: ImageRoot = None,
    labels: Labels = None,
    skip_invalid: SkipInvalid = False,
) -> None:
    """Encode every post once, in batches, into an on-disk feature cache (resumable)."""
    from sgmft.encoders.cache import CacheMismatchError
    from sgmft.pipeline import ensure_features

    loaded = _load(manifest, image_root, labels, skip_invalid)
    try:
        cache, folder = ensure_features(loaded, encoder, checkpoint, out, device=device,
                                        batch_size=batch_size, chunk_size=chunk_size,
                                        overwrite=overwrite, sequences=sequences)
    except CacheMismatchError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    dims = cache.header["dims"]
    shapes = cache.header.get("token_shapes")
    tokens = (f"; token sequences text {shapes['text'][0]}x{shapes['text'][1]}, "
              f"image {shapes['image'][0]}x{shapes['image'][1]}") if shapes else ""
    typer.echo(f"features of {len(cache)} posts in {folder} "
               f"(text {dims['text']}-d, image {dims['image']}-d, {cache.header['encoder']['name']}"
               f"{tokens})")


ConfigFile = Annotated[str | None, typer.Option(
    "--config", help="JSON config file or preset name (paper, fast).")]
SetOption = Annotated[list[str] | None, typer.Option(
    "--set", help="Override a field: section.key=value (repeatable), e.g. model.dim=128.")]


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
    from sgmft.training.config import resolve_config

    try:
        return resolve_config(config, overrides, variant)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        raise typer.BadParameter(str(exc)) from None


@app.command()
def train(
    data: Annotated[Path, typer.Option(help="Manifest (JSONL or CSV) to train on.")],
    out: Annotated[Path, typer.Option(help="Run folder to write.")],
    config: ConfigFile = None,
    set_: SetOption = None,
    variant: Annotated[str | None, typer.Option(
        help="Model variant: a row of Tables 1-4 (see `sgmft variants`).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue a killed run from its last checkpoint.")] = False,
    encoder: EncoderName = None,
    checkpoint: Checkpoint = None,
    cache: CacheDir = None,
    image_root: ImageRoot = None,
    labels: Labels = None,
    skip_invalid: SkipInvalid = False,
) -> None:
    """Train on the cached features of a manifest (extracting them first if needed)."""
    import json

    from sgmft.data.manifest import ManifestError
    from sgmft.training.run import train_run

    overrides = _data_overrides(data, encoder, checkpoint, image_root, labels, skip_invalid, cache)
    run_config = _resolve(config, overrides + (set_ or []), variant)
    try:
        folder = train_run(run_config, out, resume=resume)
    except (ManifestError, ValueError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    history = json.loads((folder / "run.json").read_text())["history"]
    typer.echo(f"trained {run_config.variant} for {len(history)} epoch(s) into {folder} "
               f"(final train loss {history[-1]['train_loss']:.4f})")


@app.command()
def evaluate(run: Path, figures: bool = True) -> None:
    """Accuracy, macro-F1, per-class scores, confusion matrix and t-SNE on the test split."""
    from sgmft.evaluation.evaluate import evaluate_run

    try:
        metrics = evaluate_run(run, figures=figures)
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{run}: accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f} "
               f"on {metrics['n']} test posts")
    for label, scores in metrics["per_class"].items():
        typer.echo(f"  {label:12s} P {scores['precision']:.3f}  R {scores['recall']:.3f}  "
                   f"F1 {scores['f1']:.3f}  n {scores['support']}")
    typer.echo(f"written to {run / 'eval'}")


@app.command()
def reproduce(
    data: Annotated[Path, typer.Option(help="Manifest to reproduce the tables on.")],
    out: Annotated[Path | None, typer.Option(help="Results folder (default results/<date>).")] = None,
    seeds: int = 3,
    config: Annotated[str, typer.Option("--config", help="Config file or preset.")] = "fast",
    set_: SetOption = None,
    encoder: EncoderName = None,
    checkpoint: Checkpoint = None,
    cache: CacheDir = None,
    image_root: ImageRoot = None,
    labels: Labels = None,
    skip_invalid: SkipInvalid = False,
) -> None:
    """Every row of Tables 1-4 on one split, N seeds, mean ± std, with Figures 5, 7, 8."""
    import datetime as dt

    from sgmft.data.manifest import ManifestError
    from sgmft.evaluation.reproduce import reproduce as run_reproduce

    overrides = _data_overrides(data, encoder, checkpoint, image_root, labels, skip_invalid, cache)
    base = _resolve(config, overrides + (set_ or []))
    folder = out or Path("results") / dt.date.today().isoformat()
    try:
        run_reproduce(base, folder, seeds=seeds)
    except (ManifestError, ValueError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"tables and figures in {folder}")


def _predictor(run: Path):
    from sgmft.serving.predictor import Predictor

    try:
        return Predictor(run)
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _print_prediction(result: dict) -> None:
    typer.echo(f"place: {result['place']}")
    for label, p in sorted(result["probabilities"].items(), key=lambda kv: -kv[1]):
        typer.echo(f"  {label:12s} {p:6.3f}  {'#' * round(40 * p)}")
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
            typer.echo(f"{name} alone: {only['place']} ({only['probabilities'][only['place']]:.3f}; "
                       f"from {only['source']})")
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
    batch_size: int = 64,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON for one post.")] = False,
) -> None:
    """Predict the place of one post (--text/--image) or of a whole manifest (--manifest --out)."""
    import json

    from sgmft.data.images import ImageError, load_image
    from sgmft.serving.predictor import PostInput, PredictionError

    if manifest is not None:
        from sgmft.serving.batch import predict_manifest, write_predictions

        if out is None:
            raise typer.BadParameter("--manifest needs --out FILE (.jsonl or .csv)")
        predictor = _predictor(run)
        try:
            records = predict_manifest(predictor, manifest, image_root, batch_size)
        except FileNotFoundError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        write_predictions(records, out, predictor.labels)
        errors = sum("error" in r for r in records)
        typer.echo(f"predicted {len(records) - errors} post(s), {errors} row error(s) -> {out}")
        return
    if text is None and image is None:
        raise typer.BadParameter("give --text and/or --image, or --manifest")
    try:
        pil = load_image(image) if image is not None else None
    except ImageError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    predictor = _predictor(run)
    try:
        result = predictor.predict([PostInput(text, pil)])[0].to_dict()
    except PredictionError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if json_output:
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        _print_prediction(result)


@app.command()
def profile(
    run: Path,
    manifest: Annotated[Path, typer.Option(help="Manifest with a user column.")],
    out: Annotated[Path, typer.Option(help="Folder for profiles.json, profiles.csv, profiles.png.")] = Path(
        "profiles"),
    image_root: ImageRoot = None,
) -> None:
    """Per user, the distribution of predicted places over their posts (table and PNG)."""
    import csv
    import io

    from sgmft.io import atomic_write_bytes, atomic_write_json
    from sgmft.serving.batch import plot_profiles, predict_manifest, user_profiles

    predictor = _predictor(run)
    records = predict_manifest(predictor, manifest, image_root)
    profiles = user_profiles(records, predictor.labels)
    if not profiles:
        typer.echo("error: no predicted post has a user; the manifest needs a 'user' column", err=True)
        raise typer.Exit(1)
    atomic_write_json(out / "profiles.json", profiles)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["user", "posts", *predictor.labels])
    for user, p in profiles.items():
        writer.writerow([user, p["posts"], *(f"{p['places'][label]:.3f}" for label in predictor.labels)])
    atomic_write_bytes(out / "profiles.csv", buffer.getvalue().encode())
    plot_profiles(profiles, predictor.labels, out / "profiles.png")
    typer.echo(f"{'user':10s} {'posts':>5s} " + " ".join(f"{label[:8]:>8s}" for label in predictor.labels))
    for user, p in profiles.items():
        typer.echo(f"{user[:10]:10s} {p['posts']:5d} "
                   + " ".join(f"{p['places'][label]:8.2f}" for label in predictor.labels))
    typer.echo(f"written to {out}")


@app.command()
def serve(
    run: Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_upload_mb: Annotated[float, typer.Option(help="Largest accepted image upload.")] = 10.0,
) -> None:
    """Serve the run over HTTP (FastAPI + uvicorn): /predict, /predict/batch, /health, /labels,
    /docs, and a web page at /."""
    import uvicorn

    from sgmft.serving.app import create_app

    predictor = _predictor(run)
    uvicorn.run(create_app(predictor=predictor, max_upload_bytes=int(max_upload_mb * 1024 * 1024)),
                host=host, port=port)


@app.command()
def export(run: Path, onnx: Annotated[Path, typer.Option(help="ONNX file to write.")]) -> None:
    """Export the SG-Encoder and classifier as ONNX, checked against PyTorch (onnxruntime)."""
    from sgmft.serving.export import export_onnx

    try:
        errors = export_onnx(run, onnx)
    except (FileNotFoundError, RuntimeError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
